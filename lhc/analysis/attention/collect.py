"""Collecting the LHC modules' analysis tensors from a model (paper section 2.1, eqs. 13-17).

:func:`collect_attention` (or an :class:`AttentionCollector`, built once and reused) runs a
model's LHC modules in analysis mode: one sub-model from the model's input to every module's
input, then each module eagerly with ``return_attention``. What comes back is an
:class:`AttentionAnalysis`, one :class:`ModuleAttention` per module with its attention weights
``W_h`` (eq. 15), dynamic scales ``T_h`` (eq. 13), head outputs ``A_h`` (eq. 16) and geometry;
the band geometry (eq. 17) is the layer's own, :func:`lhc.layers.head_band`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np

from lhc.layers import LHC, head_band

__all__ = [
    "AttentionAnalysis",
    "AttentionCollector",
    "ModuleAttention",
    "collect_attention",
    "model_inputs",
]


@dataclasses.dataclass(frozen=True)
class ModuleAttention:
    """One LHC module's analysis tensors for ``N`` images, with its geometry.

    Attributes:
        name: the layer's name (``lhc1`` ... ``lhc5`` in LHC-Net).
        height, width, channels: the module's feature map ``H``, ``W``, ``C``.
        num_heads: ``n``.
        head_dim: ``d``, the embedding size of each head.
        scale_exponent: ``g`` of the dynamic scaling (eq. 14).
        head_layout: ``"bands"`` (local heads) or ``"global"`` (every head sees the whole map).
        weights: ``W_h`` float32 ``(N, n, C, C)``, rows summing to 1 (eq. 15).
        scales: ``T_h`` float32 ``(N, n, C)`` in (0, 1) (eq. 13).
        head_outputs: ``A_h`` float32 ``(N, n, C, L)``, ``L = H*W/n`` for bands (eq. 16).
    """

    name: str
    height: int
    width: int
    channels: int
    num_heads: int
    head_dim: int
    scale_exponent: float
    head_layout: str
    weights: np.ndarray
    scales: np.ndarray
    head_outputs: np.ndarray

    @property
    def band_size(self) -> int:
        """``L``: the positions one head sees (``H*W/n`` for bands, ``H*W`` for global)."""
        return self.head_outputs.shape[-1]

    def band(self, head: int) -> tuple[int, int]:
        """Flat row-major positions ``[start, stop)`` of ``head``'s band in the ``H x W`` map.

        SplitHeads (eqs. 4-6) cuts the row-major flattened map into ``n`` contiguous chunks,
        so head ``h`` sees positions ``h*L .. (h+1)*L - 1``: whole rows ``h*H/n .. (h+1)*H/n - 1``
        when ``n`` divides ``H``, otherwise rows cut part-way. A global head sees every position.
        The geometry is the layer's own (:func:`lhc.layers.head_band`, :meth:`lhc.layers.LHC.band`).
        """
        self._check_head(head)
        return head_band(head, self.num_heads, self.height, self.width, self.head_layout)

    @property
    def band_rows(self) -> list[tuple[int, int]]:
        """Per head, the feature-map rows ``[first, stop)`` its band touches (partly or wholly)."""
        rows = []
        for head in range(self.num_heads):
            start, stop = self.band(head)
            rows.append((start // self.width, -(-stop // self.width)))
        return rows

    def band_mask(self, head: int) -> np.ndarray:
        """Boolean ``(H, W)`` map, True on ``head``'s band."""
        start, stop = self.band(head)
        mask = np.zeros(self.height * self.width, dtype=bool)
        mask[start:stop] = True
        return mask.reshape(self.height, self.width)  # (H, W)

    def temperature(self) -> np.ndarray:
        """Effective softmax temperature ``d^(g + T_h[i])`` per image, head and row, ``(N, n, C)``.

        Row ``i`` of ``W_h`` is ``softmax(S_h[i] / temperature)`` (eqs. 14-15); the larger the
        temperature, the smaller ``alpha`` of eqs. 18-20 and the flatter the row.
        """
        exponent = self.scale_exponent + self.scales.astype(np.float64)
        return np.power(float(self.head_dim), exponent)

    def _check_head(self, head: int) -> None:
        if not 0 <= head < self.num_heads:
            raise ValueError(f"module {self.name!r} has heads 0..{self.num_heads - 1}, got {head}")


@dataclasses.dataclass(frozen=True)
class AttentionAnalysis:
    """What :func:`collect_attention` returns.

    Attributes:
        modules: layer name -> :class:`ModuleAttention`, in the model's order.
        image_size: ``(height, width)`` of the model input.
        probabilities: float32 ``(N, num_classes)``, the model's predictions for the images.
    """

    modules: dict[str, ModuleAttention]
    image_size: tuple[int, int]
    probabilities: np.ndarray

    @property
    def num_images(self) -> int:
        return len(self.probabilities)

    def __getitem__(self, module: str) -> ModuleAttention:
        if module not in self.modules:
            raise KeyError(f"no LHC module {module!r} in this analysis; it holds {list(self.modules)}")
        return self.modules[module]


def model_inputs(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Model-ready float32 ``(N, S, S, 3)`` images in [0, 255] for ``model``.

    Args:
        model: a model with a square ``(S, S, 3)`` input.
        images: grey uint8 ``(N, h, w)`` (e.g. the 48x48 FER2013 faces), resized as in training
            by :func:`lhc.data.pipeline.preprocess`, or float ``(N, S, S, 3)`` already at the
            model's size, returned as float32.

    Returns:
        float32 ``(N, S, S, 3)``.
    """
    expected = tuple(model.input_shape[1:])
    if not isinstance(images, np.ndarray):
        raise ValueError(f"images must be a numpy array, got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError("images is empty; expected at least one image")
    if images.ndim == 4:
        if images.shape[1:] != expected:
            raise ValueError(f"images of shape {images.shape} do not fit model '{model.name}', "
                             f"whose input is (N, {', '.join(map(str, expected))})")
        return images.astype(np.float32)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be grey uint8 (N, h, w) or model-ready (N, "
                         f"{', '.join(map(str, expected))}); got {images.dtype} {images.shape}")
    from lhc.data.pipeline import preprocess

    return preprocess(images, expected[0])


class AttentionCollector:
    """Runs a model's LHC modules in analysis mode; build once, :meth:`collect` many times.

    One sub-model maps the model's input to the input of every chosen LHC module (and to the
    model's predictions); each module is then called eagerly with ``return_attention=True``.
    Reusing the collector reuses the sub-model's compiled predict function.

    Args:
        model: a functional model holding :class:`lhc.layers.LHC` layers (e.g. LHC-Net).
        layer_names: the LHC layers to analyse, in any order; ``None``: all of them.
    """

    def __init__(self, model: keras.Model, layer_names: Sequence[str] | None = None):
        available = [layer.name for layer in model.layers if isinstance(layer, LHC)]
        if not available:
            raise ValueError(f"model '{model.name}' has no LHC layers to analyse")
        names = available if layer_names is None else list(layer_names)
        unknown = [name for name in names if name not in available]
        if unknown or not names:
            raise ValueError(f"model '{model.name}': {unknown or 'no'} LHC layers chosen; "
                             f"its LHC layers are {available}")
        self.model = model
        self.layers = {name: model.get_layer(name) for name in names}
        self._taps = keras.Model(model.inputs,
                                 [layer.input for layer in self.layers.values()] + [model.output])

    def collect(self, images: np.ndarray, batch_size: int = 8) -> AttentionAnalysis:
        """The analysis tensors of every chosen module for ``images``.

        Args:
            images: anything :func:`model_inputs` accepts. Memory grows with ``N``: one image
                holds ``n*C*C`` weights and ``C*H*W`` head outputs per module, about 6 MB
                for the five modules of LHC-Net at 224x224.
            batch_size: images per forward pass.

        Returns:
            An :class:`AttentionAnalysis`.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        inputs = model_inputs(self.model, images)
        parts = {name: {"weights": [], "scales": [], "head_outputs": []} for name in self.layers}
        probabilities = []
        for start in range(0, len(inputs), batch_size):
            *features, predictions = self._taps.predict_on_batch(inputs[start:start + batch_size])
            probabilities.append(np.asarray(predictions, dtype=np.float32))
            for (name, layer), feature in zip(self.layers.items(), features, strict=True):
                _, analysis = layer(feature, return_attention=True)
                for key, value in analysis.items():
                    parts[name][key].append(keras.ops.convert_to_numpy(value).astype(np.float32))
        modules = {}
        for name, layer in self.layers.items():
            modules[name] = ModuleAttention(
                name=name, height=layer.height, width=layer.width, channels=layer.channels,
                num_heads=layer.num_heads, head_dim=layer.head_dim,
                scale_exponent=layer.scale_exponent, head_layout=layer.head_layout,
                **{key: np.concatenate(values) for key, values in parts[name].items()})
        height, width = self.model.input_shape[1:3]
        return AttentionAnalysis(modules, (height, width), np.concatenate(probabilities))


def collect_attention(model: keras.Model, images: np.ndarray,
                      layer_names: Sequence[str] | None = None,
                      batch_size: int = 8) -> AttentionAnalysis:
    """Collect ``W_h``, ``T_h`` and ``A_h`` (eqs. 13, 15, 16) of a model's LHC modules.

    Args:
        model: a functional model holding :class:`lhc.layers.LHC` layers.
        images: grey uint8 ``(N, h, w)`` or model-ready ``(N, S, S, 3)`` (:func:`model_inputs`).
        layer_names: the LHC layers to analyse; ``None``: all. Choosing few modules and a small
            ``N`` keeps memory low (``C`` up to 512 gives 1 MB of weights per head and image).
        batch_size: images per forward pass.

    Returns:
        An :class:`AttentionAnalysis`: per module ``weights (N, n, C, C)``, ``scales (N, n, C)``,
        ``head_outputs (N, n, C, L)`` and the geometry ``H, W, C, n, d, g`` and band rows.
    """
    return AttentionCollector(model, layer_names).collect(images, batch_size)
