"""Attention maps and dynamic scaling of LHC modules (paper section 2.1 eqs. 11-17, section 2.2).

Every LHC module (:class:`lhc.layers.LHC`) can return its analysis tensors: the attention
weights ``W_h`` (eq. 15), the dynamic scales ``T_h`` (eq. 13) and the head outputs ``A_h``
(eq. 16). This module collects them for a set of images, turns them into pictures and
summarises the dynamic scaling:

- :func:`collect_attention` runs a model's LHC modules in analysis mode: one sub-model from the
  model's input to every module's input, then each module eagerly with ``return_attention``.
- :func:`head_contribution_map` places the magnitude of a head's output ``A_h`` back on its
  horizontal band of the ``H x W`` feature map (eq. 17) and upsamples it to the input image.
- :func:`attention_weights_figure`, :func:`scales_figure`, :func:`overlay_figure`: one image,
  module and head; :class:`AttentionExplorer` puts them behind ipywidgets.
- :func:`dynamic_scaling_summary`, :func:`temperature_figure`, :func:`entropy_figure`: the
  effective softmax temperature ``d^(g+T)`` and the sharpness of the rows of ``W_h``.

How the dynamic scaling links to eqs. 18-20: eq. 14 divides row ``i`` of the scores ``S_h``
by the temperature ``tau_i = d^(g + T_h[i])``, so the softmax of eq. 15 sees ``alpha * S_h[i]``
with ``alpha = 1 / tau_i``. Eq. 20: no ``alpha > 0`` changes the ranking of a row, so the
temperature decides only how sharp a row is, not which input channel weighs most. Eq. 18:
``alpha -> infinity`` (a small temperature) gives a one-hot row, a new feature map that is a
strict selection of one old map; eq. 19: ``alpha -> 0`` (a large temperature) gives the
uniform row ``1/C``, an even average of all old maps. Sharpness is measured by the row
entropy divided by ``log C``: 0 for a one-hot row, 1 for a uniform row. Because ``T`` is a
sigmoid output in (0, 1), a module's temperature is confined to ``(d^g, d^(g+1))``; the
Transformer's static scaling is ``sqrt(d)``, i.e. ``g + T = 1/2``.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
from collections.abc import Sequence

import keras
import numpy as np

from lhc.layers import LHC
from lhc.plots import apply_style

__all__ = [
    "AttentionAnalysis",
    "AttentionCollector",
    "AttentionExplorer",
    "ContributionMap",
    "ModuleAttention",
    "attention_term_map",
    "attention_weights_figure",
    "collect_attention",
    "dynamic_scaling_summary",
    "entropy_figure",
    "head_contribution_map",
    "model_inputs",
    "normalised_row_entropy",
    "overlay_figure",
    "prediction_overlays_figure",
    "scales_figure",
    "temperature_figure",
    "weights_colour_limit",
]

CONTRIBUTION_REDUCTIONS = ("l2", "sum")


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
        """
        self._check_head(head)
        if self.head_layout == "global":
            return 0, self.height * self.width
        return head * self.band_size, (head + 1) * self.band_size

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


def _check_image_index(analysis: AttentionAnalysis, image_index: int) -> None:
    if not 0 <= image_index < analysis.num_images:
        raise ValueError(f"image_index {image_index} is outside the {analysis.num_images} "
                         f"analysed images")


@dataclasses.dataclass(frozen=True)
class ContributionMap:
    """Where one head writes into the attention term ``y`` of eq. 17, and how strongly.

    Attributes:
        grid: float ``(H, W)``, the magnitude per feature-map position; 0 outside the band.
        upsampled: float ``(S_h, S_w)``, ``grid`` at the input image's size (nearest
            neighbour: each feature cell covers its block of pixels, band edges stay sharp).
        band_mask: bool ``(H, W)``, True on the head's band.
        band_rows: feature-map rows ``[first, stop)`` the band touches.
    """

    grid: np.ndarray
    upsampled: np.ndarray
    band_mask: np.ndarray
    band_rows: tuple[int, int]


