"""The LHC module: Local (multi-)Head Channel self-attention (paper section 2.1, eqs. 1-17).

The module reads a feature map ``x`` of shape ``(B, H, W, C)`` and returns ``x + y`` where
``y`` is channel self-attention computed independently on ``n`` horizontal bands of the
map (the "local heads"). Facts the paper leaves open follow the original implementation,
as listed in ``REFERENCE.md``:

- Q = AvgPool(p, stride 1, 'same')(x), K = MaxPool(p, stride 1, 'same')(x) (eqs. 1-2);
  V = AvgPool(3, stride 1, 'same')(Conv2D(C, s, 'same', with bias)(x)) (eq. 3). 'same'
  average pooling divides by the number of valid (not padded) cells, as Keras does.
- SplitHeads flattens the map row-major to ``(B, H*W, C)`` and cuts the ``H*W`` axis into
  ``n`` contiguous chunks of ``L = H*W/n`` positions: head ``h`` sees a horizontal band.
- One Dense(d) per head, shared by queries and keys (eqs. 7-10).
- Dynamic scaling (eqs. 12-14) uses one sigmoid Dense(C -> C) shared by all heads, and
  ``N_h = S_h / d^(g + T_h)`` with ``T_h[i]`` scaling row ``i`` of ``S_h``.
- Softmax over the last axis (eq. 15), heads put back where they were cut from (eq. 17),
  residual sum ``x + y``.

Implementation note: the paper writes each head's tensors as ``(C, L)``; this layer keeps
them as ``(L, C)`` (the transpose), which is exactly the row-major reshape
``(B, H*W, C) -> (B, n, L, C)``. All heads then run as single batched einsums with no
transpose of the feature map, and eq. 17 is the reverse reshape.
"""

from __future__ import annotations

import math

import keras
from keras import ops

__all__ = ["HEAD_LAYOUTS", "LHC", "head_band"]

# "bands": the paper's local heads, one horizontal band each. "global": the comparison arm of
# section 2.2, every head sees the whole map (a standard multi-head channel attention).
HEAD_LAYOUTS = ("bands", "global")


def head_band(head, num_heads, height, width, head_layout="bands"):
    """Flat row-major positions ``[start, stop)`` of the ``H x W`` map that ``head`` sees.

    SplitHeads (eqs. 4-6) flattens the map row-major to ``H*W`` positions and cuts them into
    ``n`` contiguous chunks of ``L = H*W/n``; eq. 17 puts each head's output back on its chunk.
    So for ``head_layout="bands"`` head ``h`` sees ``[h*L, (h+1)*L)``: whole rows
    ``h*H/n .. (h+1)*H/n - 1`` when ``n`` divides ``H``, otherwise rows cut part-way. For
    ``"global"`` every head sees all positions, ``[0, H*W)``.

    Args:
        head: head index ``h`` in ``0 .. n-1``.
        num_heads: ``n``.
        height, width: the feature map's ``H`` and ``W``.
        head_layout: one of :data:`HEAD_LAYOUTS`.

    Returns:
        ``(start, stop)``; ``stop - start`` is the layer's ``band_size``.
    """
    if head_layout not in HEAD_LAYOUTS:
        raise ValueError(f"head_layout must be one of {HEAD_LAYOUTS}, got {head_layout!r}")
    if not 0 <= head < num_heads:
        raise ValueError(f"head must lie in 0..{num_heads - 1}, got {head}")
    positions = height * width
    if head_layout == "global":
        return 0, positions
    if positions % num_heads:
        raise ValueError(
            f"H*W = {height}*{width} = {positions} is not divisible by num_heads={num_heads}"
        )
    band_size = positions // num_heads
    return head * band_size, (head + 1) * band_size


