"""Evaluation: metrics with and without TTA, figures, and the paper's two results tables.

- :func:`metrics_from_probabilities`: accuracy, loss, per-class precision/recall/F1, the
  confusion matrix and the count of tied top scores, from a score array (a pure function).
- :func:`evaluate`: a model on a split's 48x48 grey images, without and with a TTA protocol
  (:mod:`lhc.tta`); :func:`confusion_matrix_figure` and :func:`per_class_figure` draw it.
- :func:`run_evaluation`: what ``lhc evaluate`` does: a run's model (or a ``.keras`` file)
  evaluated on a split of its data or any FER2013 source, written as ``metrics.json`` and
  figures.
- :func:`seed_table`: the paper's table of seed sweeps (section 3, "Results"): Top 40%,
  Top 40% w/o best, Top 25%, Top 25% w/o best and Best per arm, over the runs the acceptance
  rule kept, read from a sweep folder (:mod:`lhc.training.sweeps`).
- :func:`literature_table`: the paper's comparison with the literature, typed from the paper and
  marked "quoted", with rows measured here inserted in accuracy order; their parameter
  counts and attention shares are counted from the models.

Definitions:

- ``Top k%`` of an arm with ``N`` kept runs is the mean test accuracy of its best
  ``ceil(k N / 100)`` runs; ``Top k% w/o best`` is the mean of the same runs but the best one
  (undefined, None, when that leaves none). The paper gives neither N nor the rounding; its
  numbers fix only how many runs each mean is over: in the ResNet34v2 row (Top 40% 72.69,
  w/o best 72.65, Top 25% 72.75, w/o best 72.69, Best 72.81) 4 and 2,
  ((72.81 + 3 x 72.65) / 4 = 72.69, (72.81 + 72.69) / 2 = 72.75), in the LHC-Net row 5 and 3,
  in the LHC-NetC row 3 and 2. Rounding up, down or to nearest each fits some N (with
  rounding up: N = 8, 11 or 12, 6 or 7); rounding up is chosen because it keeps every share
  defined for any N >= 1.
- A run is kept when it completed and the acceptance rule recorded in its metrics kept it
  (:func:`lhc.training.acceptance`: final training loss at most 1.1 x the starting backbone's).
- Loss is the mean cross-entropy ``-log p[label]`` with ``p`` clipped to ``[1e-7, 1 - 1e-7]``
  (Keras' rule for probabilities; TTA scores are averages of probabilities, so no logits exist).
  For a saturated softmax Keras' own ``evaluate`` reads the logits and can report more.
- Predictions are the first arg-max; a row whose top score is reached by more than one class
  counts as a tie (the original code's ``Check_Unique``). Precision of a class never
  predicted, and recall of a class with no images, are 0 (scikit-learn's ``zero_division=0``);
  the normalised confusion matrix divides each true-class row by its count (rows of absent
  classes stay 0).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lhc.statistics import top_share_run_count
from lhc.training.arms import ARMS as SWEEP_ARMS

__all__ = [
    "ARMS",
    "PAPER_LITERATURE",
    "TTA_CHOICES",
    "confusion_matrix_figure",
    "evaluate",
    "format_table",
    "literature_table",
    "measured_row",
    "metrics_from_probabilities",
    "peer_figure",
    "peer_table",
    "parameter_counts",
    "per_class_figure",
    "read_sweep_runs",
    "run_evaluation",
    "seed_table",
    "split_label",
    "top_share_mean",
]

LOSS_EPSILON = 1e-7  # keras.backend.epsilon(): the clip of probabilities in cross-entropy

# The named protocols of lhc.tta.PROTOCOLS (a test checks that the two agree), listed here
# because lhc.tta imports Keras and the ``lhc evaluate`` parser takes them as its choices.
TTA_CHOICES = ("none", "flip", "paper", "reference")

# Sweep arm -> (its row name, stage and model whose test accuracy the row reads).
ARMS: Mapping[str, tuple[str, str, str]] = {arm: (spec.label, *spec.scored)
                                             for arm, spec in SWEEP_ARMS.items()}
# (column, percent, without best), in the paper's order; "best" follows.
SEED_COLUMNS = (("top40", 40, False), ("top40_without_best", 40, True),
                ("top25", 25, False), ("top25_without_best", 25, True))

# The paper's literature table (section 3, "Results"), typed as printed: model, reference,
# accuracy (%), TTA, parameters (millions; None for "-"), attention share (%; None for "-").
# All on FER2013 PrivateTest. "*": reported in the GitHub repository of the cited paper.
PAPER_LITERATURE: tuple[tuple, ...] = (
    ("BoW Repr.", "[2]", 67.48, False, None, None),
    ("Human", "[2]", 70.00, False, None, None),
    ("CNN", "[31]", 70.02, False, None, None),
    ("VGG19", "[35]", 70.80, True, 143.7, None),
    ("EffNet", "[35]*", 70.80, True, 9.18, None),
    ("SVM", "[2]", 71.16, False, None, None),
    ("Inception", "[32]", 71.60, True, 23.85, None),
    ("Incep.v1", "[35]*", 71.97, True, 5.0, None),
    ("ResNet34", "[32]", 72.40, True, 27.6, None),
    ("ResNet34", "[35]", 72.42, True, 27.6, None),
    ("VGG", "[32]", 72.70, True, 143.7, None),
    ("SE-Net50", "[33]", 72.70, True, 27.0, 5.18),
    ("Incep.v3", "[35]*", 72.72, True, 23.85, None),
    ("ResNet34v2", "paper", 72.81, False, 27.6, None),
    ("BAMRN50", "[35]*", 73.14, True, 24.07, 1.62),
    ("Dense121", "[35]", 73.16, True, 8.06, None),
    ("ResNet50", "[33]", 73.20, True, 25.6, None),
    ("ResNet152", "[35]", 73.22, True, 60.38, None),
    ("VGG", "[34]", 73.28, True, 143.7, None),
    ("CBAMRN50", "[35]", 73.39, True, 28.09, 9.0),
    ("LHC-Net", "paper", 73.39, False, 32.4, 14.8),
    ("LHC-NetC", "paper", 73.53, False, 32.4, 14.8),
    ("ResNet34v2", "paper", 73.92, True, 27.6, None),
    ("RM-Net", "[35]", 74.14, True, 142.9, 80.7),
    ("LHC-NetC", "paper", 74.28, True, 32.4, 14.8),
    ("LHC-Net", "paper", 74.42, True, 32.4, 14.8),
)


# --- metrics --------------------------------------------------------------------------------

def metrics_from_probabilities(probabilities, labels, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, loss, per-class precision/recall/F1, confusion matrix, ties (module docstring).

    Args:
        probabilities: float ``(N, K)`` scores, one row per image.
        labels: int ``(N,)`` true classes in ``[0, K)``.
        class_names: ``K`` names.

    Returns:
        JSON-ready dict: ``num_images``, ``accuracy``, ``loss``, ``tied_top_scores``,
        ``class_names``, ``per_class`` (one dict per class: ``class``, ``precision``,
        ``recall``, ``f1``, ``support``, ``predicted``), ``macro_precision``,
        ``macro_recall``, ``macro_f1``, ``confusion_matrix`` (counts, rows true, columns
        predicted) and ``confusion_matrix_normalised`` (rows divided by their counts).

    Raises:
        ValueError: shapes or labels that do not fit each other.
    """
    probabilities = np.asarray(probabilities, dtype="float64")
    labels = np.asarray(labels)
    num_classes = len(class_names)
    if probabilities.ndim != 2 or probabilities.shape[1] != num_classes:
        raise ValueError(f"probabilities: expected shape (N, {num_classes}) for classes "
                         f"{list(class_names)}, got {probabilities.shape}")
    if labels.shape != (len(probabilities),) or len(labels) == 0:
        raise ValueError(f"labels: expected shape ({len(probabilities)},) matching the "
                         f"probabilities, and at least one image; got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 \
            or labels.max() >= num_classes:
        raise ValueError(f"labels: expected integers in [0, {num_classes}), got values in "
                         f"[{labels.min()}, {labels.max()}] of type {labels.dtype}")
    predicted = np.argmax(probabilities, axis=1)
    top = probabilities.max(axis=1, keepdims=True)
    tied = int(np.sum((probabilities == top).sum(axis=1) > 1))
    true_scores = np.clip(probabilities[np.arange(len(labels)), labels], LOSS_EPSILON,
                          1 - LOSS_EPSILON)
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    support = counts.sum(axis=1)
    predicted_counts = counts.sum(axis=0)
    hits = np.diag(counts)
    precision = np.divide(hits, predicted_counts, out=np.zeros(num_classes),
                          where=predicted_counts > 0)
    recall = np.divide(hits, support, out=np.zeros(num_classes), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(num_classes),
                   where=denominator > 0)
    normalised = np.divide(counts, support[:, None], out=np.zeros(counts.shape),
                           where=support[:, None] > 0)
    return {
        "num_images": len(labels),
        "accuracy": float(np.mean(predicted == labels)),
        "loss": float(np.mean(-np.log(true_scores))),
        "tied_top_scores": tied,
        "class_names": list(class_names),
        "per_class": [{"class": name, "precision": float(precision[k]),
                       "recall": float(recall[k]), "f1": float(f1[k]),
                       "support": int(support[k]), "predicted": int(predicted_counts[k])}
                      for k, name in enumerate(class_names)],
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "confusion_matrix": counts.tolist(),
        "confusion_matrix_normalised": normalised.tolist(),
    }


def quiet_retracing_notes() -> None:
    """Hide TensorFlow's notes that a predict function was retraced (each evaluated model
    compiles its own); nothing to hide on another backend."""
    import sys

    tf = sys.modules.get("tensorflow")
    if tf is not None:
        tf.get_logger().setLevel("ERROR")


def evaluate(model, images, labels, class_names: Sequence[str], *, image_size: int,
             tta="none", batch_size: int = 64, max_batch: int = 256) -> dict[str, Any]:
    """A model's metrics on a split, without and (when asked) with test-time augmentation.

    The images go through the training pipeline's preprocessing
    (:func:`lhc.data.pipeline.preprocess`: bilinear resize to ``image_size``, three equal
    channels, pixels in [0, 255]).

    Args:
        model: a classifier of ``(B, image_size, image_size, 3)`` images.
        images: uint8 ``(N, H, W)`` grey images (48x48 for FER2013).
        labels: int ``(N,)`` classes.
        class_names: one name per model output.
        image_size: the model's input side (a run's profile gives it).
        tta: ``"none"``, or a protocol of :mod:`lhc.tta` (name, ``Protocol``, list of dicts).
        batch_size: images per batch of the pipeline and of the plain prediction.
        max_batch: the most images per model call under TTA.

    Returns:
        ``accuracy`` (with TTA when asked, else without), ``tta`` (the protocol, as a dict),
        ``without_tta`` and ``with_tta`` (:func:`metrics_from_probabilities`; ``with_tta`` is
        None for ``"none"``).
    """
    from lhc.data.pipeline import preprocessed_batches
    from lhc.tta import TTAPredictor, get_protocol

    protocol = get_protocol(tta)
    predictor = TTAPredictor(model, protocol, max_batch=max_batch) if protocol.name != "none" \
        else None
    plain, augmented = [], []
    # Batch by batch: at 224 the whole split at the model's size would not fit in memory.
    for batch in preprocessed_batches(np.asarray(images), image_size, batch_size):
        plain.append(model.predict(batch, batch_size=len(batch), verbose=0))
        if predictor is not None:
            augmented.append(predictor(batch))
    result = {"tta": protocol.to_dict(),
              "without_tta": metrics_from_probabilities(np.concatenate(plain), labels,
                                                        class_names),
              "with_tta": None}
    if predictor is not None:
        result["with_tta"] = metrics_from_probabilities(np.concatenate(augmented), labels,
                                                        class_names)
    result["accuracy"] = (result["with_tta"] or result["without_tta"])["accuracy"]
    return result


def _variants(result: Mapping) -> list[tuple[str, Mapping]]:
    variants = [("without TTA", result["without_tta"])]
    if result.get("with_tta"):
        variants.append((f"with TTA ({result['tta']['name']})", result["with_tta"]))
    return variants


def confusion_matrix_figure(result: Mapping, title: str = ""):
    """Heatmaps of the normalised confusion matrix, without and (if present) with TTA.

    Args:
        result: what :func:`evaluate` returned.
        title: figure title (e.g. the model and split).

    Returns:
        A matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    from lhc.plots import apply_style

    apply_style()
    variants = _variants(result)
    names = variants[0][1]["class_names"]
    side = 0.55 * len(names) + 1.8
    fig, axes = plt.subplots(1, len(variants), figsize=(side * len(variants), side),
                             squeeze=False)
    for ax, (label, metrics) in zip(axes[0], variants, strict=True):
        sns.heatmap(np.asarray(metrics["confusion_matrix_normalised"]), ax=ax, vmin=0, vmax=1,
                    cmap="Blues", annot=True, fmt=".2f", annot_kws={"size": 8}, square=True,
                    cbar=False, xticklabels=names, yticklabels=names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{label}: accuracy {metrics['accuracy']:.2%}")
        ax.tick_params(axis="x", rotation=45)
        ax.tick_params(axis="y", rotation=0)
    fig.suptitle(title or "Confusion matrix (rows: true class, normalised)")
    fig.tight_layout()
    return fig


def per_class_figure(result: Mapping, title: str = ""):
    """Per-class precision, recall and F1 bars, one panel per variant (without/with TTA).

    Args:
        result: what :func:`evaluate` returned.
        title: figure title.

    Returns:
        A matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from lhc.plots import apply_style

    apply_style()
    variants = _variants(result)
    fig, axes = plt.subplots(len(variants), 1, figsize=(8, 2.8 * len(variants)), squeeze=False,
                             sharex=True)
    measures = ("precision", "recall", "f1")
    width = 0.8 / len(measures)
    for ax, (label, metrics) in zip(axes[:, 0], variants, strict=True):
        rows = metrics["per_class"]
        positions = np.arange(len(rows))
        for index, measure in enumerate(measures):
            ax.bar(positions + (index - 1) * width, [row[measure] for row in rows], width,
                   label=measure)
        ax.set_ylim(0, 1)
        ax.set_ylabel("score")
        ax.set_title(f"{label}: macro F1 {metrics['macro_f1']:.3f}", loc="left")
        ax.set_xticks(positions, [f"{row['class']}\n(n={row['support']})" for row in rows])
    axes[0, 0].legend(ncols=3, loc="upper right")
    fig.suptitle(title or "Per-class precision, recall and F1")
    fig.tight_layout()
    return fig


# --- a model evaluated on a split, as ``lhc evaluate`` does it --------------------------------

def run_evaluation(source: str | os.PathLike, data: str | os.PathLike | None = None,
                   split: str = "test", tta: str = "none", out: str | os.PathLike | None = None,
                   stage: str = "stage4", model_name: str | None = None, batch_size: int = 64,
                   max_batch: int = 256) -> dict[str, Any]:
    """Evaluate a run's model or a ``.keras`` file on a split; write ``metrics.json`` and figures.

    What ``lhc evaluate`` does (:mod:`lhc.cli.evaluate`). A run directory gives its model (by
    default the profile's model of ``stage``), its input size, and its data read exactly as
    training read it (the profile's carve_test, :func:`lhc.training.load_run_data`); ``data``
    evaluates on another source, read with the same settings. A ``.keras`` file gives its input
    size from its input shape, and needs ``data``. The default ``out`` is
    ``<run>/evaluation/<stage>-<model>-<split>-tta_<tta>`` for a run directory and
    ``<file stem>-evaluation/<split>-tta_<tta>`` beside a model file; the figures go to
    ``out/figures``.

    Args:
        source: a run directory or a ``.keras`` file.
        data: a FER2013 source; None for a run's own data.
        split: ``"val"`` or ``"test"``.
        tta: a protocol name of :data:`lhc.tta.PROTOCOLS` (:data:`TTA_CHOICES`).
        out: output folder; None for the default above.
        stage: with a run directory, the stage whose final model to evaluate.
        model_name: with a run directory, the model; None for the profile's model of ``stage``.
        batch_size: images per batch.
        max_batch: the most images per model call under TTA.

    Returns:
        The content of ``metrics.json``: ``accuracy``, ``loss``, ``split``, ``test_split``,
        ``model``, ``data``, ``input_size``, ``out`` and :func:`evaluate`'s result.

    Raises:
        FileNotFoundError: no such source or data.
        ValueError: a source that is neither, a missing ``data``, an absent split.
    """
    from lhc import plots
    from lhc._io import write_json
    from lhc.data import load_fer2013
    from lhc.export import load_model

    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such run directory or .keras file")
    if source.is_dir():
        from lhc.training import load_run, load_run_data
        from lhc.training.runner import DATA_SEED, STAGE_LABELS

        profile, _ = load_run(source)
        stage = STAGE_LABELS.get(stage, stage)
        if stage not in profile.stages:
            raise ValueError(f"--stage {stage!r}: expected one of {list(STAGE_LABELS)} or "
                             f"{list(profile.stages)}")
        model_name = model_name or profile.stages[stage].model
        dataset = (load_run_data(source) if data is None else
                   load_fer2013(data, carve_test=profile.data.carve_test, seed=DATA_SEED))
        default_out = source / "evaluation" / f"{stage}-{model_name}-{split}-tta_{tta}"
    elif data is None:
        raise ValueError(f"{source}: a model file carries no data; pass --data PATH")
    else:
        dataset = load_fer2013(data)
        default_out = source.parent / f"{source.stem}-evaluation" / f"{split}-tta_{tta}"
    if split not in dataset.splits:
        raise ValueError(f"{dataset.source}: no {split} split (it has "
                         f"{', '.join(dataset.splits)}; {dataset.split_convention}); choose "
                         "--split from those, or a source with PrivateTest")
    loaded = load_model(source, stage=stage, model=model_name or "lhc_net",
                        class_names=dataset.class_names)
    chosen = dataset.splits[split]
    result = evaluate(loaded.model, chosen.images, chosen.labels, loaded.class_names,
                      image_size=loaded.input_size, tta=tta, batch_size=batch_size,
                      max_batch=max_batch)
    total, attention = parameter_counts(loaded.model)
    headline = result["with_tta"] or result["without_tta"]
    metrics = {
        "accuracy": result["accuracy"],
        "loss": headline["loss"],
        "split": split,
        "test_split": split_label(dataset, split),
        "input_size": loaded.input_size,
        "model": {"source": loaded.source, "name": loaded.model.name, "params": total,
                  "lhc_params": attention, "lhc_share": attention / total},
        "data": {"source": dataset.source, "split_convention": dataset.split_convention,
                 "counts": {name: len(part) for name, part in dataset.splits.items()},
                 "test_is_carved": dataset.test_is_carved, "notes": dataset.notes},
        **result,
    }
    out = Path(out) if out else default_out
    metrics["out"] = str(out)
    write_json(out / "metrics.json", metrics)
    title = f"{loaded.source}, {split} ({metrics['test_split']})"
    import matplotlib.pyplot as plt

    for figure, name in ((confusion_matrix_figure(result, title), "evaluate_confusion_matrix"),
                         (per_class_figure(result, title), "evaluate_per_class")):
        plots.save_figure(figure, out / "figures" / name)
        plt.close(figure)  # files, not windows: a process evaluating many models keeps none open
    return metrics


# --- the seed table ---------------------------------------------------------------------------

def top_share_mean(accuracies: Iterable[float], percent: float,
                   without_best: bool = False) -> float | None:
    """Mean of the best ``ceil(percent N / 100)`` of ``N`` accuracies (module docstring).

    Args:
        accuracies: one per run.
        percent: the share, in (0, 100].
        without_best: leave the best run out of the same set.

    Returns:
        The mean; None when no run is left (no runs, or one run with ``without_best``).
    """
    ranked = sorted(accuracies, reverse=True)
    chosen = ranked[:top_share_run_count(len(ranked), percent)]
    if without_best:
        chosen = chosen[1:]
    return float(np.mean(chosen)) if chosen else None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {error.lineno}: expected a JSON metrics file "
                         f"({error.msg})") from None


def read_sweep_runs(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One record per run of a sweep folder, from ``<sweep_dir>/metrics/<arm>_seed<k>.json``.

    Args:
        sweep_dir: the folder :func:`lhc.training.sweep` wrote.

    Returns:
        Dicts with ``arm``, ``seed``, ``file``, ``status``, ``test_accuracy`` (of the arm's
        model, :data:`ARMS`; None when the run did not finish it), ``kept`` and ``reason``,
        sorted by arm and seed.

    Raises:
        FileNotFoundError: no metrics files there.
        ValueError: a file that is not a sweep run's metrics, naming the file and key.
    """
    files = sorted((Path(sweep_dir) / "metrics").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{sweep_dir}: no metrics/*.json; make a sweep with e.g. "
                                f"`lhc sweep --profile smoke --seeds 1-4 --arms A,B,C --out "
                                f"{sweep_dir}`")
    runs = []
    for path in files:
        metrics = _read_json(path)
        for key in ("arm", "seed", "status", "stages"):
            if key not in metrics:
                raise ValueError(f"{path}: missing key {key!r}; expected a sweep run's metrics "
                                 f"(keys arm, seed, status, stages, acceptance)")
        if metrics["arm"] not in ARMS:
            raise ValueError(f"{path}: arm: expected one of {', '.join(ARMS)}, "
                             f"got {metrics['arm']!r}")
        _, stage, model = ARMS[metrics["arm"]]
        summary = metrics["stages"].get(stage, {}).get(model)
        accuracy = None if summary is None else summary.get("test_accuracy")
        acceptance = metrics.get("acceptance")
        if metrics["status"] != "complete":
            kept, reason = False, f"run {metrics['status']}"
        elif summary is None:
            kept, reason = False, f"no finished {stage}/{model}"
        elif accuracy is None:
            raise ValueError(f"{path}: stages.{stage}.{model} has no test_accuracy: the run's "
                             "data had no test split (PrivateTest or carve_test)")
        elif not acceptance:
            kept, reason = False, "no acceptance record"
        else:
            kept, reason = bool(acceptance["kept"]), acceptance["reason"]
        runs.append({"arm": metrics["arm"], "seed": metrics["seed"], "file": str(path),
                     "status": metrics["status"], "test_accuracy": accuracy, "kept": kept,
                     "reason": reason})
    return sorted(runs, key=lambda run: (run["arm"], run["seed"]))


def seed_table(runs: Iterable[Mapping] | str | os.PathLike) -> list[dict[str, Any]]:
    """The paper's seed table: one row per arm present, over the runs kept.

    Args:
        runs: records as :func:`read_sweep_runs` returns (``arm``, ``seed``,
            ``test_accuracy``, ``kept``), or a sweep folder to read them from.

    Returns:
        Per arm in A, B, C order: ``arm``, ``model``, ``runs``, ``kept``, the four
        :data:`SEED_COLUMNS` (accuracies in [0, 1], None when undefined) with ``<column>_runs``
        (how many runs each mean is over), ``best`` and ``best_seed``.
    """
    if isinstance(runs, str | os.PathLike):
        runs = read_sweep_runs(runs)
    runs = list(runs)
    rows = []
    for arm, (model, _, _) in ARMS.items():
        of_arm = [run for run in runs if run["arm"] == arm]
        if not of_arm:
            continue
        kept = [run for run in of_arm if run["kept"]]
        accuracies = [run["test_accuracy"] for run in kept]
        row: dict[str, Any] = {"arm": arm, "model": model, "runs": len(of_arm),
                               "kept": len(kept)}
        for column, percent, without_best in SEED_COLUMNS:
            row[column] = top_share_mean(accuracies, percent, without_best)
            row[f"{column}_runs"] = max(0, top_share_run_count(len(kept), percent) - without_best)
        best = max(kept, key=lambda run: run["test_accuracy"], default=None)
        row["best"] = None if best is None else best["test_accuracy"]
        row["best_seed"] = None if best is None else best["seed"]
        rows.append(row)
    return rows


# --- the attention peers under one protocol ---------------------------------------------------

def peer_table(sweep_dir: str | os.PathLike, *, baseline: str = "A", kept_only: bool = False,
               count_parameters: bool = True, confidence: float = 0.95,
               resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Every arm of a sweep against set A, seed by seed (issue 18: "does LHC add accuracy?").

    The rows are :func:`lhc.statistics.sweep_table`'s: per arm its seeds' mean with a
    bootstrap interval, the paper's Top 40% / Top 25% / Best, and against the baseline the mean
    paired difference with its interval and the sign-flip p-value. Each row adds the arm's
    ``label``, its ``runs`` and how many the acceptance rule ``kept``.

    By default every finished run counts, whatever the acceptance rule said: the rule is
    recorded, never enforced, and dropping one arm's runs after the fact would favour it.
    ``kept_only=True`` compares on the kept runs (the paper's tables), on the seeds every
    compared pair of arms kept.

    Args:
        sweep_dir: a folder :func:`lhc.training.sweep` wrote.
        baseline: the arm the others are compared with.
        kept_only: only the runs the acceptance rule kept.
        count_parameters: build each arm's model at the sweep's input size (from its base
            run's profile) and count its parameters and attention share.
        confidence, resamples, seed: as :func:`lhc.statistics.sweep_table`.

    Returns:
        ``{"rows": [...], "accuracies": {arm: {seed: accuracy}}, "table": markdown,
        "input_size": ..., "profile": ...}``.
    """
    from lhc import statistics

    runs = read_sweep_runs(sweep_dir)
    found = statistics.accuracies_from_runs(runs, kept_only=kept_only)
    accuracies = {arm: found[arm] for arm in SWEEP_ARMS if arm in found}  # the table's order
    profile = _sweep_profile(sweep_dir)
    parameters, shares = {}, {}
    if count_parameters and profile is not None:
        from lhc.data import FER2013_CLASSES
        from lhc.training.registry import build_model

        for arm in accuracies:
            total, attention = parameter_counts(build_model(SWEEP_ARMS[arm].scored[1], profile,
                                                            len(FER2013_CLASSES)))
            parameters[arm], shares[arm] = total, attention / total
    rows = statistics.sweep_table(accuracies, baseline, parameter_counts=parameters or None,
                                  attention_share=shares or None, confidence=confidence,
                                  resamples=resamples, seed=seed,
                                  paired_on_common_seeds=kept_only)
    for row in rows:
        of_arm = [run for run in runs if run["arm"] == row["arm"]]
        row.update(label=SWEEP_ARMS[row["arm"]].label, runs=len(of_arm),
                   kept=sum(bool(run["kept"]) for run in of_arm))
    return {"rows": rows, "accuracies": accuracies, "table": statistics.format_table(rows),
            "profile": None if profile is None else profile.name,
            "input_size": None if profile is None else profile.input_size}


def _sweep_profile(sweep_dir: str | os.PathLike):
    """The resolved profile of a sweep's base run, or None when the sweep does not name one."""
    from lhc.training.layout import RunLayout
    from lhc.training.profiles import load_profile

    summary = Path(sweep_dir) / "sweep.json"
    if not summary.exists():
        return None
    base = RunLayout(_read_json(summary)["base"])
    return load_profile(base.profile) if base.profile.exists() else None


def peer_figure(result: Mapping[str, Any], title: str | None = None):
    """Each arm's accuracy per seed, and its paired difference from the baseline.

    Left: one dot per seed, the mean and its bootstrap interval. Right: the mean paired
    difference from the baseline with its interval, the zero line, and the p-value.

    Args:
        result: what :func:`peer_table` returned.
        title: figure title.

    Returns:
        A matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from lhc.plots import apply_style

    apply_style()
    rows, accuracies = result["rows"], result["accuracies"]
    labels = [f"{row['arm']}: {row['label']}" for row in rows]
    positions = np.arange(len(rows))[::-1]  # the baseline on top
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.6 * len(rows) + 1.8), sharey=True,
                                      gridspec_kw={"width_ratios": (3, 2)})
    for position, row in zip(positions, rows, strict=True):
        values = 100 * np.array(list(accuracies[row["arm"]].values()))
        left.scatter(values, np.full(values.size, position), s=18, alpha=0.6, color="0.45",
                     zorder=2)
        summary = row["summary"]
        low, high = summary["mean_interval"] or (summary["mean"], summary["mean"])
        left.errorbar(100 * summary["mean"], position, xerr=[[100 * (summary["mean"] - low)],
                                                           [100 * (high - summary["mean"])]],
                      fmt="D", color="C0", capsize=4, zorder=3)
        comparison = row.get("comparison")
        if comparison is not None:
            low, high = comparison["interval"] or (comparison["mean_difference"],) * 2
            difference = comparison["mean_difference"]
            right.errorbar(100 * difference, position,
                           xerr=[[100 * (difference - low)], [100 * (high - difference)]],
                           fmt="o", capsize=4,  # coloured only when the interval excludes 0
                           color="C2" if low > 0 else "C3" if high < 0 else "0.4")
            right.annotate(f"p = {comparison['p_value']:.3g}", (100 * high, position),
                           xytext=(6, 0), textcoords="offset points", va="center", fontsize=8)
    left.set_yticks(positions, labels)
    left.set_xlabel("test accuracy (%): seeds (dots), mean and 95% interval")
    baseline = rows[0]["arm"]
    right.axvline(0, color="0.3", linewidth=1)
    right.set_xlabel(f"difference from {baseline} (points), paired by seed")
    right.margins(x=0.35)
    fig.suptitle(title or f"Attention modules under one protocol: {len(rows)} arms, "
                          f"{rows[0]['summary']['n']} seeds each")
    fig.tight_layout()
    return fig


# --- the literature table ---------------------------------------------------------------------

def parameter_counts(model) -> tuple[int, int]:
    """(all parameters, parameters of the model's attention modules).

    The attention modules are the model's :class:`lhc.layers.LHC` layers and its
    channel-attention peers (:class:`lhc.channel_attention.SqueezeExcitation`,
    :class:`~lhc.channel_attention.CBAM`, :class:`~lhc.channel_attention.ECA`), e.g. as added
    by :func:`lhc.models.insert_attention`. For LHC-Net and LHC-NetC that is, as before, the
    five LHC modules (4,805,444 parameters at 224x224); for a plain backbone it is 0.
    """
    from lhc.channel_attention import ATTENTION_LAYERS
    from lhc.layers import LHC

    modules = (LHC, *ATTENTION_LAYERS)
    attention = sum(layer.count_params() for layer in model.layers if isinstance(layer, modules))
    return int(model.count_params()), int(attention)


def split_label(data, split: str) -> str:
    """The paper's name of a split of a :class:`lhc.data.FER2013Data`: PublicTest,
    PrivateTest, or "carved from train" for a test split carved out of the training set."""
    if split == "test":
        return "carved from train" if data.test_is_carved else "PrivateTest"
    return {"val": "PublicTest", "train": "Training"}.get(split, split)


def measured_row(name: str, model, accuracy: float, *, tta: str, test_split: str) -> dict:
    """A row of the literature table measured here, counted from ``model``.

    Args:
        name: the row's model name (e.g. "LHC-Net (smoke)").
        model: the evaluated ``keras.Model``: its parameters and attention share are counted
            (:func:`parameter_counts`).
        accuracy: in [0, 1].
        tta: the TTA protocol's name, ``"none"`` for no TTA.
        test_split: the split evaluated (:func:`split_label`).
    """
    total, attention = parameter_counts(model)
    return {"model": name, "reference": "", "accuracy": 100 * accuracy,
            "tta": "no" if tta == "none" else f"yes ({tta})", "params_millions": total / 1e6,
            "attention_percent": 100 * attention / total if attention else None,
            "source": "measured here", "test_split": test_split}


def literature_table(measured: Iterable[Mapping] = ()) -> list[dict]:
    """The paper's rows (quoted, PrivateTest) with ``measured`` rows inserted by accuracy.

    Args:
        measured: rows from :func:`measured_row`.

    Returns:
        Rows sorted by accuracy, ascending as in the paper; a measured row goes after quoted
        rows of equal accuracy.
    """
    quoted = [{"model": model, "reference": reference, "accuracy": accuracy,
               "tta": "yes" if tta else "no", "params_millions": params,
               "attention_percent": attention, "source": "quoted", "test_split": "PrivateTest"}
              for model, reference, accuracy, tta, params, attention in PAPER_LITERATURE]
    rows = quoted + [dict(row) for row in measured]
    return sorted(rows, key=lambda row: (row["accuracy"], row["source"] == "measured here"))


def format_table(rows: Sequence[Mapping], columns: Mapping[str, str]) -> str:
    """A Markdown table of ``rows``; ``columns`` maps a key to its header.

    Values print as they are (give rows in the unit to show), floats with 2 decimals, None
    as "-".
    """
    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(columns.values()) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(key)) for key in columns) + " |" for row in rows]
    return "\n".join(lines)
