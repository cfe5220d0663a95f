"""One figure style for the whole workbench, and atomic saving of every figure as PNG and SVG.

Notebooks and reports call :func:`apply_style` once and :func:`save_figure` for each figure,
so that every figure of a report looks alike and is readable in print (large fonts, a
colour-blind-safe palette, no chart junk).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

from lhc._io import atomic_path

# The seven FER2013 classes keep the same colour in every figure of a report.
CLASS_PALETTE = "colorblind"
STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "image.cmap": "viridis",
}


def apply_style() -> None:
    """Set the workbench's matplotlib/seaborn style (idempotent)."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="ticks", palette=CLASS_PALETTE)
    matplotlib.rcParams.update(STYLE)


def save_figure(fig, path: str | os.PathLike, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Save ``fig`` once per format, atomically, at ``path`` with each format's suffix.

    Args:
        fig: a matplotlib Figure.
        path: destination without or with a suffix (the suffix is replaced per format).
        formats: file formats to write.

    Returns:
        The written paths, in the order of ``formats``.
    """
    base = Path(path)
    if base.suffix.lstrip(".") in {"png", "svg", "pdf"}:
        base = base.with_suffix("")
    written = []
    for fmt in formats:
        target = base.with_name(f"{base.name}.{fmt}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt)
        written.append(target)
    return written


def image_rows_figure(rows, title: str):
    """One row of grey images per entry, e.g. an input batch and its augmented passes.

    Args:
        rows: mapping of row label -> images ``(N, H, W)`` or ``(N, H, W, C)`` with grey
            levels in [0, 255] (channel 0 is shown).
        title: figure title.

    Returns:
        A matplotlib Figure with ``len(rows)`` rows of ``max(N)`` images.
    """
    import matplotlib.pyplot as plt

    apply_style()
    num_columns = max(len(batch) for batch in rows.values())
    fig, axes = plt.subplots(len(rows), num_columns, squeeze=False,
                             figsize=(1.0 * num_columns, 1.1 * len(rows) + 0.4))
    for row_axes, (label, batch) in zip(axes, rows.items(), strict=True):
        for ax in row_axes:
            ax.set_axis_off()
        for ax, image in zip(row_axes, batch, strict=False):
            ax.imshow(image[..., 0] if image.ndim == 3 else image, cmap="gray", vmin=0, vmax=255)
        row_axes[0].set_title(label, loc="left", fontsize=9)
    fig.suptitle(title)
    return fig
