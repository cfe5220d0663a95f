"""Correlation between the outputs of the heads (paper section 2.2, "Local Multi-Head").

The paper compares the redundancy of LHC-Net's local heads with a Transformer's: "by simple
correlation between the output of the heads" it found 63% for LHC-Net against up to 93% for
the heads of a standard Transformer encoder. Here the heads' outputs are those of eq. 16,
``A_h = W_h v_h`` of shape ``(C, L)`` (``L = H*W/n`` for a band, ``H*W`` for a global head),
read from :class:`lhc.layers.LHC` with ``return_attention=True`` on each module's actual input.

Two correlations, both Pearson's r:

- **within a module** (heads of equal shape): for each image, every head's ``A_h`` flattened to
  ``C*L`` values, r between every pair of heads; the matrix is the mean of r over the images.
  Its off-diagonal ``|r|`` gives a module's mean and max absolute correlation. This is the
  paper's "correlation between the output of the heads".
- **across all heads** (the 31 heads of LHC-Net differ in shape from module to module): every
  head's per-image size, the root mean square of its ``A_h``, and r between heads across the
  images. It says whether heads are active on the same images, not whether they compute the
  same thing, and is reported separately from the within-module numbers.

The comparison arm, in the same units, is the same network with global heads
(``build_lhc_net(head_layout="global")``): every head sees the whole map, as a Transformer's
heads all see the whole sequence (:func:`compare_local_global`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import keras
import numpy as np

from lhc.analysis.ablation import lhc_modules, model_input_batches

__all__ = [
    "PAPER_LHC_CORRELATION",
    "PAPER_TRANSFORMER_CORRELATION",
    "HeadCorrelation",
    "all_heads_figure",
    "compare_local_global",
    "head_correlation",
    "head_output_batches",
    "head_outputs",
    "head_rms",
    "local_global_figure",
    "module_correlation_figure",
    "pearson_matrix",
    "per_image_head_correlation",
]

PAPER_LHC_CORRELATION = 0.63
PAPER_TRANSFORMER_CORRELATION = 0.93


def pearson_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pearson's r between every pair of rows, batched over leading axes.

    Args:
        vectors: ``(..., K, M)``: ``K`` vectors of ``M`` values each.

    Returns:
        ``(..., K, K)`` float64 correlations, 1 on the diagonal.

    Raises:
        ValueError: a vector is constant (its r is undefined), naming its index.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim < 2 or vectors.shape[-1] < 2:
        raise ValueError(f"pearson_matrix: expected (..., K, M) with M >= 2, got {vectors.shape}")
    centred = vectors - vectors.mean(axis=-1, keepdims=True)
    constant = np.argwhere(np.ptp(vectors, axis=-1) == 0)
    if constant.size:
        raise ValueError(
            f"pearson_matrix: the vector at index {tuple(int(i) for i in constant[0])} of "
            f"{vectors.shape[:-1]} is constant, so its Pearson r is undefined "
            f"({len(constant)} such vectors)"
        )
    unit = centred / np.linalg.norm(centred, axis=-1, keepdims=True)  # (..., K, M)
    return np.clip(unit @ np.swapaxes(unit, -1, -2), -1.0, 1.0)


def per_image_head_correlation(head_outputs: np.ndarray) -> np.ndarray:
    """r between the heads of one module, image by image.

    Args:
        head_outputs: ``(N, n, C, L)``: A_h of ``n`` heads for ``N`` images.

    Returns:
        ``(N, n, n)``: for each image, r between the heads' outputs flattened to ``C*L``.
    """
    num_images, num_heads = head_outputs.shape[:2]
    flat = np.reshape(head_outputs, (num_images, num_heads, -1))  # (N, n, C*L)
    return pearson_matrix(flat)


def head_rms(head_outputs: np.ndarray) -> np.ndarray:
    """Root mean square of each head's output per image: ``(N, n, C, L)`` -> ``(N, n)``."""
    values = np.asarray(head_outputs, dtype=np.float64)
    return np.sqrt(np.mean(np.square(values), axis=(2, 3)))


def head_output_batches(
    model: keras.Model, images: np.ndarray, *, batch_size: int = 32
) -> Iterator[dict[str, np.ndarray]]:
    """Per-head outputs A_h (eq. 16) of every LHC module, batch by batch.

    A sub-model computes every module's input; each module is then called on it eagerly with
    ``return_attention=True``. The outputs are those of the module's attention, before the
    residual sum (and before LHC-NetC's gate).

    Args:
        model: a model with LHC modules.
        images: uint8 ``(N, H, W)`` grey images.
        batch_size: images per batch.

    Yields:
        ``{module name: (B, n, C, L) float32}`` per batch of ``B`` images.
    """
    modules = lhc_modules(model)
    module_inputs = keras.Model(model.input, [layer.input for layer in modules])
    for batch, _ in model_input_batches(model, images, None, batch_size):
        inputs = module_inputs(batch, training=False)
        outputs = {}
        for layer, layer_input in zip(modules, inputs, strict=True):
            _, analysis = layer(layer_input, return_attention=True)
            outputs[layer.name] = keras.ops.convert_to_numpy(analysis["head_outputs"])
        yield outputs