def head_contribution_map(analysis: AttentionAnalysis, module: str, head: int, image_index: int,
                          reduce: str = "l2") -> ContributionMap:
    """The magnitude of head ``head``'s output ``A_h`` (eq. 16) placed back on its band (eq. 17).

    For local heads, ``y`` on the band is exactly ``A_h``; a global layout averages its heads,
    so a global head's contribution is ``A_h / n`` over the whole map. The LHC-NetC gate
    ``1 + tanh(w)`` scales all heads of a module alike and is left out.

    Args:
        analysis: from :func:`collect_attention`.
        module: the LHC layer's name.
        head: head index ``h`` in ``0 .. n-1``.
        image_index: index into the analysed images.
        reduce: ``"l2"`` (Euclidean norm over the ``C`` channels at each position) or
            ``"sum"`` (sum of absolute values over channels).

    Returns:
        A :class:`ContributionMap`.
    """
    attention = analysis[module]
    if reduce not in CONTRIBUTION_REDUCTIONS:
        raise ValueError(f"reduce must be one of {CONTRIBUTION_REDUCTIONS}, got {reduce!r}")
    _check_image_index(analysis, image_index)
    start, stop = attention.band(head)
    values = attention.head_outputs[image_index, head].astype(np.float64)  # (C, L)
    if attention.head_layout == "global":
        values = values / attention.num_heads
    magnitude = np.linalg.norm(values, axis=0) if reduce == "l2" else np.abs(values).sum(axis=0)
    grid = np.zeros(attention.height * attention.width)
    grid[start:stop] = magnitude
    grid = grid.reshape(attention.height, attention.width)  # (H, W)
    image_height, image_width = analysis.image_size
    rows = np.arange(image_height) * attention.height // image_height
    columns = np.arange(image_width) * attention.width // image_width
    return ContributionMap(grid, grid[rows][:, columns], attention.band_mask(head),
                           attention.band_rows[head])


def attention_term_map(analysis: AttentionAnalysis, module: str, image_index: int) -> np.ndarray:
    """The magnitude of the whole attention term ``y`` of eq. 17 at every feature-map position.

    ``y`` is what the module adds to its input (``x + y``): with local heads each head's
    ``A_h`` fills its own band (eq. 17 puts the heads back in place), with global heads the
    heads are averaged over the whole map. The LHC-NetC gate is left out, as in
    :func:`head_contribution_map`.

    Args:
        analysis: from :func:`collect_attention`.
        module: the LHC layer's name.
        image_index: index into the analysed images.

    Returns:
        float64 ``(H, W)``: the Euclidean norm of ``y`` over the ``C`` channels.
    """
    attention = analysis[module]
    _check_image_index(analysis, image_index)
    head_outputs = attention.head_outputs[image_index].astype(np.float64)  # (n, C, L)
    if attention.head_layout == "global":
        term = head_outputs.mean(axis=0)  # (C, H*W)
    else:
        term = np.concatenate(list(head_outputs), axis=-1)  # (C, H*W): bands in row-major order
    return np.linalg.norm(term, axis=0).reshape(attention.height, attention.width)  # (H, W)


