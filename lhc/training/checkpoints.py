"""Per-epoch checkpoints of one training stage: verified on resume, fallen back from when damaged.

A stage's checkpoint folder holds one sub-folder per kept epoch and a pointer::

    checkpoints/
      epoch_0003/model.weights.h5   the weights after epoch 3, and the optimizer's variables
      epoch_0003/rng.npz            the RNG state (see below)
      epoch_0003/progress.json      epoch, early-stopping state, history of the stage so far
      epoch_0003/digest.json        size and SHA-256 of each file above, written last
      latest.json                   {"epoch": 3, "folder": "epoch_0003"}: an index, rebuildable
    damaged/                        (beside checkpoints/) damaged checkpoints, kept for inspection

``model.save_weights`` of a compiled Keras 3 model stores its optimizer's variables (step
count, moments) beside the weights, and ``load_weights`` restores them into a built optimizer;
loading checks the restored step count against the one recorded, so that a Keras that stopped
doing so fails loudly instead of resuming with a fresh optimizer.

An epoch's files are written into a hidden temporary folder, the digest last, and the folder is
then renamed into place: a checkpoint folder exists complete or not at all, and a kill -9 at
any moment leaves the last complete one. Damage after the fact (a truncated file, flipped bytes,
a disk that lost a block) is what the digest catches. :func:`load_checkpoint` verifies the
newest checkpoint before it touches the model: size and digest of every file, weights finite,
and the early-stopping best epoch's checkpoint intact too (the stage ends with those weights).
A damaged checkpoint is moved to ``damaged/`` with one log line naming the file and why, and
the next newest intact one is used, or the stage's start: training is deterministic, so the
resumed run still ends exactly where an uninterrupted one would. Weights that are not finite
are never written as a checkpoint (:class:`NonFiniteWeights`).

Only the latest two epochs and the epochs named in ``keep`` (the early-stopping best) stay on
disk, so a damaged latest checkpoint costs one epoch, not the stage.

The RNG state is what Keras keeps besides the weights: the states of the model's seed
generators. The training model's augmentation layers (:func:`lhc.data.pipeline.with_inputs`)
draw their transformations from them, and ``save_weights`` does not store them, so they are
saved here. The order of the batches is a permutation of (seed, stage, epoch), so the epoch
number restores it.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import keras
import numpy as np

from lhc._io import ensure_space, file_digest, naming_full_disks, read_json, write_json

__all__ = ["DAMAGED", "POINTER", "NonFiniteWeights", "epoch_folder", "load_checkpoint",
           "rng_variables", "save_checkpoint", "verify_checkpoint"]

logger = logging.getLogger(__name__)

POINTER = "latest.json"
WEIGHTS = "model.weights.h5"
RNG = "rng.npz"
PROGRESS = "progress.json"
DIGEST = "digest.json"
DAMAGED = "damaged"  # beside the checkpoint folder, which a finished stage removes
_DATA_FILES = (WEIGHTS, RNG, PROGRESS)
# h5 and npz framing on top of the arrays' bytes; generous, it only guards the space check.
_OVERHEAD = 1.05
_OVERHEAD_BYTES = 1 << 20
_KEPT_LATEST = 2


class NonFiniteWeights(ValueError):
    """A model's weights hold NaN or infinity: never written as a checkpoint."""


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

    Raises:
        NonFiniteWeights: a weight or optimizer variable is NaN or infinite.
        lhc._io.DiskFull: the checkpoint would not fit on the disk (checked before writing).
    """
    folder = Path(folder)
    variables = [*model.variables, *model.optimizer.variables]
    # Checked where the variables live (one boolean each comes back), not on a host copy.
    bad = [variable.path for variable in variables
           if "float" in str(variable.dtype)
           and not bool(keras.ops.convert_to_numpy(keras.ops.all(keras.ops.isfinite(variable))))]
    if bad:
        raise NonFiniteWeights(f"{folder}: epoch {epoch}'s weights are not finite "
                               f"({len(bad)} variables, e.g. {bad[0]}); no checkpoint written")
    stored_bytes = sum(math.prod(variable.shape) * np.dtype(variable.dtype).itemsize
                       for variable in variables)
    ensure_space(folder, int(_OVERHEAD * stored_bytes) + _OVERHEAD_BYTES)
    folder.mkdir(parents=True, exist_ok=True)
    target = epoch_folder(folder, epoch)
    # A hidden folder until complete: _checkpoints() never lists it.
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=folder))
    try:
        with naming_full_disks(folder):
            model.save_weights(partial / WEIGHTS)
            np.savez(partial / RNG, *[keras.ops.convert_to_numpy(variable)
                                      for variable in rng_variables(model)])
            write_json(partial / PROGRESS, {**progress, "epoch": epoch,
                                            "optimizer_steps": _steps(model.optimizer)})
            write_json(partial / DIGEST, {"files": {
                name: {"bytes": (partial / name).stat().st_size,
                       "sha256": file_digest(partial / name)} for name in _DATA_FILES}})
            if target.exists():  # an epoch trained again after a fall back: same state, rewritten
                shutil.rmtree(target)
            os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    write_json(folder / POINTER, {"epoch": epoch, "folder": target.name})
    newest = [path.name for _, path in _checkpoints(folder)[:_KEPT_LATEST]]
    wanted = {*newest, *(epoch_folder(folder, kept).name for kept in keep)}
    for _, old in _checkpoints(folder):
        if old.name not in wanted:
            shutil.rmtree(old, ignore_errors=True)
    for leftover in folder.glob(".epoch_*.partial"):  # of a writer killed mid-checkpoint
        shutil.rmtree(leftover, ignore_errors=True)
    return target


def load_checkpoint(folder: str | Path, model: keras.Model,
                    warn=logger.warning) -> dict[str, Any] | None:
    """Restore weights, optimizer and RNG state from the newest intact checkpoint in ``folder``.

    Damaged checkpoints (:func:`verify_checkpoint`) are moved to ``damaged/`` beside
    ``folder``, never deleted, each with one ``warn`` line naming the file; a damaged
    ``latest.json`` is moved there too and rebuilt from the checkpoints that verify.

    Args:
        folder: the stage's checkpoint folder.
        model: the same architecture, compiled, with its optimizer built.
        warn: receives the one-line messages about damaged files.

    Returns:
        The saved progress (``epoch`` and the rest), or None when no intact checkpoint exists
        (the stage starts from its beginning).

    Raises:
        ValueError: an intact checkpoint does not fit the model, or its optimizer state did
            not load.
    """
    folder = Path(folder)
    pointer = folder / POINTER
    indexed = _read_pointer(pointer, warn)
    candidates = _checkpoints(folder)
    chosen, progress, damaged = None, None, []
    for epoch, candidate in candidates:
        reason = verify_checkpoint(candidate)
        if reason is None:
            progress = read_json(candidate / PROGRESS)
            best = progress.get("best_epoch")
            best_reason = (None if best in (None, epoch)
                           else verify_checkpoint(epoch_folder(folder, best)))
            if best_reason is not None:
                reason = f"{candidate}: its best epoch's checkpoint is damaged ({best_reason})"
        if reason is None:
            chosen = candidate
            break
        damaged.append((candidate, reason))
    resumed_from = f"epoch {progress['epoch']}" if chosen else "the stage's start"
    for candidate, reason in damaged:
        aside = _set_aside(candidate)
        warn(f"{reason}; damaged checkpoint moved to {aside}; resuming from {resumed_from}")
    if chosen is None:
        if pointer.exists():
            _set_aside(pointer)
        return None
    if indexed != chosen.name:
        if indexed is not None and not damaged:  # else the lines above said why
            warn(f"{pointer}: named {indexed}, the newest intact checkpoint is {chosen.name}; "
                 "rebuilt")
        write_json(pointer, {"epoch": progress["epoch"], "folder": chosen.name})
    try:
        model.load_weights(chosen / WEIGHTS)
    except Exception as error:  # verified intact, so it is of another model
        raise ValueError(f"{chosen / WEIGHTS}: does not fit the model ({error})") from None
    if _steps(model.optimizer) != progress["optimizer_steps"]:
        raise ValueError(f"{chosen / WEIGHTS}: the optimizer restored at step "
                         f"{_steps(model.optimizer)}, the checkpoint was written at step "
                         f"{progress['optimizer_steps']}; its optimizer state was not restored")
    variables = rng_variables(model)
    with np.load(chosen / RNG) as stored:
        if len(stored.files) != len(variables):
            raise ValueError(f"{chosen / RNG}: {len(stored.files)} RNG states stored, the model "
                             f"has {len(variables)}; the checkpoint is of another model")
        for index, variable in enumerate(variables):
            variable.assign(stored[f"arr_{index}"])
    return progress


def verify_checkpoint(target: str | Path) -> str | None:
    """Why the checkpoint folder ``target`` cannot be trusted, or None when it is intact.

    Intact means: ``digest.json`` reads, every file it lists has its recorded size and
    SHA-256, ``progress.json`` reads, and every floating-point array of the weights file is
    finite. Nothing is loaded into a model.

    Returns:
        None, or the reason, beginning with the file at fault (``<file>: <what is wrong>``).
    """
    import h5py

    target = Path(target)
    try:
        recorded = read_json(target / DIGEST)["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{target / DIGEST}: unreadable ({error})"
    for name in _DATA_FILES:
        path, entry = target / name, recorded.get(name) if isinstance(recorded, dict) else None
        if entry is None:
            return f"{target / DIGEST}: lists no {name}"
        if not path.exists():
            return f"{path}: missing"
        size = path.stat().st_size
        if size != entry["bytes"]:
            return f"{path}: {size} bytes, {entry['bytes']} written (truncated or extended)"
        if file_digest(path) != entry["sha256"]:
            return f"{path}: its SHA-256 differs from the one written (bytes changed)"
    try:
        read_json(target / PROGRESS)
    except ValueError as error:
        return str(error)
    not_finite = []
    try:
        with h5py.File(target / WEIGHTS, "r") as weights:
            def check(name, item):
                if (isinstance(item, h5py.Dataset) and np.issubdtype(item.dtype, np.floating)
                        and not np.isfinite(item[()]).all()):
                    not_finite.append(name)
            weights.visititems(check)
    except OSError as error:
        return f"{target / WEIGHTS}: unreadable as HDF5 ({error})"
    if not_finite:
        return f"{target / WEIGHTS}: weights not finite ({len(not_finite)} arrays, e.g. " \
               f"{not_finite[0]})"
    return None


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(epoch, folder) of the published checkpoints, newest first."""
    found = []
    for path in Path(folder).glob("epoch_*"):
        number = path.name.removeprefix("epoch_")
        if path.is_dir() and number.isdigit():
            found.append((int(number), path))
    return sorted(found, reverse=True)


def _read_pointer(pointer: Path, warn) -> str | None:
    """The folder ``latest.json`` names; None when absent, or damaged (then set aside)."""
    if not pointer.exists():
        return None
    try:
        named = read_json(pointer)["folder"]
        if not isinstance(named, str):
            raise ValueError(f"{pointer}: 'folder' is {named!r}, expected a folder name")
        return named
    except (ValueError, KeyError, TypeError) as error:
        aside = _set_aside(pointer)
        warn(f"{pointer}: damaged checkpoint index ({str(error).removeprefix(f'{pointer}:')}); "
             f"moved to {aside}; rebuilt from the checkpoints that verify")
        return None


def _set_aside(path: Path) -> Path:
    """Move a damaged file or folder to ``damaged/`` beside the checkpoint folder, unique."""
    root = path.parent.parent / DAMAGED  # path is checkpoints/epoch_NNNN or checkpoints/latest.json
    root.mkdir(parents=True, exist_ok=True)
    destination, number = root / path.name, 1
    while destination.exists():
        number += 1
        destination = root / f"{path.name}.{number}"
    shutil.move(path, destination)
    return destination


def _steps(optimizer) -> int:
    return int(keras.ops.convert_to_numpy(optimizer.iterations))