def head_outputs(model: keras.Model, images: np.ndarray, *, batch_size: int = 32
                 ) -> dict[str, np.ndarray]:
    """All of :func:`head_output_batches` at once: ``{module name: (N, n, C, L)}``."""
    batches = list(head_output_batches(model, images, batch_size=batch_size))
    return {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}


@dataclasses.dataclass(frozen=True)
class HeadCorrelation:
    """Head correlations of one model (module docstring for the definitions).

    Attributes:
        model_name: the model's name.
        layout: the modules' head layout, ``"bands"`` (local) or ``"global"``.
        modules: module names in graph order.
        within: ``{module: (n, n)}`` mean over images of r between the flattened A_h.
        across: ``(total heads, total heads)`` r across images of the heads' per-image RMS.
        head_labels: ``"lhc1/h1"``, ... in the order of ``across``.
        num_images: images the statistics were computed on.
    """

    model_name: str
    layout: str
    modules: tuple[str, ...]
    within: dict[str, np.ndarray]
    across: np.ndarray
    head_labels: tuple[str, ...]
    num_images: int

    def module_statistics(self, module: str) -> dict:
        """``heads``, ``pairs``, ``mean_abs_r``, ``max_abs_r`` over a module's head pairs
        (NaN for a one-head module, which has no pair)."""
        matrix = self.within[module]
        pairs = np.abs(matrix[np.triu_indices(len(matrix), k=1)])
        return {
            "module": module,
            "heads": len(matrix),
            "pairs": len(pairs),
            "mean_abs_r": float(pairs.mean()) if len(pairs) else float("nan"),
            "max_abs_r": float(pairs.max()) if len(pairs) else float("nan"),
        }

    def summary(self) -> list[dict]:
        """One row per module, then ``"all"``: every within-module pair of the model pooled."""
        rows = [self.module_statistics(module) for module in self.modules]
        pooled = np.concatenate([
            np.abs(matrix[np.triu_indices(len(matrix), k=1)]) for matrix in self.within.values()
        ])
        rows.append({
            "module": "all",
            "heads": sum(row["heads"] for row in rows),
            "pairs": len(pooled),
            "mean_abs_r": float(pooled.mean()) if len(pooled) else float("nan"),
            "max_abs_r": float(pooled.max()) if len(pooled) else float("nan"),
        })
        return rows


def head_correlation(model: keras.Model, images: np.ndarray, *, batch_size: int = 32
                     ) -> HeadCorrelation:
    """Within-module and across-head correlations of ``model``'s heads on ``images``.

    Args:
        model: a model with LHC modules, all of one head layout.
        images: uint8 ``(N, H, W)`` grey images, ``N >= 3`` (r across images needs a spread).
        batch_size: images per batch; the statistics are accumulated batch by batch, so the
            memory does not grow with ``N``.

    Returns:
        A :class:`HeadCorrelation`.
    """
    modules = lhc_modules(model)
    layouts = sorted({layer.head_layout for layer in modules})
    if len(layouts) != 1:
        raise ValueError(f"model '{model.name}' mixes head layouts {layouts}; "
                         "its heads are not comparable as one arm")
    if len(images) < 3:
        raise ValueError(f"head_correlation needs at least 3 images, got {len(images)}")
    sums = {layer.name: np.zeros((layer.num_heads, layer.num_heads)) for layer in modules}
    rms = []
    for batch in head_output_batches(model, images, batch_size=batch_size):
        for name, outputs in batch.items():
            sums[name] += per_image_head_correlation(outputs).sum(axis=0)
        rms.append(np.concatenate([head_rms(outputs) for outputs in batch.values()], axis=1))
    rms = np.concatenate(rms)  # (N, total heads)
    return HeadCorrelation(
        model_name=model.name,
        layout=layouts[0],
        modules=tuple(sums),
        within={name: total / len(images) for name, total in sums.items()},
        across=pearson_matrix(rms.T),
        head_labels=tuple(f"{layer.name}/h{head}" for layer in modules
                          for head in range(1, layer.num_heads + 1)),
        num_images=len(images),
    )


def compare_local_global(local_model: keras.Model, global_model: keras.Model,
                         images: np.ndarray, *, batch_size: int = 32) -> dict:
    """Local (band) heads against global heads, in the same units and on the same images.

    Args:
        local_model: LHC-Net with the paper's band heads (``head_layout="bands"``).
        global_model: the same network with global heads (``head_layout="global"``), trained
            the same way.
        images: uint8 ``(N, H, W)`` grey images.
        batch_size: images per batch.

    Returns:
        ``{"local": HeadCorrelation, "global": HeadCorrelation, "rows": [...]}``; one row per
        module and one for ``"all"``, with ``heads``, ``mean_abs_r`` and ``max_abs_r`` of each
        arm (keys suffixed ``_local`` and ``_global``).
    """
    arms = {"local": head_correlation(local_model, images, batch_size=batch_size),
            "global": head_correlation(global_model, images, batch_size=batch_size)}
    for arm, layout in (("local", "bands"), ("global", "global")):
        if arms[arm].layout != layout:
            raise ValueError(f"{arm}_model '{arms[arm].model_name}' has head layout "
                             f"'{arms[arm].layout}', expected '{layout}'")
    if arms["local"].modules != arms["global"].modules:
        raise ValueError(f"the arms' modules differ: local {arms['local'].modules}, global "
                         f"{arms['global'].modules}")
    rows = []
    for local_row, global_row in zip(arms["local"].summary(), arms["global"].summary(),
                                      strict=True):
        row = {"module": local_row["module"]}
        for key in ("heads", "mean_abs_r", "max_abs_r"):
            row[f"{key}_local"] = local_row[key]
            row[f"{key}_global"] = global_row[key]
        rows.append(row)
    return {**arms, "rows": rows}


