"""What is in a FER2013-like data set: counts, pixel statistics, blanks, duplicates, leakage.

:func:`data_report` summarises a reader's result as a JSON-ready dict; the figure functions
draw it for notebooks and reports (style from :func:`lhc.plots.apply_style`; saving is the
caller's job, through :func:`lhc.plots.save_figure`).

Duplicates are exact: two rows are duplicates when their 2,304 grey levels are identical,
found by a 128-bit BLAKE2b digest of each image (a chance collision among 10^5 images has
probability about 10^-29). Rows are taken in split order (``train``, ``val``, ``test``), so
"repeated rows" counts every row whose image an earlier row already has. The paper notes that
training and test images differ in brightness (section 3); the per-split pixel statistics show
how much.
"""

from __future__ import annotations

import hashlib

import numpy as np

from lhc.plots import apply_style

# Sums of squares are taken this many images at a time.
_CHUNK = 4096


def data_report(data) -> dict:
    """Summarise a data set.

    Args:
        data: a reader's result (:class:`lhc.data.dataset.FER2013Data` or alike): ``splits``
            (name -> split with uint8 ``images`` ``(N, 48, 48)`` and int ``labels`` ``(N,)``),
            ``class_names``, ``split_convention``, ``test_is_carved`` and ``notes``.

    Returns:
        A JSON-ready dict:

        - ``class_names``, ``split_convention``, ``test_is_carved``, ``notes``: as in ``data``.
        - ``splits``: name -> ``rows``, ``class_counts`` (class name -> rows),
          ``pixel_mean`` and ``pixel_std`` (over all pixels of the split, grey levels 0..255),
          ``blank_images`` (all pixels 0).
        - ``duplicates``: over all splits together, ``repeated_rows`` (rows whose image an
          earlier row has), ``groups`` (distinct images held by more than one row),
          ``groups_across_splits`` and ``groups_by_splits`` (e.g. ``{"train+val": 270}``),
          ``groups_with_conflicting_labels``; per split, ``within_split`` (``repeated_rows``
          and ``groups`` counting that split alone) and ``rows_also_in_other_splits``.
    """
    names = list(data.splits)
    splits = {}
    for name in names:
        split = data.splits[name]
        pixel_sums, mean, std = _pixel_statistics(split.images)
        counts = np.bincount(split.labels, minlength=len(data.class_names))
        splits[name] = {
            "rows": len(split.labels),
            "class_counts": dict(zip(data.class_names, counts.tolist(), strict=True)),
            "pixel_mean": mean,
            "pixel_std": std,
            "blank_images": int((pixel_sums == 0).sum()),
        }
    return {
        "class_names": list(data.class_names),
        "split_convention": data.split_convention,
        "test_is_carved": bool(data.test_is_carved),
        "notes": list(data.notes),
        "splits": splits,
        "duplicates": _duplicates(data, names),
        # Rows a reader skipped (on_error="skip") are counted here, never dropped silently.
        "skipped_rows": [
            {"file": str(entry.file), "line": entry.line, "reason": entry.reason}
            for entry in getattr(data, "skipped", [])
        ],
    }


