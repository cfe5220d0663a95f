"""A run at a glance: learning curves (loss and accuracy per epoch) and the per-stage table."""

from __future__ import annotations

import json
import os

import matplotlib.pyplot as plt

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
    for colour, model in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], models,
                             strict=False):
        rows = read_history(run_dir, stage, model)
        epochs = [row["epoch"] for row in rows]
        summary = os.path.join(folder, model, SUMMARY_FILE)
        best_epoch = None
        if os.path.exists(summary):  # the stage is done: its restored best epoch is known
            with open(summary, encoding="utf-8") as handle:
                best_epoch = json.load(handle)["best_epoch"]
        for axis, key in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
            axis.plot(epochs, [row[key] for row in rows], "--o", color=colour,
                      label=f"{model} training")
            axis.plot(epochs, [row[f"val_{key}"] for row in rows], "-o", color=colour,
                      label=f"{model} validation")
            if best_epoch is not None:
                axis.axvline(best_epoch, color=colour, alpha=0.3, linewidth=3)
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title=f"{stage}: loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title=f"{stage}: accuracy "
                      "(band: best epoch, restored)")
    accuracy_axis.legend(loc="best", fontsize="small")
    for axis in (loss_axis, accuracy_axis):
        axis.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig
