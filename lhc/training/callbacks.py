"""The callbacks of a stage's one ``fit``: divergence guard, epoch order, early stopping and
checkpoints (paper section 3: early stopping on validation accuracy, best epoch restored).

A stage calls ``fit(epochs=max_epochs)`` once, also when it resumes (``initial_epoch``); these
callbacks do the rest, in this order:

1. :class:`DivergenceGuard` stops at the first NaN or infinite training loss;
2. :class:`EpochOrder` gives the epoch's number to the training batches before it starts, so
   the order of every epoch is that of (seed, epoch), resumed or not;
3. :class:`EarlyStoppingCheckpoint` records the epoch, keeps Keras'
   ``EarlyStopping(monitor="val_accuracy", restore_best_weights=True)`` state (stop after
   ``patience`` epochs without a strictly higher validation accuracy) and writes the epoch's
   checkpoint and the history, so that a kill at any moment loses at most the running epoch.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

import keras

from lhc._io import write_text
from lhc.training.checkpoints import NonFiniteWeights, save_checkpoint

__all__ = ["HISTORY_COLUMNS", "KERAS_METRICS", "DivergenceGuard", "EarlyStoppingCheckpoint",
           "EpochOrder", "write_history"]

KERAS_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
HISTORY_COLUMNS = ("epoch", *KERAS_METRICS, "learning_rate", "seconds")


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first NaN or infinite training loss and records where."""

    def __init__(self):
        super().__init__()
        self.failure: dict[str, Any] | None = None

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, batch)

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, None)

    def _check(self, logs, batch):
        loss = (logs or {}).get("loss")
        if self.failure is None and loss is not None and not math.isfinite(float(loss)):
            self.failure = {"batch": batch, "loss": str(float(loss))}
            self.model.stop_training = True


class EpochOrder(keras.callbacks.Callback):
    """Sets the training batches' epoch (:meth:`lhc.data.pipeline.EpochBatches.set_epoch`)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)


class EarlyStoppingCheckpoint(keras.callbacks.Callback):
    """Early stopping on validation accuracy, with its state in every epoch's checkpoint.

    Args:
        checkpoint_dir: the stage's checkpoint folder.
        history_path: the stage's ``history.csv``.
        progress: the stage's state so far (``best_value``, ``best_epoch``, ``wait``,
            ``history``, ``wall_seconds``, ...), from a checkpoint or fresh; updated in place.
        patience: epochs without a strictly higher validation accuracy before stopping.
        guard: the stage's :class:`DivergenceGuard`: a diverged epoch is never recorded.
        started: ``time.monotonic()`` when the stage (or its resumption) began: the first
            epoch's wall time includes building the model.
    """

    def __init__(self, checkpoint_dir: Path, history_path: Path, progress: dict[str, Any],
                 patience: int, guard: DivergenceGuard, started: float):
        super().__init__()
        self.checkpoint_dir, self.history_path = checkpoint_dir, history_path
        self.progress, self.patience, self.guard = progress, patience, guard
        self.epochs_done = len(progress["history"])
        self._epoch_started = self._since_checkpoint = started

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.failure is not None:
            return
        logs = logs or {}
        row = {"epoch": epoch + 1, **{key: float(logs[key]) for key in KERAS_METRICS},
               "learning_rate": float(keras.ops.convert_to_numpy(
                   self.model.optimizer.learning_rate)),
               "seconds": round(time.monotonic() - self._epoch_started, 3)}
        progress = self.progress
        progress["history"].append(row)
        progress["wait"] += 1
        if progress["best_value"] is None or row["val_accuracy"] > progress["best_value"]:
            progress.update(best_value=row["val_accuracy"], best_epoch=epoch + 1, wait=0)
        progress["wall_seconds"] += time.monotonic() - self._since_checkpoint
        try:
            save_checkpoint(self.checkpoint_dir, epoch + 1, self.model, progress,
                            keep=[progress["best_epoch"]])
        except NonFiniteWeights:
            # A finite loss over weights gone NaN: diverged all the same, and never "good".
            self.guard.failure = {"batch": None, "loss": str(row["loss"]),
                                  "weights": "not finite"}
            self.model.stop_training = True
            return
        self.epochs_done = epoch + 1
        self._since_checkpoint = time.monotonic()
        write_history(self.history_path, progress["history"])
        if progress["wait"] >= self.patience:
            self.model.stop_training = True

    def seconds_since_checkpoint(self) -> float:
        return time.monotonic() - self._since_checkpoint


def write_history(path: Path, rows: list[dict]) -> None:
    """The stage's per-epoch rows as ``history.csv`` (:data:`HISTORY_COLUMNS`), atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
