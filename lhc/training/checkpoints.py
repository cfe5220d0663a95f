"""Per-epoch checkpoints of one training stage, written so that a kill -9 never corrupts one.

A stage's checkpoint folder holds one sub-folder per kept epoch and a pointer::

    checkpoints/
      epoch_0003/model.weights.h5   the weights after epoch 3, and the optimizer's variables
      epoch_0003/rng.npz            the RNG state (see below)
      epoch_0003/progress.json      epoch, early-stopping state, history of the stage so far
      latest.json                   {"epoch": 3, "folder": "epoch_0003"}

``model.save_weights`` of a compiled Keras 3 model stores its optimizer's variables (step
count, moments) beside the weights, and ``load_weights`` restores them into a built optimizer;
loading checks the restored step count against the one recorded, so that a Keras that stopped
doing so fails loudly instead of resuming with a fresh optimizer.

Every file is written atomically (:func:`lhc._io.atomic_path`) and the pointer last, so a run
killed at any moment resumes from the last epoch whose checkpoint is complete. Only the latest
epoch and the epochs named in ``keep`` (the early-stopping best, whose weights are the ones
restored at the end of the stage) stay on disk.

The RNG state is what Keras keeps besides the weights: the states of the model's seed
generators. The training model's augmentation layers (:func:`lhc.data.pipeline.with_inputs`)
draw their transformations from them, and ``save_weights`` does not store them, so they are
saved here. The order of the batches is a permutation of (seed, stage, epoch), so the epoch
number restores it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

import keras
import numpy as np

from lhc._io import atomic_path, write_json

__all__ = ["POINTER", "epoch_folder", "load_checkpoint", "rng_variables", "save_checkpoint"]

POINTER = "latest.json"
WEIGHTS = "model.weights.h5"
RNG = "rng.npz"
PROGRESS = "progress.json"


def epoch_folder(folder: str | Path, epoch: int) -> Path:
    """The sub-folder of ``folder`` holding the checkpoint after ``epoch`` (1-based)."""
    return Path(folder) / f"epoch_{epoch:04d}"


def rng_variables(model: keras.Model) -> list:
    """The model's seed-generator states: the variables Keras tracks beyond its weights."""
    weight_ids = {id(weight) for weight in model.weights}
    return [variable for variable in model.variables if id(variable) not in weight_ids]


def save_checkpoint(folder: str | Path, epoch: int, model: keras.Model, progress: dict[str, Any],
                    keep: Collection[int] = ()) -> Path:
    """Write the checkpoint after ``epoch`` and point ``latest.json`` at it.

    Args:
        folder: the stage's checkpoint folder.
        epoch: epochs completed (1-based number of the epoch just finished).
        model: a compiled model whose optimizer is built.
        progress: JSON-serialisable state of the stage (early stopping, history); the epoch
            and the optimizer's step count are added.
        keep: other epochs whose checkpoints must stay (e.g. the best epoch's).

    Returns:
        The epoch's checkpoint folder.
    """
    target = epoch_folder(folder, epoch)
    with atomic_path(target / WEIGHTS, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    with atomic_path(target / RNG, suffix=".npz") as tmp:
        np.savez(tmp, *[keras.ops.convert_to_numpy(variable) for variable in rng_variables(model)])
    write_json(target / PROGRESS, {**progress, "epoch": epoch,
                                   "optimizer_steps": _steps(model.optimizer)})
    write_json(Path(folder) / POINTER, {"epoch": epoch, "folder": target.name})
    wanted = {target.name, *(epoch_folder(folder, kept).name for kept in keep)}
    for old in Path(folder).glob("epoch_*"):
        if old.name not in wanted:
            shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(folder: str | Path, model: keras.Model) -> dict[str, Any] | None:
    """Restore weights, optimizer and RNG state from the latest checkpoint in ``folder``.

    Args:
        folder: the stage's checkpoint folder.
        model: the same architecture, compiled, with its optimizer built.

    Returns:
        The saved progress (``epoch`` and the rest), or None when there is no checkpoint.

    Raises:
        ValueError: the checkpoint does not fit the model, or its optimizer state did not load.
    """
    pointer = Path(folder) / POINTER
    if not pointer.exists():
        return None
    target = Path(folder) / json.loads(pointer.read_text())["folder"]
    model.load_weights(target / WEIGHTS)
    progress = json.loads((target / PROGRESS).read_text())
    if _steps(model.optimizer) != progress["optimizer_steps"]:
        raise ValueError(f"{target / WEIGHTS}: the optimizer restored at step "
                         f"{_steps(model.optimizer)}, the checkpoint was written at step "
                         f"{progress['optimizer_steps']}; its optimizer state was not restored")
    variables = rng_variables(model)
    with np.load(target / RNG) as stored:
        if len(stored.files) != len(variables):
            raise ValueError(f"{target / RNG}: {len(stored.files)} RNG states stored, the model "
                             f"has {len(variables)}; the checkpoint is of another model")
        for index, variable in enumerate(variables):
            variable.assign(stored[f"arr_{index}"])
    return progress


def _steps(optimizer) -> int:
    return int(keras.ops.convert_to_numpy(optimizer.iterations))