def _pixel_statistics(images: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Per-image sums of grey levels, int64 ``(N,)``, and the mean and std over all pixels.

    Exact integer sums, a chunk of images at a time: a float64 copy of the full training set
    would take half a gigabyte.
    """
    flat = images.reshape(len(images), -1)  # (N, H*W)
    sums = flat.sum(axis=1, dtype=np.int64)
    # A 48x48 image's sum of squares (at most 255^2 * 2304) fits in int32 products.
    square_sum = sum(int(np.einsum("ij,ij->", chunk := flat[start:start + _CHUNK].astype(np.int32),
                                   chunk, dtype=np.int64))
                     for start in range(0, len(flat), _CHUNK))
    if not flat.size:
        return sums, float("nan"), float("nan")
    total, count = int(sums.sum()), flat.size
    # Python integers keep n * sum(x^2) - (sum x)^2 exact: no cancellation in the variance.
    return sums, total / count, float(np.sqrt((count * square_sum - total ** 2) / count ** 2))


def _duplicates(data, names: list[str]) -> dict:
    digests = b"".join(hashlib.blake2b(np.ascontiguousarray(image), digest_size=16).digest()
                       for name in names for image in data.splits[name].images)
    keys = np.frombuffer(digests, dtype=np.dtype((np.void, 16)))
    _, group, rows_per_group = np.unique(keys, return_inverse=True, return_counts=True)
    group = group.reshape(-1)  # numpy 2 keeps the input's shape; one id per row
    split_index = np.repeat(np.arange(len(names)), [len(data.splits[n].labels) for n in names])
    labels = np.concatenate([np.asarray(data.splits[n].labels, np.int64) for n in names]
                            or [np.zeros(0, np.int64)])
    num_groups = len(rows_per_group)

    # One bit per split: which splits hold each distinct image.
    split_mask = np.zeros(num_groups, dtype=np.int64)
    np.bitwise_or.at(split_mask, group, 1 << split_index)
    num_splits = np.array([bin(mask).count("1") for mask in range(1 << len(names))])
    across = num_splits[split_mask] > 1
    by_splits = {}
    for mask, count in zip(*np.unique(split_mask[across], return_counts=True), strict=True):
        key = "+".join(name for bit, name in enumerate(names) if mask >> bit & 1)
        by_splits[key] = int(count)

    labels_per_group = np.bincount(np.unique(np.stack([group, labels], axis=1), axis=0)[:, 0],
                                   minlength=num_groups)
    within, also_elsewhere = {}, {}
    for index, name in enumerate(names):
        rows = split_index == index
        counts_here = np.bincount(group[rows], minlength=num_groups)
        within[name] = {"repeated_rows": int(rows.sum() - (counts_here > 0).sum()),
                        "groups": int((counts_here > 1).sum())}
        also_elsewhere[name] = int((split_mask[group[rows]] & ~(1 << index) != 0).sum())
    return {
        "repeated_rows": int(len(group) - num_groups),
        "groups": int((rows_per_group > 1).sum()),
        "groups_across_splits": int(across.sum()),
        "groups_by_splits": by_splits,
        "groups_with_conflicting_labels": int((labels_per_group > 1).sum()),
        "within_split": within,
        "rows_also_in_other_splits": also_elsewhere,
    }


def class_distribution_figure(report: dict):
    """Bars of rows per class, one panel per split, each bar labelled with its count.

    Args:
        report: the dict of :func:`data_report`.

    Returns:
        A matplotlib Figure with one Axes per split and one bar per class in each.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    apply_style()
    class_names, splits = report["class_names"], report["splits"]
    colours = sns.color_palette(n_colors=len(class_names))
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 3.8), squeeze=False,
                             layout="constrained")
    for ax, (name, stats) in zip(axes[0], splits.items(), strict=True):
        counts = [stats["class_counts"][class_name] for class_name in class_names]
        bars = ax.bar(class_names, counts, color=colours)
        ax.bar_label(bars, fontsize=9)
        ax.set_title(f"{name}: {stats['rows']:,} images")
        ax.set_ylabel("images")
        ax.tick_params(axis="x", labelrotation=45)
        ax.margins(y=0.12)
    fig.suptitle("Class distribution per split")
    return fig


def pixel_statistics_figure(data):
    """Histogram of per-image mean grey level, one outline per split (density, comparable).

    Args:
        data: a reader's result, as for :func:`data_report`.

    Returns:
        A matplotlib Figure with one Axes; the legend gives each split's pixel mean and std.
    """
    import matplotlib.pyplot as plt

    apply_style()
    fig, ax = plt.subplots(figsize=(6.5, 4.6), layout="constrained")
    bins = np.linspace(0, 255, 52)
    for name, split in data.splits.items():
        pixel_sums, mean, std = _pixel_statistics(split.images)
        image_means = pixel_sums / (split.images.shape[1] * split.images.shape[2])
        ax.hist(image_means, bins=bins, density=True, histtype="step", linewidth=1.8,
                label=f"{name}: pixel mean {mean:.1f}, std {std:.1f}")
    ax.set_xlabel("mean grey level of an image (0 = black, 255 = white)")
    ax.set_ylabel("density")
    ax.set_xlim(0, 255)
    ax.set_title("Brightness per split")
    fig.legend(loc="outside lower center", ncols=min(len(data.splits), 2), fontsize=9)
    return fig