def _heatmap(ax, matrix: np.ndarray, labels, annotate: bool):
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.grid(False)
    if annotate:
        for (row, column), value in np.ndenumerate(matrix):
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(value) > 0.6 else "black")
    return image


def module_correlation_figure(result: HeadCorrelation, module: str):
    """Heatmap of one module's within-module head correlation matrix.

    Returns:
        A matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from lhc.plots import apply_style

    apply_style()
    matrix = result.within[module]
    stats = result.module_statistics(module)
    fig, ax = plt.subplots(figsize=(0.45 * len(matrix) + 3.0, 0.45 * len(matrix) + 2.4))
    image = _heatmap(ax, matrix, [f"h{head}" for head in range(1, len(matrix) + 1)],
                     annotate=len(matrix) <= 10)
    fig.colorbar(image, ax=ax, label="Pearson r (mean over images)")
    ax.set_title(f"{result.model_name} {module} ({result.layout} heads): mean |r| "
                 f"{stats['mean_abs_r']:.2f}, max |r| {stats['max_abs_r']:.2f}\n"
                 f"flattened A_h per image, {result.num_images} images")
    return fig


def all_heads_figure(result: HeadCorrelation):
    """Heatmap of r across images between every head's per-image RMS, modules outlined.

    Returns:
        A matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from lhc.plots import apply_style

    apply_style()
    size = len(result.head_labels)
    fig, ax = plt.subplots(figsize=(0.22 * size + 3.5, 0.22 * size + 2.5))
    image = _heatmap(ax, result.across, result.head_labels, annotate=False)
    ax.tick_params(labelsize=6)
    start = 0
    for module in result.modules:
        heads = len(result.within[module])
        ax.add_patch(plt.Rectangle((start - 0.5, start - 0.5), heads, heads, fill=False,
                                   edgecolor="black", linewidth=1.2))
        start += heads
    fig.colorbar(image, ax=ax, label="Pearson r across images")
    ax.set_title(f"{result.model_name}: all {size} heads, r between per-image RMS of A_h "
                 f"({result.num_images} images)")
    return fig


def local_global_figure(comparison: dict):
    """Mean (bars) and max (markers) |r| within modules, local against global heads.

    Reference lines: the paper's 63% for LHC-Net (dashed) and 93% for a Transformer's heads
    (dash-dotted). The legend, which names them, stands right of the axes: inside, it would
    cover the 93% line and the markers near it.

    Args:
        comparison: the dict of :func:`compare_local_global`.

    Returns:
        A matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from lhc.plots import apply_style

    apply_style()
    rows = comparison["rows"]
    positions = np.arange(len(rows))
    width = 0.38
    fig, ax = plt.subplots(figsize=(1.1 * len(rows) + 5.2, 4.2), layout="constrained")
    for offset, arm in ((-width / 2, "local"), (width / 2, "global")):
        bars = ax.bar(positions + offset, [row[f"mean_abs_r_{arm}"] for row in rows], width,
                      label=f"{arm} heads: mean |r|")
        ax.scatter(positions + offset, [row[f"max_abs_r_{arm}"] for row in rows], marker="v",
                   color=bars.patches[0].get_facecolor(), edgecolor="black", zorder=3,
                   label=f"{arm} heads: max |r|")
    for value, text, style in ((PAPER_LHC_CORRELATION, "paper: LHC-Net", "--"),
                               (PAPER_TRANSFORMER_CORRELATION, "paper: Transformer (up to)",
                                "-.")):
        ax.axhline(value, color="black", linestyle=style, linewidth=0.9,
                   label=f"{text} {value:.0%}")
    ax.set_xticks(positions, [f"{row['module']}\n({row['heads_local']}/{row['heads_global']})"
                              for row in rows])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("|Pearson r| between heads")
    ax.set_xlabel("module (heads local/global); one-head modules have no pair")
    ax.set_title(f"Head correlation within modules, {comparison['local'].num_images} images")
    # Matplotlib lists lines first; each arm's bars and markers, then the paper, read better.
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda index: (labels[index].startswith("paper"),
                                                          not labels[index].startswith("local"),
                                                          "max" in labels[index]))
    ax.legend([handles[index] for index in order], [labels[index] for index in order],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    return fig
