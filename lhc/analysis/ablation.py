"""Ablations of LHC-Net's modules without retraining (paper section 2.2, "Local Multi-Head").

The paper measured how many heads LHC-Net needs by taking trained LHC modules out again, two
ways, with no further training (the pre-trained ResNet backbone carries the network alone):

- **switch off**: the module passes its input through (``LHC(enabled=False)``), so the network
  computes exactly what the backbone would at that point;
- **de-train**: the module's weights and biases go back to their values before training.

It found that at least 16 of its 31 heads, the first two modules, were needed to keep the
accuracy (:data:`PAPER_MODULES_NEEDED`). :func:`ablate` evaluates every subset of a model's
modules (32 for LHC-Net's five) in both modes on a split; :func:`smallest_sufficient_subset`
applies the paper's question to the table.

Initial weights for de-training come from training, when it kept them, or are re-created by
building each module afresh under a seed (:func:`initial_lhc_weights`): the same distribution
as the run's initialisation, not the same draw unless the seed sequence of the run is replayed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence

import keras
import numpy as np

from lhc.layers import LHC

__all__ = [
    "ABLATION_MODES",
    "PAPER_HEADS_NEEDED",
    "PAPER_HEADS_TOTAL",
    "PAPER_MODULES_NEEDED",
    "ablate",
    "ablated_copy",
    "ablation_figure",
    "ablation_heatmap",
    "ablation_heads_figure",
    "accuracy_standard_error",
    "initial_lhc_weights",
    "lhc_modules",
    "model_input_batches",
    "module_subsets",
    "smallest_sufficient_subset",
]

ABLATION_MODES = ("switch_off", "detrain")
PAPER_HEADS_NEEDED = 16
PAPER_HEADS_TOTAL = 31
PAPER_MODULES_NEEDED = ("lhc1", "lhc2")
MODE_TITLES = {"switch_off": "switched off", "detrain": "de-trained"}


def lhc_modules(model: keras.Model) -> list[LHC]:
    """The LHC layers of ``model`` in graph order (``lhc1``..``lhc5`` for LHC-Net).

    Raises:
        ValueError: the model has no LHC layer.
    """
    modules = [layer for layer in model.layers if isinstance(layer, LHC)]
    if not modules:
        raise ValueError(
            f"model '{model.name}' has no LHC layers; ablations and head analyses need an "
            "LHC-Net (lhc.models.build_lhc_net) or a model from lhc.models.insert_lhc"
        )
    return modules


def model_input_batches(
    model: keras.Model, images: np.ndarray, labels: np.ndarray | None = None, batch_size: int = 32
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Model-ready batches of a split's grey images, in order, through the evaluation pipeline.

    Args:
        model: a model with a square ``(S, S, 3)`` input.
        images: uint8 ``(N, H, W)`` grey images, as in :class:`lhc.data.Split`.
        labels: int ``(N,)`` class indices, or None (analyses that need no labels).
        batch_size: images per batch.

    Yields:
        ``(batch, labels)``: float32 ``(B, S, S, 3)`` pixels in [0, 255] and int32 ``(B,)``.
    """
    from lhc.data.pipeline import preprocessed_batches

    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 3 or shape[0] is None:
        raise ValueError(
            f"model '{model.name}' has input shape {shape}; expected a square (S, S, 3) input"
        )
    labels = np.zeros(len(images), np.int32) if labels is None else np.asarray(labels, np.int32)
    for start, batch in zip(range(0, len(images), batch_size),
                            preprocessed_batches(images, shape[0], batch_size), strict=True):
        yield batch, labels[start:start + batch_size]


def module_subsets(names: Sequence[str]) -> list[tuple[str, ...]]:
    """Every subset of ``names`` (``2**len(names)``), by size, then in the order of ``names``."""
    return [
        subset for size in range(len(names) + 1) for subset in itertools.combinations(names, size)
    ]


def initial_lhc_weights(model: keras.Model, seed: int) -> dict[str, list[np.ndarray]]:
    """Fresh initial weights for every LHC module of ``model``, drawn under ``seed``.

    Each module is rebuilt from its config on its own input shape, so its weights come from
    the layer's initialisers exactly as at the start of training. ``keras.utils.set_random_seed``
    seeds Python, NumPy and the backend globally, as the training runner does.

    Args:
        model: a model with LHC modules.
        seed: the seed.

    Returns:
        ``{module name: [weights in layer.get_weights() order]}``.
    """
    keras.utils.set_random_seed(seed)
    initial = {}
    for layer in lhc_modules(model):
        fresh = LHC.from_config(layer.get_config())
        fresh.build((None, layer.height, layer.width, layer.channels))
        initial[layer.name] = fresh.get_weights()
    return initial