@keras.saving.register_keras_serializable(package="lhc")
class LHC(keras.layers.Layer):
    """Local multi-head channel self-attention with dynamic scaling (eqs. 1-17).

    Args:
        num_heads: number of local heads ``n``; ``H*W`` must be divisible by it.
        head_dim: embedding size ``d`` of each head's shared query/key Dense.
        pool_size: pool size ``p`` of the query (average) and key (max) pooling.
        kernel_size: kernel size ``s`` of the value convolution.
        scale_exponent: the constant ``g >= 0`` of the dynamic scaling (eq. 14).
        gate_init: ``None`` for LHC-Net (output ``x + y``). A float makes the LHC-NetC
            variant: output ``x + (1 + tanh(w)) * y`` with a trainable scalar ``w``
            (weight ``gate``) initialised to ``gate_init``.
        enabled: ``False`` "switches the module off" (paper section 2.2): the layer returns
            its input unchanged. Weights are still created, so weight transfer and
            ablations work on the same layer.
        head_layout: ``"bands"`` (the paper: head ``h`` sees the ``h``-th horizontal band of
            ``H*W/n`` positions) or ``"global"`` (the comparison arm of section 2.2: every
            head sees all ``H*W`` positions with its own Dense(H*W -> d), and the heads'
            outputs are averaged). Only ``"bands"`` needs ``n`` to divide ``H*W``.
        value_initializer: initializer of the value convolution's kernel (eq. 3); the
            original code's Keras default ``"glorot_uniform"``. ``"zeros"`` makes a module
            start as the identity (V = 0, so the attention term is 0 and the output is x):
            stage 4 then starts LHC-Net at its backbone's accuracy. The value kernel's
            gradient does not vanish at V = 0; the query, key and scale weights get theirs
            once V is non-zero, from the second training step on.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: tensor of shape ``(B, H, W, C)`` with static ``H``, ``W``, ``C``.
        return_attention: if ``True``, also return a dict with the per-head analysis
            tensors ``weights`` W_h ``(B, n, C, C)`` (eq. 15), ``scales`` T_h
            ``(B, n, C)`` (eq. 13) and ``head_outputs`` A_h ``(B, n, C, L)`` (eq. 16), with
            ``L = H*W/n`` (bands) or ``H*W`` (global).

    Returns:
        A tensor of shape ``(B, H, W, C)``; with ``return_attention=True`` a tuple
        ``(output, analysis_dict)``.

    Parameter count: ``n*(L*d + d) + (C*C + C) + (s*s*C*C + C)`` (+1 with a gate), with
    ``L = H*W/n`` for bands and ``L = H*W`` for global heads.
    """

    def __init__(
        self,
        num_heads,
        head_dim,
        pool_size=3,
        kernel_size=3,
        scale_exponent=1.0,
        gate_init=None,
        enabled=True,
        head_layout="bands",
        value_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        for arg_name, value in (
            ("num_heads", num_heads),
            ("head_dim", head_dim),
            ("pool_size", pool_size),
            ("kernel_size", kernel_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"LHC layer '{self.name}': {arg_name} must be a positive integer, "
                    f"got {value!r}."
                )
        if not isinstance(scale_exponent, (int, float)) or not scale_exponent >= 0:
            raise ValueError(
                f"LHC layer '{self.name}': scale_exponent (the paper's g) must be a "
                f"non-negative number, got {scale_exponent!r}."
            )
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.pool_size = pool_size
        self.kernel_size = kernel_size
        self.scale_exponent = float(scale_exponent)
        self.gate_init = None if gate_init is None else float(gate_init)
        self.enabled = bool(enabled)
        if head_layout not in HEAD_LAYOUTS:
            raise ValueError(
                f"LHC layer '{self.name}': head_layout must be one of {HEAD_LAYOUTS}, "
                f"got {head_layout!r}."
            )
        self.head_layout = head_layout
        # Kept as given and resolved by add_weight in build(): building a random initializer
        # here would draw its seed earlier and change every later layer's initial weights.
        self.value_initializer = value_initializer

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"LHC layer '{self.name}' expects a 4D channels-last input (B, H, W, C), "
                f"got shape {tuple(input_shape)}."
            )
        height, width, channels = input_shape[1], input_shape[2], input_shape[3]
        if any(size is None or size <= 0 for size in (height, width, channels)):
            raise ValueError(
                f"LHC layer '{self.name}' needs static positive H, W and C, got "
                f"H={height}, W={width}, C={channels}."
            )
        if self.head_layout == "bands" and (height * width) % self.num_heads:
            raise ValueError(
                f"LHC layer '{self.name}': H*W = {height}*{width} = {height * width} is not "
                f"divisible by num_heads={self.num_heads}; each head needs an equal "
                f"horizontal band (paper section 2.1)."
            )
        self.height, self.width, self.channels = height, width, channels
        # L = H*W / n positions per local head; a global head sees all H*W.
        local = self.head_layout == "bands"
        self.band_size = height * width // self.num_heads if local else height * width
        kernel = self.kernel_size
        self.value_kernel = self.add_weight(
            name="value_kernel",
            shape=(kernel, kernel, channels, channels),
            initializer=self.value_initializer,
        )
        self.value_bias = self.add_weight(name="value_bias", shape=(channels,), initializer="zeros")
        # One Dense(L -> d) per head, stacked; initialised as a per-head Glorot-uniform Dense
        # would be (fans L and d), not with the stacked tensor's larger fans.
        embed_limit = math.sqrt(6.0 / (self.band_size + self.head_dim))
        self.embed_kernel = self.add_weight(
            name="embed_kernel",
            shape=(self.num_heads, self.band_size, self.head_dim),
            initializer=keras.initializers.RandomUniform(-embed_limit, embed_limit),
        )
        self.embed_bias = self.add_weight(
            name="embed_bias", shape=(self.num_heads, self.head_dim), initializer="zeros"
        )
        self.scale_kernel = self.add_weight(
            name="scale_kernel", shape=(channels, channels), initializer="glorot_uniform"
        )
        self.scale_bias = self.add_weight(name="scale_bias", shape=(channels,), initializer="zeros")
        if self.gate_init is not None:
            self.gate = self.add_weight(
                name="gate",
                shape=(),
                initializer=keras.initializers.Constant(self.gate_init),
            )

    def band(self, head):
        """Flat row-major positions ``[start, stop)`` head ``head`` sees (eq. 17, :func:`head_band`).

        Valid once the layer is built (its ``H`` and ``W`` are known).
        """
        if not self.built:
            raise ValueError(
                f"LHC layer '{self.name}' is not built yet; its bands are known once it has "
                f"seen its input shape."
            )
        return head_band(head, self.num_heads, self.height, self.width, self.head_layout)

    def call(self, inputs, return_attention=False):
        if not self.enabled and not return_attention:
            return inputs
        attention, analysis = self._attention(inputs, return_attention)
        if not self.enabled:
            outputs = inputs
        elif self.gate_init is None:
            outputs = inputs + attention
        else:
            outputs = inputs + (1.0 + ops.tanh(self.gate)) * attention
        if return_attention:
            return outputs, analysis
        return outputs

    def embedded_heads(self, inputs):
        """Eqs. 1-10: the banded values and the embedded queries and keys of every head.

        The part of the layer that does not depend on the scores; benchmarks time it alone.

        Args:
            inputs: ``(B, H, W, C)``.

        Returns:
            ``values`` ``(B, n, L, C)`` (``(B, 1, H*W, C)`` for global heads) and
            ``query_embed``, ``key_embed`` ``(B, n, d, C)``, the embeddings transposed.
        """
        num_heads, band_size, channels = self.num_heads, self.band_size, self.channels
        pool = self.pool_size
        queries = ops.average_pool(inputs, pool, strides=1, padding="same")  # eq. 1
        keys = ops.max_pool(inputs, pool, strides=1, padding="same")  # eq. 2
        values = ops.conv(inputs, self.value_kernel, strides=1, padding="same")
        values = ops.average_pool(values + self.value_bias, 3, strides=1, padding="same")  # eq. 3

        # SplitHeads (eqs. 4-6), stored transposed: head h holds rows h*L..(h+1)*L-1.
        # A global layout keeps one "band", the whole map, which the n heads broadcast over.
        bands = num_heads if self.head_layout == "bands" else 1
        queries = ops.reshape(queries, (-1, bands, band_size, channels))  # (B, n or 1, L, C)
        keys = ops.reshape(keys, (-1, bands, band_size, channels))  # (B, n or 1, L, C)
        values = ops.reshape(values, (-1, bands, band_size, channels))  # (B, n or 1, L, C)

        # Shared per-head embedding of queries and keys (eqs. 9-10), computed transposed,
        # q~_h^T = w_1,h^T q_h^T, as one matmul broadcast over the batch: the big (L, C)
        # bands are read in place, only the small weights are transposed.
        embed_kernel = ops.transpose(self.embed_kernel, (0, 2, 1))[None]  # (1, n, d, L)
        embed_bias = self.embed_bias[None, :, :, None]  # (1, n, d, 1)
        query_embed = ops.matmul(embed_kernel, queries) + embed_bias  # (B, n, d, C)
        key_embed = ops.matmul(embed_kernel, keys) + embed_bias  # (B, n, d, C)
        return values, query_embed, key_embed

    def _attention(self, inputs, return_attention):
        """The attention term ``y`` of eq. 17, and the analysis tensors when asked."""
        values, query_embed, key_embed = self.embedded_heads(inputs)

        # Dynamic scaling (eqs. 12-14), one sigmoid Dense shared by heads. The row means of
        # S_h = q~_h k~_h^T are q~_h times the mean key embedding (eq. 12): one small matmul,
        # no extra pass over the (C, C) scores.
        mean_key = ops.expand_dims(ops.mean(key_embed, axis=-1), 2)  # (B, n, 1, d)
        mean_scores = ops.matmul(mean_key, query_embed)  # (B, n, 1, C)
        mean_scores = ops.reshape(mean_scores, (-1, self.num_heads, self.channels))  # (B, n, C), eq. 12
        scales = ops.sigmoid(ops.matmul(mean_scores, self.scale_kernel) + self.scale_bias)  # eq. 13
        # d^-(g + T) = exp(-(g + T) log d)
        inverse_temperature = ops.exp(-(self.scale_exponent + scales) * math.log(self.head_dim))
        if self.head_dim < self.channels:
            # Dividing row i of S_h by d^(g + T_h[i]) (eq. 14) equals scaling query i before
            # the product (eq. 11), and the (d, C) queries are the smaller tensor.
            scaled_query = query_embed * inverse_temperature[:, :, None, :]  # (B, n, d, C)
            normalised = ops.matmul(
                ops.transpose(scaled_query, (0, 1, 3, 2)), key_embed
            )  # (B, n, C, C), eqs. 11 and 14
        else:
            # d >= C: the scores are the smaller tensor; eq. 14 as written.
            scores = ops.matmul(ops.transpose(query_embed, (0, 1, 3, 2)), key_embed)  # (B, n, C, C), eq. 11
            normalised = scores * inverse_temperature[:, :, :, None]  # (B, n, C, C), eq. 14

        # Softmax in the compute dtype: TensorFlow's kernel accumulates a bf16 row's sum
        # in float32 (tested), so bf16 copies cost no accuracy and save two casts of the
        # (C, C) scores each way. Other backends give no such promise: upcast there, since a
        # bf16 running sum over a row of up to 512 terms drops the small ones.
        if keras.backend.backend() != "tensorflow" and keras.backend.standardize_dtype(
            normalised.dtype
        ) in ("bfloat16", "float16"):
            normalised = ops.cast(normalised, "float32")
        weights = ops.cast(ops.softmax(normalised, axis=-1), values.dtype)  # eq. 15
        if values.shape[-2] < self.channels:
            # Bands shorter than C: A_h = W_h v_h, in the paper's (C, L) layout, moves only
            # the small (L, C) tensors through transposes; the (C, C) weights stay put in
            # both passes.
            head_outputs = ops.matmul(weights, ops.transpose(values, (0, 1, 3, 2)))  # (B, n, C, L)
            head_outputs = ops.transpose(head_outputs, (0, 1, 3, 2))  # (B, n, L, C)
        else:
            # eq. 16 in the transposed layout: A_h^T = v_h^T W_h^T.
            head_outputs = ops.matmul(values, ops.transpose(weights, (0, 1, 3, 2)))  # (B, n, L, C)
        if self.head_layout == "global":
            # Full-map heads overlap: their outputs are averaged instead of put side by side.
            attention = ops.mean(head_outputs, axis=1)  # (B, H*W, C)
        else:
            attention = head_outputs
        attention = ops.reshape(
            attention, (-1, self.height, self.width, self.channels)
        )  # (B, H, W, C), eq. 17

        analysis = None
        if return_attention:
            analysis = {
                "weights": weights,
                "scales": scales,
                "head_outputs": ops.transpose(head_outputs, (0, 1, 3, 2)),  # (B, n, C, L)
            }
        return attention, analysis

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "head_dim": self.head_dim,
                "pool_size": self.pool_size,
                "kernel_size": self.kernel_size,
                "scale_exponent": self.scale_exponent,
                "gate_init": self.gate_init,
                "enabled": self.enabled,
                "head_layout": self.head_layout,
                "value_initializer": keras.saving.serialize_keras_object(self.value_initializer),
            }
        )
        return config
