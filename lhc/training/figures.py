"""A run at a glance: learning curves (loss and accuracy per epoch) and the per-stage table."""

from __future__ import annotations

import json
import os

import matplotlib.pyplot as plt
import numpy as np

from lhc.training.runner import SUMMARY_FILE, read_history

__all__ = ["learning_curves", "stage_table"]

_TABLE_COLUMNS = (("stage", "<7"), ("model", "<14"), ("epochs", ">6"), ("stopped by", "<11"),
                  ("best", ">4"), ("train loss", ">10"), ("val acc", ">8"), ("test acc", ">8"),
                  ("wall s", ">7"))


def stage_table(metrics: dict, stages) -> str:
    """One line per stage and model of ``metrics.json``: epochs, early stopping, losses, time.

    Args:
        metrics: a run's metrics (what :func:`lhc.training.train` returns).
        stages: the stages to list, e.g. ``("stage1", "stage2", "stage3")``.

    Returns:
        A plain-text table with a header line.
    """
    lines = [" ".join(f"{name:{spec}}" for name, spec in _TABLE_COLUMNS)]
    for stage in stages:
        for model, row in metrics["stages"].get(stage, {}).items():
            test = f"{row['test_accuracy']:.4f}" if "test_accuracy" in row else "-"
            values = (stage, model, row["epochs_run"], row["stopped_by"], row["best_epoch"],
                      f"{row['train_loss']:.4f}", f"{row['val_accuracy']:.4f}", test,
                      f"{row['wall_seconds']:.0f}")
            lines.append(" ".join(f"{value:{spec}}" for value, (_, spec)
                                  in zip(values, _TABLE_COLUMNS, strict=True)))
    return "\n".join(lines)


def learning_curves(run_dir: str | os.PathLike, stage: str, models: list[str] | None = None):
    """Loss and accuracy per epoch of one stage, with each model's best (restored) epoch marked.

    A model that ran one epoch is drawn as two points (training, validation) labelled with
    their values: a line needs two epochs, and a one-point "curve" reads as nothing. The epoch
    axis has integer ticks. The loss axis is logarithmic only when the losses span at least a
    decade (:data:`LOG_LOSS_MIN_RATIO`); over less, a log axis shows one or two unreadable
    labels ("10^0, 9x10^-1"), so it is linear.

    Call :func:`lhc.plots.apply_style` first and save with :func:`lhc.plots.save_figure`.

    Args:
        run_dir: the run directory.
        stage: ``stage1``..``stage4`` or ``lhcc``.
        models: the models to draw; default every model the stage trained.

    Returns:
        A matplotlib Figure with two panels (loss, accuracy).
    """
    folder = os.path.join(run_dir, "stages", stage)
    models = models or sorted(os.listdir(folder))
    fig, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    all_epochs, all_losses = [], []
    for model_index, (colour, model) in enumerate(zip(
            plt.rcParams["axes.prop_cycle"].by_key()["color"], models, strict=False)):
        rows = read_history(run_dir, stage, model)
        epochs = [row["epoch"] for row in rows]
        all_epochs += epochs
        summary = os.path.join(folder, model, SUMMARY_FILE)
        best_epoch = None
        if os.path.exists(summary):  # the stage is done: its restored best epoch is known
            with open(summary, encoding="utf-8") as handle:
                best_epoch = json.load(handle)["best_epoch"]
        for axis, key in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
            for prefix, style, split in (("", "--", "training"), ("val_", "-", "validation")):
                values = [row[f"{prefix}{key}"] for row in rows]
                if key == "loss":
                    all_losses += values
                if len(rows) == 1:
                    # Hollow training marker, filled validation marker: the two stay
                    # apart even where their values coincide.
                    axis.plot(epochs, values, linestyle="none", marker="o", markersize=8,
                              color=colour, markerfacecolor="white" if not prefix else colour,
                              label=f"{model} {split}")
                    _label_point(axis, epochs[0], values[0], below=not prefix, colour=colour,
                                 column=model_index)
                else:
                    axis.plot(epochs, values, f"{style}o", color=colour, label=f"{model} {split}")
            # A one-epoch stage has nothing else to restore: no band.
            if best_epoch is not None and len(rows) > 1:
                axis.axvline(best_epoch, color=colour, alpha=0.3, linewidth=3)
    single_epoch = max(all_epochs, default=1) == min(all_epochs, default=1)
    loss_scale = _loss_scale(all_losses)
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy" + (" (log scale)" if loss_scale == "log"
                                                            else ""),
                  yscale=loss_scale, title=f"{stage}: loss")
    if loss_scale == "log":
        _plain_log_ticks(loss_axis, all_losses)
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy",
                      title=f"{stage}: accuracy" + ("" if single_epoch
                                                    else " (band: best epoch, restored)"))
    accuracy_axis.legend(loc="best", fontsize="small")
    for axis in (loss_axis, accuracy_axis):
        _integer_epoch_axis(axis, all_epochs)
    if single_epoch:
        for axis in (loss_axis, accuracy_axis):
            axis.margins(y=0.35)  # room for the value labels above and below the points
    fig.tight_layout()
    return fig


# Losses spanning less than this ratio get a linear axis (see learning_curves).
LOG_LOSS_MIN_RATIO = 10.0


def _loss_scale(losses) -> str:
    """``"log"`` when the positive losses span at least :data:`LOG_LOSS_MIN_RATIO`, else linear."""
    positive = [value for value in losses if value > 0]
    if not positive or max(positive) / min(positive) < LOG_LOSS_MIN_RATIO:
        return "linear"
    return "log"


def _plain_log_ticks(axis, losses) -> None:
    """Plain-number ticks on a log loss axis: 1, 2, 5, 10, ... over up to three decades.

    Powers of ten alone leave a loss of 1.9 between the unlabelled minor ticks of 10^0 and 10^1.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    positive = [value for value in losses if value > 0]
    decades = np.log10(max(positive) / min(positive))
    axis.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades < 3 else (1.0,)))
    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.yaxis.set_minor_formatter(NullFormatter())


def _label_point(axis, epoch: int, value: float, below: bool, colour, column: int) -> None:
    """Write ``value`` beside a one-epoch point, above it (validation) or below (training).

    Args:
        axis: the panel.
        epoch: the point's epoch.
        value: the point's value, written with three decimals.
        below: write the value below the point rather than above it.
        colour: the model's colour.
        column: the model's index: each model's labels stand further right, so that two
            models with close values do not write over each other.
    """
    axis.annotate(f"{value:.3f}", (epoch, value), xytext=(10 + 45 * column, -10 if below else 10),
                  textcoords="offset points", ha="left", va="center", fontsize=9, color=colour)


def _integer_epoch_axis(axis, epochs) -> None:
    """Integer epoch ticks, and half an epoch of room at either end.

    Matplotlib's own limits for a single epoch are 0.96..1.04 with fractional ticks; fixed
    ticks at every epoch (up to a dozen) and ``MaxNLocator(integer=True)`` beyond avoid that.
    """
    from matplotlib.ticker import MaxNLocator

    if not epochs:
        return
    first, last = min(epochs), max(epochs)
    axis.set_xlim(first - 0.5, last + 0.5)
    if last - first < 12:
        axis.set_xticks(range(first, last + 1))
    else:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