def _check_initial_weights(modules: Sequence[LHC], initial: Mapping) -> None:
    names = [layer.name for layer in modules]
    unknown = sorted(set(initial) - set(names))
    missing = [name for name in names if name not in initial]
    if unknown or missing:
        raise ValueError(
            f"initial_weights: keys must be the model's LHC modules {names}; "
            f"unknown {unknown}, missing {missing}"
        )
    for layer in modules:
        expected = [(weight.path, tuple(weight.shape)) for weight in layer.weights]
        given = [np.shape(array) for array in initial[layer.name]]
        if given != [shape for _, shape in expected]:
            raise ValueError(
                f"initial_weights['{layer.name}']: shapes {given}, expected "
                f"{[f'{path} {shape}' for path, shape in expected]}"
            )


def _resolve_initial_weights(model, modes, initial_weights):
    if "detrain" not in modes:
        return None
    if isinstance(initial_weights, Mapping):
        _check_initial_weights(lhc_modules(model), initial_weights)
        return initial_weights
    if isinstance(initial_weights, int) and not isinstance(initial_weights, bool):
        return initial_lhc_weights(model, initial_weights)
    raise ValueError(
        "mode 'detrain' needs initial_weights: a dict {module name: list of arrays} kept by "
        f"training, or an int seed to re-create them; got {initial_weights!r}"
    )


def _copy(model: keras.Model) -> keras.Model:
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _configure(copy: keras.Model, trained: Mapping, enabled: Mapping, ablated, mode, initial):
    """Set every LHC module of ``copy``: trained and as given, or ablated in ``mode``."""
    for layer in lhc_modules(copy):
        off = layer.name in ablated
        # `enabled` is read at every eager call, so the copy is reconfigured in place.
        layer.enabled = enabled[layer.name] and not (off and mode == "switch_off")
        use_initial = off and mode == "detrain"
        layer.set_weights(initial[layer.name] if use_initial else trained[layer.name])


def _check_modes(modes: Sequence[str]) -> tuple[str, ...]:
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    unknown = [mode for mode in modes if mode not in ABLATION_MODES]
    if unknown or not modes:
        raise ValueError(f"modes must be a non-empty subset of {ABLATION_MODES}, got {modes!r}")
    return modes


def ablated_copy(
    model: keras.Model,
    modules: Sequence[str],
    mode: str = "switch_off",
    initial_weights: Mapping | int | None = None,
) -> keras.Model:
    """A copy of ``model`` with the named LHC modules switched off or de-trained.

    Args:
        model: a model with LHC modules; it is left unchanged.
        modules: names of the modules to ablate (e.g. ``("lhc3", "lhc4", "lhc5")``).
        mode: ``"switch_off"`` (``enabled=False``: the module returns its input) or
            ``"detrain"`` (the module's weights reset to ``initial_weights``).
        initial_weights: for ``"detrain"``: ``{module name: list of arrays}`` or an int seed
            for :func:`initial_lhc_weights`.

    Returns:
        A new ``keras.Model`` with the same weights apart from the ablation.
    """
    (mode,) = _check_modes((mode,))
    layers = lhc_modules(model)
    unknown = sorted(set(modules) - {layer.name for layer in layers})
    if unknown:
        raise ValueError(
            f"model '{model.name}' has no LHC module(s) {unknown}; its modules are "
            f"{[layer.name for layer in layers]}"
        )
    initial = _resolve_initial_weights(model, (mode,), initial_weights)
    copy = _copy(model)
    trained = {layer.name: layer.get_weights() for layer in layers}
    enabled = {layer.name: layer.enabled for layer in layers}
    _configure(copy, trained, enabled, set(modules), mode, initial)
    return copy


def _accuracy(model: keras.Model, images, labels, batch_size: int) -> float:
    correct = 0
    for batch, batch_labels in model_input_batches(model, images, labels, batch_size):
        # An eager call, not predict(): a traced predict function would keep the
        # `enabled` flags it was traced with.
        probabilities = keras.ops.convert_to_numpy(model(batch, training=False))
        correct += int(np.sum(np.argmax(probabilities, axis=-1) == batch_labels))
    return correct / len(labels)


