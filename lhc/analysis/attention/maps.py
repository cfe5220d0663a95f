"""Band geometry on the feature map and attention maps of one image (paper eqs. 16-17).

- :func:`head_contribution_map` places the magnitude of a head's output ``A_h`` back on its
  horizontal band of the ``H x W`` feature map (eq. 17) and upsamples it to the input image.
- :func:`attention_term_map` gives the magnitude of the whole attention term ``y`` (eq. 17).

The bands themselves are :meth:`ModuleAttention.band`, :attr:`ModuleAttention.band_rows` and
:meth:`ModuleAttention.band_mask`, computed by :func:`lhc.layers.head_band`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lhc.analysis.attention.collect import AttentionAnalysis

__all__ = [
    "CONTRIBUTION_REDUCTIONS",
    "ContributionMap",
    "attention_term_map",
    "head_contribution_map",
]

CONTRIBUTION_REDUCTIONS = ("l2", "sum")


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
