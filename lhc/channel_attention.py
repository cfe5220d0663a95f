"""Channel-attention modules compared with LHC: SE, CBAM and ECA as drop-in peers (issue #18).

Each layer reads a feature map ``x`` of shape ``(B, H, W, C)`` and returns a map of the same
shape, so it can sit wherever an LHC module sits (:func:`lhc.models.insert_attention`):

- :class:`SqueezeExcitation`: Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018.
- :class:`CBAM`: Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018.
- :class:`ECA`: Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional
  Neural Networks", CVPR 2020 (kernel size from :func:`eca_kernel_size`).

One protocol for all three. Each computes the published refinement ``M(x)`` and returns

    output = x + a * (M(x) - x),     a = the learnable scalar weight ``residual_scale``,

written as ``(1 - a) * x + a * M(x)`` (or, where ``M(x) = w * x``, as
``x * ((1 - a) + a * w)``): the same function, but exact in floating point at both ends,
``a = 0`` gives ``x`` and ``a = 1`` gives ``M(x)`` bit for bit. ``identity_start=True``
(the default) initialises ``a`` to 0, so a module inserted into a trained backbone leaves its
predictions unchanged and stage 4 starts at the backbone's accuracy; ``identity_start=False``
initialises ``a`` to 1, and the layer is then exactly the published module.

How this compares with LHC's own identity start (:class:`lhc.layers.LHC`): LHC is residual
by construction, ``x + y``, and needs no extra weight; it starts as the identity when its
value kernel is initialised to zeros (``value_initializer="zeros"``: V = 0, so y = 0), an
option, not its default. There the value kernel gets a gradient at the first step and the
query, key and scale weights from the second step on. Here the published modules are not
residual (``M(x) = w * x`` replaces ``x``), so the identity start needs the scalar ``a``: at
the first step only ``a`` gets a gradient (``dL/da = <dL/doutput, M(x) - x>``, non-zero
unless ``M(x) = x``), and the module's own weights get theirs from the second step on, once
``a`` is non-zero, the same one-step delay. LHC-NetC's gate ``x + (1 + tanh(w)) * y`` is
LHC's counterpart of ``a``; it scales the attention term instead of interpolating between
``x`` and ``M(x)``, and starts at 1 or below rather than 0.

Placement note: SE-, CBAM- and ECA-ResNets put the module inside each residual branch,
before the addition; here it refines a block's output, where LHC-Net puts LHC, so that the
comparison changes the module and nothing else.

Parameter counts, with ``C' = floor(C / r)`` hidden units (``C / r`` when ``r`` divides
``C``), every count including the one ``residual_scale``:

- SE: ``2*C*C' + C' + C + 1`` (= ``2C^2/r + C/r + C + 1``): the two Dense layers with biases.
- CBAM: ``2*C*C' + C' + C + 2*s*s + 1 + 1``: the channel MLP (shared by the average- and
  max-pooled descriptors, so counted once), the ``s x s`` spatial convolution from 2 maps
  to 1 with one bias (``s = 7``: 99), and ``residual_scale``.
- ECA: ``k + 1``: the 1-D convolution over channels has no bias, as in the paper.
"""

from __future__ import annotations

import math

import keras
from keras import ops