def ablate(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    modes: Sequence[str] = ABLATION_MODES,
    initial_weights: Mapping | int | None = None,
    batch_size: int = 64,
) -> list[dict]:
    """Accuracy of ``model`` with every subset of its LHC modules ablated, in each mode.

    No retraining: each combination is the trained model with the subset's modules switched
    off or de-trained (:func:`ablated_copy`). The first row of each mode (nothing ablated) is the
    model itself; the last (all ablated) in ``"switch_off"`` mode is the backbone alone.

    Args:
        model: a trained model with LHC modules (e.g. LHC-Net from stage 4); left unchanged.
        images: uint8 ``(N, H, W)`` grey images of the evaluation split.
        labels: int ``(N,)`` class indices.
        modes: any of :data:`ABLATION_MODES`.
        initial_weights: needed for ``"detrain"``: ``{module name: list of arrays}`` kept by
            training, or an int seed to re-create them (:func:`initial_lhc_weights`).
        batch_size: evaluation batch size.

    Returns:
        One dict per (mode, subset), ``len(modes) * 2**num_modules`` rows, in the order of
        :func:`module_subsets`: ``mode``, ``modules_off`` (tuple of names), ``heads_off``
        (heads in those modules), ``heads_total``, ``accuracy``, ``num_images`` (the images
        the accuracy is measured on, for its standard error: :func:`accuracy_standard_error`).
    """
    modes = _check_modes(modes)
    layers = lhc_modules(model)
    initial = _resolve_initial_weights(model, modes, initial_weights)
    names = [layer.name for layer in layers]
    heads = {layer.name: layer.num_heads for layer in layers}
    trained = {layer.name: layer.get_weights() for layer in layers}
    enabled = {layer.name: layer.enabled for layer in layers}
    copy = _copy(model)
    rows = []
    for mode in modes:
        for subset in module_subsets(names):
            _configure(copy, trained, enabled, set(subset), mode, initial)
            rows.append({
                "mode": mode,
                "modules_off": subset,
                "heads_off": sum(heads[name] for name in subset),
                "heads_total": sum(heads.values()),
                "accuracy": _accuracy(copy, images, labels, batch_size),
                "num_images": len(labels),
            })
    return rows


def smallest_sufficient_subset(rows: Sequence[dict], mode: str, tolerance: float = 0.005) -> dict:
    """The paper's question: the fewest heads that keep the full model's accuracy.

    Among the combinations of ``mode`` whose accuracy is at least the full model's minus
    ``tolerance``, the one keeping the fewest heads (ties: the higher accuracy). The paper found
    16 of 31 heads, modules ``lhc1`` and ``lhc2`` (:data:`PAPER_MODULES_NEEDED`).

    Args:
        rows: the table of :func:`ablate`.
        mode: one of :data:`ABLATION_MODES` present in ``rows``.
        tolerance: accuracy drop (a fraction, e.g. 0.005 = half a point) still counted as kept.

    Returns:
        ``mode``, ``modules_kept``, ``heads_kept``, ``heads_total``, ``accuracy``,
        ``full_accuracy``, ``tolerance``.
    """
    mode_rows = [row for row in rows if row["mode"] == mode]
    full = [row for row in mode_rows if not row["modules_off"]]
    if not full:
        raise ValueError(f"rows hold no '{mode}' combination with no module off; "
                         f"modes present: {sorted({row['mode'] for row in rows})}")
    full_accuracy = full[0]["accuracy"]
    sufficient = [row for row in mode_rows if row["accuracy"] >= full_accuracy - tolerance]
    best = min(sufficient, key=lambda row: (row["heads_total"] - row["heads_off"], -row["accuracy"]))
    return {
        "mode": mode,
        "modules_kept": tuple(
            name for name in _module_order(rows) if name not in best["modules_off"]
        ),
        "heads_kept": best["heads_total"] - best["heads_off"],
        "heads_total": best["heads_total"],
        "accuracy": best["accuracy"],
        "full_accuracy": full_accuracy,
        "tolerance": tolerance,
    }


def _module_order(rows: Sequence[dict]) -> tuple[str, ...]:
    """Module names in graph order: the last subset of a mode holds all of them."""
    return max((row["modules_off"] for row in rows), key=len)


def accuracy_standard_error(accuracy, num_images):
    """Binomial standard error of an accuracy measured on ``num_images`` images.

    ``sqrt(p (1 - p) / n)``: how far the accuracy of one model moves from one draw of ``n``
    test images to another. The ablation figures use it as the standard error of a
    combination's difference to the full model (:func:`ablation_figure`).

    Args:
        accuracy: ``p``, a fraction in [0, 1] (scalar or array).
        num_images: ``n``, the images the accuracy was measured on.

    Returns:
        The standard error as a fraction (scalar or array, like ``accuracy``).
    """
    accuracy = np.asarray(accuracy, dtype=np.float64)
    return np.sqrt(accuracy * (1.0 - accuracy) / num_images)