def prediction_overlays_figure(analysis: AttentionAnalysis, images: np.ndarray,
                               labels: Sequence[int], class_names: Sequence[str],
                               modules: Sequence[str] | None = None):
    """Sample predictions, each with the attention term of every module over the face.

    One row per image: the face titled with its true class and the predicted class and
    probability, then per LHC module the magnitude of ``y`` (eq. 17,
    :func:`attention_term_map`) stretched over the face, each map on its own colour scale.

    Args:
        analysis: from :func:`collect_attention` on ``images``.
        images: the model-ready ``(N, S, S, 3)`` images analysed (:func:`model_inputs`).
        labels: ``N`` true class indices.
        class_names: class index -> name.
        modules: LHC layer names to show; ``None``: every analysed module.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    modules = list(analysis.modules) if modules is None else list(modules)
    if len(images) != analysis.num_images or len(labels) != analysis.num_images:
        raise ValueError(f"expected the {analysis.num_images} analysed images and labels, got "
                         f"{len(images)} images and {len(labels)} labels")
    apply_style()
    count = analysis.num_images
    fig, axes = plt.subplots(count, 1 + len(modules), squeeze=False,
                             figsize=(2.2 * (1 + len(modules)), 2.4 * count))
    for row in range(count):
        grey = images[row][..., 0]
        height, width = grey.shape
        predicted = int(np.argmax(analysis.probabilities[row]))
        verdict = "right" if predicted == int(labels[row]) else "wrong"
        axes[row, 0].imshow(grey, cmap="gray", vmin=0, vmax=255)
        axes[row, 0].set_title(f"true {class_names[int(labels[row])]}\npredicted "
                               f"{class_names[predicted]} "
                               f"({analysis.probabilities[row, predicted]:.2f}, {verdict})",
                               fontsize=9)
        for column, module in enumerate(modules, 1):
            term = attention_term_map(analysis, module, row)
            axes[row, column].imshow(grey, cmap="gray", vmin=0, vmax=255,
                                     extent=(0, width, height, 0))
            axes[row, column].imshow(term, cmap="magma", alpha=0.55, vmin=0,
                                     extent=(0, width, height, 0), interpolation="nearest")
            if row == 0:
                attention = analysis[module]
                axes[row, column].set_title(f"{module}: |y| (eq. 17)\n{attention.height}x"
                                            f"{attention.width}, {attention.num_heads} heads",
                                            fontsize=9)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle("Predictions with each LHC module's attention term over the face")
    fig.tight_layout()
    return fig


def _band_edges(mask: np.ndarray, scale_y: float, scale_x: float) -> list:
    """Segments of the boundary of a boolean ``(H, W)`` region, in scaled pixel coordinates."""
    padded = np.pad(mask, 1)
    segments = []
    for row, column in zip(*np.nonzero(mask), strict=True):
        top, left = row * scale_y, column * scale_x
        bottom, right = top + scale_y, left + scale_x
        if not padded[row, column + 1]:
            segments.append([(left, top), (right, top)])
        if not padded[row + 2, column + 1]:
            segments.append([(left, bottom), (right, bottom)])
        if not padded[row + 1, column]:
            segments.append([(left, top), (left, bottom)])
        if not padded[row + 1, column + 2]:
            segments.append([(right, top), (right, bottom)])
    return segments


def _new_axes(ax, figsize):
    import matplotlib.pyplot as plt

    apply_style()
    if ax is not None:
        return ax.figure, ax
    return plt.subplots(figsize=figsize)


def overlay_figure(image: np.ndarray | None, contribution_map: np.ndarray, band_mask: np.ndarray,
                   title: str = "", ax=None):
    """A face with a head's contribution overlaid and its band outlined.

    Args:
        image: grey ``(h, w)`` or ``(h, w, 3)`` with values in [0, 255] (channel 0 is shown), or
            ``None`` to draw the map alone (no face).
        contribution_map: ``(h', w')`` magnitudes, e.g. :attr:`ContributionMap.upsampled`; it is
            stretched over the image, so ``h', w'`` need not equal ``h, w``.
        band_mask: bool ``(H, W)``, the band on the feature map; outlined, and the map is shown
            only inside it.
        title: axes title.
        ax: draw into these axes; ``None`` makes a new figure.

    Returns:
        The matplotlib Figure.
    """
    from matplotlib.collections import LineCollection

    fig, ax = _new_axes(ax, (4.2, 4.0))
    if image is not None:
        grey = image[..., 0] if image.ndim == 3 else image
        height, width = grey.shape
        ax.imshow(grey, cmap="gray", vmin=0, vmax=255, extent=(0, width, height, 0))
    else:
        height, width = contribution_map.shape
    rows = np.arange(contribution_map.shape[0]) * band_mask.shape[0] // contribution_map.shape[0]
    columns = np.arange(contribution_map.shape[1]) * band_mask.shape[1] // contribution_map.shape[1]
    outside = ~band_mask[rows][:, columns]
    shown = ax.imshow(np.ma.masked_where(outside, contribution_map), cmap="magma",
                      alpha=0.55 if image is not None else 1.0, vmin=0,
                      extent=(0, width, height, 0), interpolation="nearest")
    edges = _band_edges(band_mask, height / band_mask.shape[0], width / band_mask.shape[1])
    ax.add_collection(LineCollection(edges, colors="#00e5ff", linewidths=1.5))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    ax.set_title(title)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03, label="|A_h| per position")
    return fig


# W_h's colours run from 0 to this quantile of its module's weights (see attention_weights_figure).
WEIGHTS_COLOUR_QUANTILE = 0.99


def weights_colour_limit(analysis: AttentionAnalysis, module: str,
                         image_index: int) -> tuple[float, str]:
    """The top of :func:`attention_weights_figure`'s colour scale for one module and image.

    Over the weights of all the module's heads on the image, so that its heads share one
    scale: their :data:`WEIGHTS_COLOUR_QUANTILE` quantile, so that a few large weights do not
    turn the rest of the matrix (weights near ``1/C``, e.g. 1/512 in a deep module) into a dark
    square as a fixed 0..1 scale does. When the weights are so sparse (nearly one-hot rows)
    that the quantile lies at or below the uniform weight ``1/C``, it says nothing of them and
    the maximum is taken instead.

    Args:
        analysis: what :func:`collect_attention` returned.
        module: the module's name.
        image_index: the image.

    Returns:
        ``(limit, what)``: the weight at the top of the scale and what it is, e.g.
        ``"99th percentile"`` or ``"maximum"``.
    """
    attention = analysis[module]
    weights = attention.weights[image_index]  # (n, C, C)
    quantile = float(np.quantile(weights, WEIGHTS_COLOUR_QUANTILE))
    if quantile > 1.0 / attention.channels:
        return quantile, f"{100 * WEIGHTS_COLOUR_QUANTILE:g}th percentile"
    return float(weights.max()), "maximum"


def attention_weights_figure(analysis: AttentionAnalysis, module: str, head: int,
                             image_index: int, ax=None):
    """Heatmap of the ``C x C`` attention weights ``W_h`` (eq. 15) of one image, module, head.

    Row ``i`` says how new feature map ``i`` mixes the old maps ``j`` inside the head's band;
    each row sums to 1, and a uniform row is ``1/C`` everywhere (eq. 19). The colours run from
    0 to the 99th percentile of the module's weights on the image, or their maximum when the
    rows are nearly one-hot (:func:`weights_colour_limit`), stated in the colour bar's label;
    larger weights take the top colour (the bar's arrow).

    Args:
        analysis: what :func:`collect_attention` returned.
        module: the module's name.
        head: the head, ``0 .. n - 1``.
        image_index: the image.
        ax: draw into these axes; ``None`` makes a new figure.

    Returns:
        The matplotlib Figure.
    """
    attention = analysis[module]
    attention._check_head(head)
    fig, ax = _new_axes(ax, (5.0, 4.2))
    weights = attention.weights[image_index, head]
    limit, limit_name = weights_colour_limit(analysis, module, image_index)
    shown = ax.imshow(weights, cmap="viridis", vmin=0, vmax=limit, interpolation="nearest")
    first, stop = attention.band_rows[head]
    ax.set_title(f"{module} head {head} (rows {first}-{stop - 1}): W_h, image {image_index}")
    ax.set_xlabel("old feature map j (key)")
    ax.set_ylabel("new feature map i (query)")
    ax.grid(False)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03,
                 extend="max" if weights.max() > limit else "neither",
                 label=f"weight, 0 to {module}'s {limit_name} ({limit:.2g})\n"
                       f"uniform = 1/{attention.channels} = {1 / attention.channels:.2g}")
    return fig


def scales_figure(analysis: AttentionAnalysis, module: str, image_index: int,
                  head: int | None = None, ax=None):
    """The dynamic scales ``T_h`` (eq. 13) of one image, sorted, with the temperature axis.

    ``T_h[i]`` is one value per channel ``i``, and neighbouring channels are unrelated: over
    128 or 512 channels, values drawn in channel order jump between 0 and 1 and read as noise.
    Each head's values are drawn sorted, largest first, against the share of channels: the
    curve says how many channels sit near 0, near 1 and between, and heads and modules of
    different widths compare on one axis. Every head of the module is drawn in grey, ``head``
    (if given) in colour; the right axis reads the same curve as the effective temperature
    ``d^(g + T)`` of eq. 14.

    Args:
        analysis: what :func:`collect_attention` returned.
        module: the module's name.
        image_index: the image.
        head: the head to draw in colour, or ``None`` for none.
        ax: draw into these axes; ``None`` makes a new figure.

    Returns:
        The matplotlib Figure; each head's line holds its sorted ``T_h`` as y data.
    """
    from matplotlib.ticker import PercentFormatter

    attention = analysis[module]
    fig, ax = _new_axes(ax, (6.0, 3.6))
    channels = attention.channels
    # Ranks 1..C as shares of the channels, at the middle of each channel's slot.
    share = (np.arange(channels) + 0.5) / channels
    for index, scales in enumerate(attention.scales[image_index]):
        if index != head:
            ax.plot(share, np.sort(scales)[::-1], color="0.7", linewidth=1.0,
                    drawstyle="steps-mid")
    if head is not None:
        attention._check_head(head)
        sorted_scales = np.sort(attention.scales[image_index, head])[::-1]
        above = float(np.mean(sorted_scales > 0.5))
        ax.plot(share, sorted_scales, color="C0", linewidth=2.0, drawstyle="steps-mid",
                label=f"head {head}: {above:.0%} of channels above 0.5")
        if attention.num_heads > 1:
            ax.plot([], [], color="0.7", label="other heads")
        # A descending curve leaves the corner it does not pass through free: below it
        # (lower left) when most values are high, above it (upper right) when most are low.
        ax.legend(loc="lower left" if sorted_scales.mean() > 0.5 else "upper right",
                  fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.set_xlabel(f"share of the {channels} channels, sorted by T_h (largest first)")
    ax.set_ylabel("T_h[i] (sigmoid, eq. 13)")
    ax.set_title(f"{module}: dynamic scales, image {image_index}")
    dim, exponent = attention.head_dim, attention.scale_exponent
    if dim > 1:
        log_dim = math.log(dim)
        right = ax.secondary_yaxis(
            "right", functions=(lambda t: np.power(dim, exponent + np.asarray(t, float)),
                                lambda tau: np.log(np.maximum(tau, 1e-300)) / log_dim - exponent))
        right.set_ylabel(f"temperature {dim}^({exponent:g}+T)")
    return fig


def normalised_row_entropy(weights: np.ndarray) -> np.ndarray:
    """Entropy of each row of attention weights divided by ``log C``, in [0, 1].

    0 is a one-hot row (the ``alpha -> infinity`` limit of eq. 18), 1 the uniform row ``1/C``
    (the ``alpha -> 0`` limit of eq. 19).

    Args:
        weights: ``(..., C)`` rows summing to 1, ``C >= 2``.

    Returns:
        ``(...)`` float64 normalised entropies.
    """
    channels = weights.shape[-1]
    if channels < 2:
        raise ValueError(f"row entropy needs rows of at least 2 weights, got {channels}")
    weights = weights.astype(np.float64)
    # 0 log 0 = 0: a weight the softmax underflowed to zero carries no entropy.
    terms = np.where(weights > 0, weights * np.log(np.where(weights > 0, weights, 1.0)), 0.0)
    # float32 rows sum to 1 only up to rounding, which can push the ratio a hair past [0, 1];
    # adding 0.0 turns the -0.0 of an exactly one-hot row into 0.0.
    return np.clip(-terms.sum(axis=-1) / math.log(channels), 0.0, 1.0) + 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(np.float64)


def dynamic_scaling_summary(analysis: AttentionAnalysis) -> dict[str, dict[str, float]]:
    """Per-module statistics of the effective temperature and of the sharpness of ``W_h``.

    Pooled over every image, head and row ``i`` of a module:

    - ``temperature_*``: ``d^(g + T_h[i])`` (eq. 14); ``temperature_bounds`` is the range
      ``(d^g, d^(g+1))`` the sigmoid allows, ``transformer_temperature`` Vaswani's ``sqrt(d)``.
    - ``entropy_*``: row entropy of ``W_h`` over ``log C``; 1 = uniform rows (eq. 19, a large
      temperature), 0 = one-hot rows (eq. 18, a small one).
    - ``temperature_entropy_spearman``: rank correlation of the two over the rows. Eq. 20 makes
      the temperature a pure sharpness control, so within rows of similar scores a larger
      temperature means a flatter row; a positive value shows that effect across the module.

    Returns:
        module name -> statistics (plain floats, JSON-ready).
    """
    summary = {}
    for name, attention in analysis.modules.items():
        temperature = attention.temperature().ravel()
        entropy = normalised_row_entropy(attention.weights).ravel()
        dim, exponent = attention.head_dim, attention.scale_exponent
        spread = temperature.std() > 0 and entropy.std() > 0
        summary[name] = {
            "head_dim": dim,
            "scale_exponent": exponent,
            "rows": int(temperature.size),
            "temperature_mean": float(temperature.mean()),
            "temperature_median": float(np.median(temperature)),
            "temperature_min": float(temperature.min()),
            "temperature_max": float(temperature.max()),
            "temperature_bounds": [float(dim ** exponent), float(dim ** (exponent + 1))],
            "transformer_temperature": math.sqrt(dim),
            "scale_mean": float(attention.scales.mean()),
            "entropy_mean": float(entropy.mean()),
            "entropy_median": float(np.median(entropy)),
            "entropy_min": float(entropy.min()),
            "entropy_max": float(entropy.max()),
            "temperature_entropy_spearman": (
                float(np.corrcoef(_ranks(temperature), _ranks(entropy))[0, 1]) if spread
                else float("nan")),
        }
    return summary


def _violins(ax, datasets: list[np.ndarray]) -> None:
    """One violin per data set at x = 1, 2, ...; a data set without spread is drawn as a bar."""
    spread = [index for index, values in enumerate(datasets) if np.ptp(values) > 0]
    if spread:
        parts = ax.violinplot([datasets[index] for index in spread],
                              positions=[index + 1 for index in spread], showmedians=True,
                              widths=0.8)
        for body in parts["bodies"]:
            body.set_alpha(0.6)
    for index, values in enumerate(datasets):
        if index not in spread:
            ax.hlines(values[0], index + 0.65, index + 1.35, color="C0", linewidth=2)


def temperature_figure(analysis: AttentionAnalysis):
    """Distribution of the effective temperature ``d^(g + T)`` per module (log scale).

    Each violin pools every image, head and row; the dashed ticks mark the range
    ``(d^g, d^(g+1))`` the sigmoid of eq. 13 allows and the dotted tick the Transformer's
    ``sqrt(d)``. Higher means a smaller ``alpha`` in eqs. 18-20: flatter attention rows.

    Returns:
        The matplotlib Figure.
    """
    from matplotlib.ticker import FuncFormatter

    fig, ax = _new_axes(None, (1.4 * len(analysis.modules) + 2.5, 4.0))
    modules = list(analysis.modules.values())
    _violins(ax, [np.log10(module.temperature().ravel()) for module in modules])
    for position, module in enumerate(modules, 1):
        dim, exponent = module.head_dim, module.scale_exponent
        span = (position - 0.45, position + 0.45)
        for bound in (exponent, exponent + 1):
            ax.hlines(bound * math.log10(dim), *span, colors="0.4", linestyles="--", linewidth=1,
                      label="d^g and d^(g+1) (range of eq. 14)" if position == 1 and bound == exponent
                      else None)
        ax.hlines(0.5 * math.log10(dim), *span, colors="C3", linestyles=":", linewidth=1.5,
                  label="sqrt(d) (Transformer)" if position == 1 else None)
    ax.set_xticks(range(1, len(modules) + 1),
                  [f"{module.name}\nd={module.head_dim}" for module in modules])
    # The violins live in log10 space; ticks at 1-2-5 steps, labelled as temperatures.
    low, high = ax.get_ylim()
    ticks = [math.log10(step * 10.0 ** power) for power in range(math.floor(low), math.ceil(high))
             for step in (1, 2, 5) if low <= math.log10(step * 10.0 ** power) <= high]
    if ticks:  # a span narrower than one 1-2-5 step keeps matplotlib's ticks
        ax.set_yticks(ticks)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{10 ** value:.4g}"))
    ax.set_ylabel("temperature d^(g+T) (log scale)")
    ax.set_title("Dynamic scaling: effective softmax temperature per module")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    return fig


def entropy_figure(analysis: AttentionAnalysis):
    """Distribution of the normalised row entropy of ``W_h`` per module.

    1 is the uniform row of eq. 19 (``alpha -> 0``: an even average of all old feature maps),
    0 the one-hot row of eq. 18 (``alpha -> infinity``: a strict selection of one map).

    Returns:
        The matplotlib Figure.
    """
    fig, ax = _new_axes(None, (1.4 * len(analysis.modules) + 2.5, 4.0))
    modules = list(analysis.modules.values())
    _violins(ax, [normalised_row_entropy(module.weights).ravel() for module in modules])
    ax.axhline(1.0, color="0.4", linestyle="--", linewidth=1, label="uniform rows (eq. 19)")
    ax.axhline(0.0, color="C3", linestyle=":", linewidth=1.5, label="one-hot rows (eq. 18)")
    ax.set_xticks(range(1, len(modules) + 1),
                  [f"{module.name}\nC={module.channels}" for module in modules])
    ax.set_ylim(-0.05, 1.12)
    ax.set_ylabel("row entropy / log C")
    ax.set_title("Sharpness of the attention rows W_h per module")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    return fig


class AttentionExplorer:
    """Browse attention maps image by image: static figures, and ipywidgets on request.

    The analysis of each image viewed is computed once and cached (the last ``cache_size``
    images); changing the module or head only redraws the figure. Widgets are created only by
    :meth:`widget`, so headless runs (tests, papermill) use :meth:`figure` alone.

    Args:
        model: a functional model with LHC layers.
        images: ``(N, ...)`` anything :func:`model_inputs` accepts, e.g. a test split's uint8
            ``(N, 48, 48)`` faces; converted one image at a time, when viewed.
        labels: int ``(N,)`` true classes.
        class_names: class index -> name.
        layer_names: LHC layers to offer; ``None``: all.
        show_images: ``False`` never draws a face: the contribution map is shown on its own.
        cache_size: how many images' analyses to keep.
    """

    def __init__(self, model: keras.Model, images: np.ndarray, labels: np.ndarray,
                 class_names: Sequence[str], layer_names: Sequence[str] | None = None,
                 show_images: bool = True, cache_size: int = 32):
        labels = np.asarray(labels)
        if len(labels) != len(images) or len(images) == 0:
            raise ValueError(f"images and labels must be non-empty and of equal length, got "
                             f"{len(images)} images and {len(labels)} labels")
        if labels.min() < 0 or labels.max() >= len(class_names):
            raise ValueError(f"labels must lie in [0, {len(class_names)}) for class names "
                             f"{list(class_names)}, got {labels.min()}..{labels.max()}")
        self.collector = AttentionCollector(model, layer_names)
        self.images, self.labels = images, labels
        self.class_names = tuple(class_names)
        self.show_images = show_images
        self.cache_size = cache_size
        self._cache: collections.OrderedDict[int, tuple] = collections.OrderedDict()

    @property
    def module_heads(self) -> dict[str, int]:
        """LHC layer name -> number of heads."""
        return {name: layer.num_heads for name, layer in self.collector.layers.items()}

    def view(self, image_index: int) -> tuple[np.ndarray, AttentionAnalysis]:
        """The model-ready image ``(S, S, 3)`` and its one-image analysis (cached)."""
        if not 0 <= image_index < len(self.images):
            raise ValueError(f"image_index {image_index} is outside 0..{len(self.images) - 1}")
        if image_index in self._cache:
            self._cache.move_to_end(image_index)
        else:
            image = model_inputs(self.collector.model, self.images[image_index:image_index + 1])
            self._cache[image_index] = (image[0], self.collector.collect(image))
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return self._cache[image_index]

    def figure(self, image_index: int, module: str, head: int):
        """The explorer's view as a static figure: contribution overlay, ``W_h``, ``T_h``.

        Returns:
            The matplotlib Figure.
        """
        import matplotlib.pyplot as plt

        apply_style()
        image, analysis = self.view(image_index)
        contribution = head_contribution_map(analysis, module, head, 0)
        fig, axes = plt.subplots(1, 3, figsize=(15.5, 4.4),
                                 gridspec_kw={"width_ratios": [1, 1.1, 1.5]})
        predicted = int(np.argmax(analysis.probabilities[0]))
        first, stop = contribution.band_rows
        overlay_figure(image if self.show_images else None,
                       contribution.upsampled if self.show_images else contribution.grid,
                       contribution.band_mask, f"{module} head {head}: rows {first}-{stop - 1}",
                       ax=axes[0])
        attention_weights_figure(analysis, module, head, 0, ax=axes[1])
        axes[1].set_title(f"W_h (eq. 15), {analysis[module].channels} channels")
        scales_figure(analysis, module, 0, head, ax=axes[2])
        axes[2].set_title("T_h (eq. 13), channels sorted")
        fig.suptitle(f"image {image_index}: true {self.class_names[self.labels[image_index]]}, "
                     f"predicted {self.class_names[predicted]} "
                     f"({analysis.probabilities[0, predicted]:.2f})")
        fig.tight_layout()
        return fig

    def widget(self):
        """ipywidgets controls (class filter, image, module, head) above the redrawn figure.

        The figure is rendered to PNG into an ``ipywidgets.Image``, which works in JupyterLab
        and needs no display to be built or updated.

        Returns:
            An ``ipywidgets.VBox``; display it in a notebook cell.
        """
        import ipywidgets as widgets
        import matplotlib.pyplot as plt

        class_filter = widgets.Dropdown(
            options=[("all classes", -1)] + [(name, k) for k, name in enumerate(self.class_names)],
            value=-1, description="class")
        picker = widgets.IntSlider(min=0, max=len(self.images) - 1, description="image",
                                   continuous_update=False)
        caption = widgets.Label()
        heads = self.module_heads
        module = widgets.Dropdown(options=list(heads), description="module")
        head = widgets.IntSlider(min=0, max=heads[module.value] - 1, description="head",
                                 continuous_update=False)
        picture = widgets.Image(format="png")
        # "quiet" holds back the redraws that resetting one control's value would trigger.
        state = {"indices": np.arange(len(self.images)), "quiet": False}

        def redraw(_=None):
            if state["quiet"]:
                return
            if not len(state["indices"]):
                caption.value = "no image of this class"
                return
            image_index = int(state["indices"][picker.value])
            caption.value = (f"#{image_index} ({self.class_names[self.labels[image_index]]}), "
                             f"{picker.value + 1} of {len(state['indices'])}")
            fig = self.figure(image_index, module.value, head.value)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=80)
            plt.close(fig)
            picture.value = buffer.getvalue()

        def filter_changed(_):
            wanted = class_filter.value
            state["indices"] = (np.arange(len(self.images)) if wanted < 0
                                else np.flatnonzero(self.labels == wanted))
            state["quiet"] = True
            picker.value = 0
            picker.max = max(len(state["indices"]) - 1, 0)
            picker.disabled = not len(state["indices"])
            state["quiet"] = False
            redraw()

        def module_changed(_):
            state["quiet"] = True
            head.value = 0
            head.max = heads[module.value] - 1
            state["quiet"] = False
            redraw()

        class_filter.observe(filter_changed, names="value")
        module.observe(module_changed, names="value")
        picker.observe(redraw, names="value")
        head.observe(redraw, names="value")
        redraw()
        return widgets.VBox([widgets.HBox([class_filter, picker, caption]),
                             widgets.HBox([module, head]), picture])