__all__ = ["ATTENTION_LAYERS", "CBAM", "ECA", "SqueezeExcitation", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """ECA's adaptive kernel size ``k = psi(C) = |log2(C)/gamma + b/gamma|_odd``.

    Wang et al. (section 3.2, "coverage of local cross-channel interaction") invert the
    mapping ``C = 2^(gamma*k - b)`` and take the nearest odd number. The nearest odd number
    is ambiguous on even integers; this follows the authors' code: truncate, then add 1 when
    even, i.e. ties go up. With ``gamma = 2, b = 1``: C = 64 -> 3 (t = 3.5), 128 -> 5 (t = 4),
    256 -> 5 (t = 4.5), 512 -> 5 (t = 5), 1024 -> 5 (t = 5.5), 2048 -> 7 (t = 6).

    Args:
        channels: the channel count ``C`` (positive integer).
        gamma: the paper's ``gamma`` (positive).
        b: the paper's ``b``.

    Returns:
        The odd kernel size ``k >= 1``.
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    if not gamma > 0:
        raise ValueError(f"gamma must be positive, got {gamma!r}")
    # log2 rather than log(C, 2): exact for powers of two, where t often lands on an integer
    # and a rounding error of log(C)/log(2) would flip the parity.
    target = abs(math.log2(channels) / gamma + b / gamma)
    truncated = int(target)
    return truncated if truncated % 2 else truncated + 1


def _check_positive_int(layer_name, arg_name, value, odd=False):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or (odd and value % 2 == 0):
        kind = "a positive odd integer" if odd else "a positive integer"
        raise ValueError(f"layer '{layer_name}': {arg_name} must be {kind}, got {value!r}.")


class _ResidualRefinement(keras.layers.Layer):
    """Shared by the three modules: the input check and the identity-start residual blend."""

    def __init__(self, identity_start=True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(identity_start, bool):
            raise ValueError(
                f"layer '{self.name}': identity_start must be True or False, got "
                f"{identity_start!r}."
            )
        self.identity_start = identity_start

    def _channels(self, input_shape):
        """``C`` of a 4-D channels-last input; the weights' shapes depend on it."""
        if len(input_shape) != 4:
            raise ValueError(
                f"{type(self).__name__} layer '{self.name}' expects a 4D channels-last input "
                f"(B, H, W, C), got shape {tuple(input_shape)}."
            )
        channels = input_shape[-1]
        if channels is None or channels <= 0:
            raise ValueError(
                f"{type(self).__name__} layer '{self.name}' needs a static positive channel "
                f"count C, got C={channels}."
            )
        return channels

    def _hidden_units(self, channels, reduction):
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(
                f"{type(self).__name__} layer '{self.name}': reduction r={reduction} leaves "
                f"floor(C/r) = 0 hidden units for C={channels}; use r <= C."
            )
        return hidden

    def _add_channel_mlp(self, channels):
        """SE's excitation MLP, which CBAM's channel attention shares: C -> C/r -> C, biases."""
        hidden = self._hidden_units(channels, self.reduction)
        self.reduce_kernel = self.add_weight(
            name="reduce_kernel", shape=(channels, hidden), initializer="glorot_uniform"
        )
        self.reduce_bias = self.add_weight(name="reduce_bias", shape=(hidden,), initializer="zeros")
        self.expand_kernel = self.add_weight(
            name="expand_kernel", shape=(hidden, channels), initializer="glorot_uniform"
        )
        self.expand_bias = self.add_weight(name="expand_bias", shape=(channels,), initializer="zeros")

    def _channel_mlp(self, descriptors):
        """The MLP on pooled descriptors ``(..., C)``: ``W1 relu(W0 z + b0) + b1`` (..., C)."""
        hidden = ops.relu(ops.matmul(descriptors, self.reduce_kernel) + self.reduce_bias)
        return ops.matmul(hidden, self.expand_kernel) + self.expand_bias

    def _add_residual_scale(self):
        self.residual_scale = self.add_weight(
            name="residual_scale",
            shape=(),
            initializer=keras.initializers.Constant(0.0 if self.identity_start else 1.0),
        )

    def _blend(self, inputs, refined):
        """``x + a (M(x) - x)`` as ``(1 - a) x + a M(x)``: exact at a = 0 and at a = 1."""
        scale = self.residual_scale
        return (1.0 - scale) * inputs + scale * refined

    def _blend_channel_weights(self, inputs, channel_weights):
        """The blend for ``M(x) = w * x`` with per-channel ``w`` of shape ``(B, C)``.

        Folding the blend into the small weight vector, ``x * ((1 - a) + a w)``, touches the
        full map once instead of three times; it stays exact at a = 0 and at a = 1.
        """
        scale = self.residual_scale
        gate = (1.0 - scale) + scale * channel_weights  # (B, C)
        return inputs * gate[:, None, None, :]  # (B, 1, 1, C) broadcast over H, W

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["identity_start"] = self.identity_start
        return config


@keras.saving.register_keras_serializable(package="lhc")
class SqueezeExcitation(_ResidualRefinement):
    """Squeeze-and-Excitation block (Hu et al. 2018, eqs. 2-4), with an identity start.

    Squeeze (eq. 2): ``z_c = 1/(H W) sum_ij x_c(i, j)``, global average pooling.
    Excitation (eq. 3): ``s = sigmoid(W2 relu(W1 z))`` with ``W1: C -> C/r`` and
    ``W2: C/r -> C``; each Dense has a bias (the paper omits biases "to simplify the
    notation"; the authors' networks have them). Scale (eq. 4): ``M(x)_c = s_c x_c``.
    The layer returns ``x + residual_scale * (M(x) - x)`` (module docstring).

    Args:
        reduction: the reduction ratio ``r`` (16 in the paper); the bottleneck has
            ``floor(C / r)`` units, at least 1.
        identity_start: ``True`` starts ``residual_scale`` at 0 (the layer is the identity);
            ``False`` starts it at 1 (the layer is the published SE block).
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: tensor of shape ``(B, H, W, C)`` with static ``C``.

    Returns:
        A tensor of shape ``(B, H, W, C)``.

    Parameter count: ``2*C*C' + C' + C + 1`` with ``C' = floor(C/r)``, i.e.
    ``2C^2/r + C/r + C + 1`` when ``r`` divides ``C`` (581 for C = 64, r = 16).
    """

    def __init__(self, reduction=16, identity_start=True, **kwargs):
        super().__init__(identity_start=identity_start, **kwargs)
        _check_positive_int(self.name, "reduction", reduction)
        self.reduction = reduction

    def build(self, input_shape):
        channels = self._channels(input_shape)
        self._add_channel_mlp(channels)
        self._add_residual_scale()

    def call(self, inputs):
        squeezed = ops.mean(inputs, axis=(1, 2))  # (B, C), eq. 2
        excitation = ops.sigmoid(self._channel_mlp(squeezed))  # (B, C), eq. 3
        return self._blend_channel_weights(inputs, excitation)  # eq. 4, blended

    def get_config(self):
        config = super().get_config()
        config["reduction"] = self.reduction
        return config


@keras.saving.register_keras_serializable(package="lhc")
class CBAM(_ResidualRefinement):
    """Convolutional Block Attention Module (Woo et al. 2018, eqs. 1-3), with an identity start.

    Channel attention (eq. 2): ``M_c(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))``, the
    pools global over ``H, W`` and the MLP ``W1 relu(W0 .)`` (``W0: C -> C/r``, ``W1:
    C/r -> C``, with biases as in the authors' code) shared by both descriptors. Spatial
    attention (eq. 3): ``M_s(F) = sigmoid(f^{7x7}([AvgPool(F); MaxPool(F)]))``, the pools
    over the channel axis and ``f`` a 'same' zero-padded convolution from 2 maps to 1.
    Sequential refinement (eq. 1): ``F' = M_c(F) * F``, ``M(F) = F'' = M_s(F') * F'``. The
    layer returns ``F + residual_scale * (F'' - F)`` (module docstring).

    The spatial convolution has one bias. Eq. 3 writes none, but the authors' code follows
    the convolution with a BatchNorm, which at inference is an affine map of the single
    output channel: its scale folds into the kernel and its shift is this bias. The input
    maps are stacked in eq. 3's order, average then max (the authors' code stacks max
    first, which only permutes the kernel's input axis).

    Args:
        reduction: the reduction ratio ``r`` of the channel MLP (16 in the paper); the
            bottleneck has ``floor(C / r)`` units, at least 1.
        spatial_kernel_size: the spatial convolution's odd kernel size ``s`` (7 in the
            paper).
        identity_start: ``True`` starts ``residual_scale`` at 0 (the layer is the identity);
            ``False`` starts it at 1 (the layer is the published CBAM).
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: tensor of shape ``(B, H, W, C)`` with static ``C``.

    Returns:
        A tensor of shape ``(B, H, W, C)``.

    Parameter count: ``2*C*C' + C' + C + 2*s*s + 1 + 1`` with ``C' = floor(C/r)``: the shared
    MLP, the spatial kernel and its bias, ``residual_scale`` (680 for C = 64, r = 16, s = 7).
    """

    def __init__(self, reduction=16, spatial_kernel_size=7, identity_start=True, **kwargs):
        super().__init__(identity_start=identity_start, **kwargs)
        _check_positive_int(self.name, "reduction", reduction)
        # An even kernel would pad 'same' unevenly and shift the spatial map by half a cell.
        _check_positive_int(self.name, "spatial_kernel_size", spatial_kernel_size, odd=True)
        self.reduction = reduction
        self.spatial_kernel_size = spatial_kernel_size

    def build(self, input_shape):
        channels = self._channels(input_shape)
        self._add_channel_mlp(channels)
        size = self.spatial_kernel_size
        self.spatial_kernel = self.add_weight(
            name="spatial_kernel", shape=(size, size, 2, 1), initializer="glorot_uniform"
        )
        self.spatial_bias = self.add_weight(name="spatial_bias", shape=(1,), initializer="zeros")
        self._add_residual_scale()

    def call(self, inputs):
        # Both descriptors go through the shared MLP as one batch of two rows (eq. 2).
        descriptors = ops.stack(
            [ops.mean(inputs, axis=(1, 2)), ops.max(inputs, axis=(1, 2))], axis=1
        )  # (B, 2, C): average- and max-pooled
        mlp_outputs = self._channel_mlp(descriptors)  # (B, 2, C)
        channel_weights = ops.sigmoid(ops.sum(mlp_outputs, axis=1))  # (B, C), eq. 2
        channel_refined = inputs * channel_weights[:, None, None, :]  # (B, H, W, C), F' of eq. 1

        channel_pools = ops.concatenate(
            [
                ops.mean(channel_refined, axis=-1, keepdims=True),
                ops.max(channel_refined, axis=-1, keepdims=True),
            ],
            axis=-1,
        )  # (B, H, W, 2): [AvgPool(F'); MaxPool(F')] over channels
        spatial_logits = ops.conv(channel_pools, self.spatial_kernel, strides=1, padding="same")
        spatial_weights = ops.sigmoid(spatial_logits + self.spatial_bias)  # (B, H, W, 1), eq. 3
        refined = channel_refined * spatial_weights  # (B, H, W, C), F'' of eq. 1
        return self._blend(inputs, refined)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"reduction": self.reduction, "spatial_kernel_size": self.spatial_kernel_size}
        )
        return config