def _num_images(rows: Sequence[dict]) -> int | None:
    """The images every row was measured on, or None when the rows do not say (older tables)."""
    counts = {row.get("num_images") for row in rows}
    if len(counts) != 1 or None in counts:
        return None
    return int(counts.pop())


def ablation_figure(rows: Sequence[dict], mode: str):
    """Each combination's accuracy minus the full model's, in points, with standard errors.

    Every combination of one mode is measured against the full model (nothing ablated) on the
    same images, so the bars show the difference ``p_subset - p_full`` in percentage points;
    the accuracies themselves (e.g. all within 0.649-0.659) would be bars of one height. The
    error bar of each is one binomial standard error

        SE = sqrt(p (1 - p) / n),

    with ``p`` the combination's accuracy and ``n`` the rows' ``num_images``
    (:func:`accuracy_standard_error`): the full model is the fixed reference, and the error
    says how much the combination's accuracy moves from one draw of ``n`` images to another.
    Two models scored on independent image sets would differ by ``sqrt(2)`` times more; on
    shared images the spread of a difference shrinks as the two models agree image by image
    (ablations of one model agree on most), which this formula, with no per-image data, does
    not count: the bars err wide, not narrow. The grey band is +-2 SE of the full model's
    accuracy: a difference inside it is noise. Rows without ``num_images`` (tables from before it was recorded) are
    drawn without error bars or band, and the title says so.

    The lower panel is a modules x combinations grid with the ablated modules filled.

    Args:
        rows: the table of :func:`ablate`.
        mode: the mode to draw.

    Returns:
        A matplotlib Figure; its first Axes holds the bars (a ``BarContainer``, heights in
        points, its ``errorbar`` the standard errors).
    """
    import matplotlib.pyplot as plt

    from lhc.plots import apply_style

    apply_style()
    mode_rows = [row for row in rows if row["mode"] == mode]
    if not mode_rows:
        raise ValueError(f"rows hold no '{mode}' combination")
    names = _module_order(mode_rows)
    full = next((row for row in mode_rows if not row["modules_off"]), None)
    if full is None:
        raise ValueError(f"rows hold no '{mode}' combination with no module off: nothing to "
                         "measure the differences against")
    positions = np.arange(len(mode_rows))
    grid = np.array([[name in row["modules_off"] for row in mode_rows] for name in names])
    accuracy = np.array([row["accuracy"] for row in mode_rows])
    difference = 100.0 * (accuracy - full["accuracy"])  # percentage points
    num_images = _num_images(mode_rows)
    errors = None if num_images is None else 100.0 * accuracy_standard_error(accuracy, num_images)

    fig, (bars_ax, grid_ax) = plt.subplots(
        2, 1, sharex=True, figsize=(max(7.0, 0.28 * len(mode_rows) + 2), 5.6),
        gridspec_kw={"height_ratios": [3, 1.2], "hspace": 0.05},
    )
    colours = plt.get_cmap("viridis")(grid.sum(axis=0) / max(1, len(names)))
    bars_ax.bar(positions, difference, color=colours, yerr=errors, ecolor="0.2",
                error_kw={"elinewidth": 1, "capsize": 2})
    bars_ax.axhline(0, color="black", linewidth=1,
                    label=f"full model: {full['accuracy']:.1%}"
                    + ("" if num_images is None else f" of {num_images} images"))
    reach = np.abs(difference) + (0 if errors is None else errors)
    if num_images is not None:
        noise = 2 * 100.0 * float(accuracy_standard_error(full["accuracy"], num_images))
        bars_ax.axhspan(-noise, noise, color="0.5", alpha=0.2, zorder=0,
                        label=f"\u00b12 SE of the full model ({noise:.1f} points): noise")
        reach = np.append(reach, noise)
    # Symmetric limits, with headroom above for the legend.
    bound = max(float(reach.max()), 0.5)
    bars_ax.set_ylim(-1.15 * bound, 1.6 * bound)
    bars_ax.set_ylabel("accuracy \u2212 full model's\n(percentage points)")
    bars_ax.legend(loc="upper right", ncol=2, fontsize=9)
    error_note = ("error bars: \u00b11 SE = sqrt(p(1-p)/n)" if num_images is not None
                  else "no error bars: the rows do not give num_images")
    bars_ax.set_title(f"LHC modules {MODE_TITLES[mode]}: all {len(mode_rows)} combinations "
                      f"against the full model, no retraining\n{error_note}")
    grid_ax.imshow(grid, aspect="auto", cmap="Greys", vmin=0, vmax=1.4, interpolation="nearest")
    grid_ax.set_yticks(range(len(names)), names)
    grid_ax.set_xticks(positions, [str(row["heads_off"]) for row in mode_rows], fontsize=7)
    grid_ax.set_xlabel(f"combination (heads {MODE_TITLES[mode]}); filled = module "
                       f"{MODE_TITLES[mode]}")
    grid_ax.grid(False)
    return fig