def sample_grid(images: np.ndarray, labels: np.ndarray, class_names, per_class: int = 8,
                seed: int = 0):
    """A grid of random examples: one row per class, up to ``per_class`` images each.

    Args:
        images: uint8 ``(N, H, W)``.
        labels: int ``(N,)`` indices into ``class_names``.
        class_names: class index -> name.
        per_class: images per row; a class with fewer images shows all of them.
        seed: seed of the draw, so a report shows the same examples each time.

    Returns:
        A matplotlib Figure of ``len(class_names)`` x ``per_class`` Axes.
    """
    import matplotlib.pyplot as plt

    apply_style()
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(class_names), per_class, squeeze=False,
                             figsize=(1.1 * per_class + 1.2, 1.15 * len(class_names)))
    for label, (row_axes, class_name) in enumerate(zip(axes, class_names, strict=True)):
        rows = np.flatnonzero(labels == label)
        chosen = np.sort(rng.choice(rows, size=min(per_class, len(rows)), replace=False))
        for ax, row in zip(row_axes, chosen, strict=False):
            ax.imshow(images[row], cmap="gray", vmin=0, vmax=255,
                      interpolation="nearest")  # pixels as they are, and small files
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
        row_axes[0].set_ylabel(f"{class_name}\n({len(rows):,})", rotation=0, ha="right",
                               va="center", fontsize=10)
    fig.suptitle("Random examples per class (in brackets: images in the class)")
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    return fig


def duplicates_figure(report: dict):
    """Duplicates and leakage: overall counts (left) and what each split holds (right).

    Args:
        report: the dict of :func:`data_report`.

    Both count axes start at 0 with integer ticks. A panel whose counts are all zero says so
    in words ("no duplicates"), over bars of zero length: an all-zero bar chart otherwise
    gets an axis from -0.06 to 0.06 and looks like a drawing error.

    Returns:
        A matplotlib Figure with two Axes: four horizontal bars (repeated rows, groups,
        groups across splits, groups with conflicting labels) and, per split, three bars
        (blank images, rows repeated within the split, rows also in another split).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    apply_style()
    duplicates, names = report["duplicates"], list(report["splits"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained",
                                      gridspec_kw={"width_ratios": [1, 1.3]})
    overall = {
        "rows repeating an\nearlier image": duplicates["repeated_rows"],
        "groups of identical\nimages": duplicates["groups"],
        "groups across splits": duplicates["groups_across_splits"],
        "groups with\nconflicting labels": duplicates["groups_with_conflicting_labels"],
    }
    bars = left.barh(list(overall)[::-1], list(overall.values())[::-1], color="0.45")
    left.bar_label(bars, padding=3, fontsize=9)
    left.set_xlabel("count")
    left.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    left.set_title("Exact duplicates, all splits")
    # 18% beyond the longest bar leaves room for its count label.
    left.set_xlim(0, 1.18 * max(1, *overall.values()))
    if not any(overall.values()):
        _say_in_panel(left, "no duplicates:\nevery image occurs once")

    per_split = {
        "blank (all 0)": [report["splits"][name]["blank_images"] for name in names],
        "repeated within split": [duplicates["within_split"][name]["repeated_rows"]
                                  for name in names],
        "also in another split": [duplicates["rows_also_in_other_splits"][name]
                                  for name in names],
    }
    positions = np.arange(len(names))
    width = 0.8 / len(per_split)
    colours = sns.color_palette(n_colors=len(per_split))
    offsets = (np.arange(len(per_split)) - (len(per_split) - 1) / 2) * width  # centred groups
    for offset, (kind, counts), colour in zip(offsets, per_split.items(), colours, strict=True):
        bars = right.bar(positions + offset, counts, width, label=kind, color=colour)
        right.bar_label(bars, fontsize=8)
    right.set_xticks(positions, names)
    right.set_ylabel("images")
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_title("Per split: blanks and leakage")
    right.set_ylim(0, 1.15 * max(1, *(count for counts in per_split.values()
                                      for count in counts)))
    if not any(count for counts in per_split.values() for count in counts):
        _say_in_panel(right, "no blank images,\nno duplicates within or across splits")
    else:  # an all-zero panel has no bar for the legend to name
        # Right of the bars: inside, "best" still lands on a bar when every split has some.
        right.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _say_in_panel(ax, text: str) -> None:
    """Write ``text`` in the middle of ``ax``, on a white box above the grid."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12,
            bbox={"boxstyle": "round,pad=0.5", "facecolor": "white", "edgecolor": "0.6"})