@keras.saving.register_keras_serializable(package="lhc")
class ECA(_ResidualRefinement):
    """Efficient Channel Attention (Wang et al. 2020, section 3.2), with an identity start.

    ``y = GAP(x)`` (``(B, C)``), then ``w = sigmoid(C1D_k(y))``: one 1-D convolution of
    kernel size ``k`` slid along the channel axis, shared by all channels, zero-padded at
    both ends, without bias ("local cross-channel interaction": channel ``i`` sees its
    ``k`` neighbours). ``M(x)_c = w_c x_c``; the layer returns
    ``x + residual_scale * (M(x) - x)`` (module docstring). Unlike SE there is no
    dimensionality reduction.

    Args:
        kernel_size: the odd kernel size ``k``; ``None`` (default) derives it from ``C``
            with :func:`eca_kernel_size` (``gamma``, ``b``) when the layer is built.
        gamma: the paper's ``gamma`` of the adaptive kernel size (2).
        b: the paper's ``b`` of the adaptive kernel size (1).
        identity_start: ``True`` starts ``residual_scale`` at 0 (the layer is the identity);
            ``False`` starts it at 1 (the layer is the published ECA module).
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: tensor of shape ``(B, H, W, C)`` with static ``C``.

    Returns:
        A tensor of shape ``(B, H, W, C)``.

    Parameter count: ``k + 1`` (``k`` kernel taps, ``residual_scale``); 4 for C = 64.
    The built layer's ``k`` is ``channel_kernel_size``.
    """

    def __init__(self, kernel_size=None, gamma=2.0, b=1.0, identity_start=True, **kwargs):
        super().__init__(identity_start=identity_start, **kwargs)
        if kernel_size is not None:
            # An even kernel would pad the channel axis unevenly: channel i would not sit at
            # the centre of its window.
            _check_positive_int(self.name, "kernel_size", kernel_size, odd=True)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
            raise ValueError(f"layer '{self.name}': gamma must be a positive number, got {gamma!r}.")
        if isinstance(b, bool) or not isinstance(b, (int, float)):
            raise ValueError(f"layer '{self.name}': b must be a number, got {b!r}.")
        self.kernel_size = kernel_size
        self.gamma = float(gamma)
        self.b = float(b)

    def build(self, input_shape):
        channels = self._channels(input_shape)
        if self.kernel_size is None:
            self.channel_kernel_size = eca_kernel_size(channels, self.gamma, self.b)
        else:
            self.channel_kernel_size = self.kernel_size
        # Conv1D layout (taps, in features, out features): the channels form the sequence.
        self.interaction_kernel = self.add_weight(
            name="interaction_kernel",
            shape=(self.channel_kernel_size, 1, 1),
            initializer="glorot_uniform",
        )
        self._add_residual_scale()

    def call(self, inputs):
        pooled = ops.mean(inputs, axis=(1, 2))  # (B, C), GAP
        sequence = pooled[:, :, None]  # (B, C, 1): C positions of one feature each
        interaction = ops.conv(sequence, self.interaction_kernel, strides=1, padding="same")  # (B, C, 1)
        channel_weights = ops.sigmoid(interaction[:, :, 0])  # (B, C), w = sigmoid(C1D_k(y))
        return self._blend_channel_weights(inputs, channel_weights)

    def get_config(self):
        config = super().get_config()
        config.update({"kernel_size": self.kernel_size, "gamma": self.gamma, "b": self.b})
        return config


# The attention layers of this module, for counting their parameters beside LHC's.
ATTENTION_LAYERS = (SqueezeExcitation, CBAM, ECA)