# Per mode: marker, size, filled. The de-trained squares are drawn large and hollow, below
# the small filled switched-off dots, so that both show where a combination scores the same
# in both modes (as it does whenever de-training and switching off agree).
_HEADS_MARKERS = {"switch_off": ("o", 28, True), "detrain": ("s", 90, False)}


def ablation_heads_figure(rows: Sequence[dict], tolerance: float = 0.005):
    """Accuracy against the fraction of heads kept, every combination of every mode.

    A grey band shows the accuracies counted as keeping the full model's (at least its
    accuracy minus ``tolerance``, as in :func:`smallest_sufficient_subset`); the dotted
    vertical line is the paper's finding, 16 of 31 heads (52%) needed. Switched-off
    combinations are small filled dots drawn over large hollow de-trained squares.

    Args:
        rows: the table of :func:`ablate`.
        tolerance: accuracy drop (a fraction, 0.005 = half a point) still counted as kept.

    Returns:
        A matplotlib Figure; its Axes' ``collections`` are the modes' scatters, in the order
        of :data:`ABLATION_MODES`.
    """
    import matplotlib.pyplot as plt

    from lhc.plots import apply_style

    apply_style()
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    modes = [mode for mode in ABLATION_MODES if any(row["mode"] == mode for row in rows)]
    for order, mode in enumerate(modes):
        mode_rows = [row for row in rows if row["mode"] == mode]
        kept = [1 - row["heads_off"] / row["heads_total"] for row in mode_rows]
        marker, size, filled = _HEADS_MARKERS[mode]
        colour = f"C{order}"
        ax.scatter(kept, [row["accuracy"] for row in mode_rows], marker=marker, s=size,
                   facecolors=colour if filled else "none", edgecolors=colour, linewidths=1.5,
                   zorder=3 if filled else 2, label=MODE_TITLES[mode])
    full_accuracy = next(row["accuracy"] for row in rows if not row["modules_off"])
    ax.axhspan(full_accuracy - tolerance, full_accuracy, color="grey", alpha=0.25,
               label=f"full model's accuracy ({full_accuracy:.1%})\nminus the "
                     f"{100 * tolerance:g}-point tolerance")
    ax.axvline(PAPER_HEADS_NEEDED / PAPER_HEADS_TOTAL, color="black", linestyle=":",
               label=f"paper: {PAPER_HEADS_NEEDED}/{PAPER_HEADS_TOTAL} heads needed")
    ax.set_xlabel("fraction of heads kept (not ablated)")
    ax.set_ylabel("accuracy")
    ax.set_title("Ablations: accuracy against heads kept")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    return fig


def ablation_heatmap(rows: Sequence[dict]):
    """Heatmap of accuracy: one row per mode, one column per combination of ablated modules.

    Columns follow :func:`module_subsets` (by number of modules, then module order) and are
    labelled with the ablated modules' numbers ("-" for none), so both modes of one
    combination sit in one column.

    Args:
        rows: the table of :func:`ablate`.

    Returns:
        A matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from lhc.plots import apply_style

    apply_style()
    modes = [mode for mode in ABLATION_MODES if any(row["mode"] == mode for row in rows)]
    if not modes:
        raise ValueError("rows hold no ablation combination")
    names = _module_order(rows)
    subsets = module_subsets(names)
    accuracy = {(row["mode"], tuple(row["modules_off"])): row["accuracy"] for row in rows}
    matrix = np.array([[accuracy.get((mode, subset), np.nan) for subset in subsets]
                       for mode in modes])  # (modes, combinations)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.34 * len(subsets) + 2), 1.1 + 0.7 * len(modes)))
    image = ax.imshow(matrix, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(modes)), [mode.replace("_", " ") for mode in modes])
    labels = ["".join(name.removeprefix("lhc") for name in subset) or "-" for subset in subsets]
    ax.set_xticks(range(len(subsets)), labels, rotation=90, fontsize=8)
    ax.set_xlabel("modules ablated (numbers of lhc1..lhc5)")
    ax.grid(False)
    fig.colorbar(image, ax=ax, label="accuracy", pad=0.01)
    ax.set_title("Accuracy after ablating each combination of LHC modules")
    return fig
