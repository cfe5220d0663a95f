"""Figures of the attention maps and of the dynamic scaling (paper eqs. 13-20).

- One image, module and head: :func:`overlay_figure` (a head's contribution on its band,
  eq. 17), :func:`attention_weights_figure` (``W_h``, eq. 15), :func:`scales_figure`
  (``T_h``, eq. 13); :func:`prediction_overlays_figure` shows ``|y|`` of every module over
  sample faces.
- Per module, pooled over images: :func:`temperature_figure` (the effective softmax
  temperature ``d^(g+T)``, eq. 14) and :func:`entropy_figure` (the sharpness of the rows of
  ``W_h``, eqs. 18-19).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lhc.analysis.attention.collect import AttentionAnalysis
from lhc.analysis.attention.maps import attention_term_map
from lhc.analysis.attention.scaling import normalised_row_entropy
from lhc.plots import apply_style

__all__ = [
    "WEIGHTS_COLOUR_QUANTILE",
    "attention_weights_figure",
    "entropy_figure",
    "overlay_figure",
    "prediction_overlays_figure",
    "scales_figure",
    "temperature_figure",
    "weights_colour_limit",
]


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
