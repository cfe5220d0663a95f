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
