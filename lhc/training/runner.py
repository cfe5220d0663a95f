"""Runs of the paper's protocol: :func:`train` and :func:`resume` (paper section 3).

A run directory holds everything about one run and survives interruption, even kill -9; its
layout is :class:`lhc.training.layout.RunLayout`'s. Each stage is one
:func:`lhc.training.stage.run_stage`: build, one ``fit``, finish.

Training is seeded and deterministic on one machine, on TensorFlow and on JAX: each stage seeds
Python, NumPy and Keras (and TensorFlow, whose op determinism is on) from (seed, stage) before
building its model; every epoch's order is a permutation of (seed, stage, epoch), and the
augmentation layers' seed states travel in each checkpoint, so a resumed run sees exactly the
batches the uninterrupted one saw. Early stopping follows Keras'
``EarlyStopping(monitor="val_accuracy", restore_best_weights=True)``: the stage stops after
``patience`` epochs without a strictly higher validation accuracy, and ends with the best
epoch's weights. A NaN or infinite training loss stops the stage and the run, marks it
diverged and keeps the last good checkpoint (the paper saw LHC training diverge).

One process writes a run directory at a time (:mod:`lhc.training.run_lock`). An interrupt
(Ctrl-C) surfaces as :class:`Interrupted`, which says after which epoch of which stage the run
stopped; the checkpoints are intact and :func:`resume` continues.

The paper's acceptance rule for stage 4 is recorded, never enforced by deleting: a stage-4
model is kept when its training loss is at most 1.1 times the starting backbone's. Both are the
training losses Keras logged in the epoch whose weights each stage kept (stage 3's best epoch
for the backbone, stage 4's best epoch for the new model).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lhc._io import DiskFull, read_json, write_json, write_text
from lhc.training.callbacks import HISTORY_COLUMNS, KERAS_METRICS, DivergenceGuard
from lhc.training.distribute import check_strategy, make_strategy, precision_policy
from lhc.training.layout import RunLayout
from lhc.training.profiles import STAGES, Profile, load_profile
from lhc.training.registry import build_model
from lhc.training.run_lock import LOCK_FILE, run_lock
from lhc.training.stage import finished_folder, predecessor, run_stage, stage_tracks

__all__ = ["ACCEPTANCE_FACTOR", "HISTORY_COLUMNS", "KERAS_METRICS", "DivergenceGuard",
           "Interrupted", "NotARunDirectory", "acceptance", "build_model", "finished_folder", "load_data", "parse_stages",
           "read_history", "resume", "stage_tracks", "train"]

ACCEPTANCE_FACTOR = 1.1
# Synthetic data and carved test splits are drawn with this seed, never the run's: every run
# of a seed sweep then trains and is judged on the same images.
DATA_SEED = 0
STAGE_LABELS = {"1": "stage1", "2": "stage2", "3": "stage3", "4": "stage4", "C": "lhcc"}
# File names inside a run directory, for the modules that still name them (RunLayout has all).
RUN_STATE = RunLayout(".").state.name
PROFILE_FILE = RunLayout(".").profile.name
METRICS_FILE = RunLayout(".").metrics.name
SUMMARY_FILE = RunLayout(".").stage("s", "m").summary.name
FINAL_WEIGHTS = RunLayout(".").stage("s", "m").final_weights.name
INITIAL_LHC_WEIGHTS = RunLayout(".").stage("s", "m").initial_lhc_weights.name
# What the notebook sequence (lhc run) writes into a run directory before training starts.
WORKBENCH_ENTRIES = {"notebooks", "workbench.json", "data", "cache", "figures", "data_report.json",
                     LOCK_FILE}

log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """A run stopped by an interrupt (Ctrl-C); its checkpoints are intact.

    Attributes:
        run_dir: the run directory.
        stage, model: the stage and model that were training (None before the first stage).
        epoch: the epochs of that stage completed and checkpointed.
    """

    def __init__(self, run_dir: Path, stage: str | None, model: str | None, epoch: int):
        self.run_dir, self.stage, self.model, self.epoch = run_dir, stage, model, epoch
        where = (f"after epoch {epoch} of {stage} ({model})" if stage
                 else "before its first stage began")
        super().__init__(f"{run_dir}: interrupted {where}")


class NotARunDirectory(ValueError):
    """A folder to resume that holds no run (no ``run.json``)."""


def parse_stages(spec: str | list | tuple) -> tuple[str, ...]:
    """Stages to run from ``"all"``, ``"1-4"``, ``"1-3"``, ``"4,C"`` or stage names.

    ``1``..``4`` are the paper's stages and ``C`` the LHC-NetC stage (``lhcc``). The stages
    must be consecutive in the protocol's order.

    Args:
        spec: the selection.

    Returns:
        Stage names (:data:`lhc.training.profiles.STAGES`) in protocol order.
    """
    labels = list(STAGE_LABELS)
    if isinstance(spec, list | tuple):
        parts = [str(part) for part in spec]
    elif spec.strip().lower() == "all":
        return STAGES
    else:
        parts = [part.strip() for part in spec.split(",")]

    def index(label: str) -> int:
        label = label.upper() if label.lower() == "c" else label
        if label in STAGE_LABELS:
            return labels.index(label)
        if label in STAGES:
            return STAGES.index(label)
        raise ValueError(f"unknown stage {label!r} in {spec!r}; expected 1, 2, 3, 4, C "
                         f"(LHC-NetC), ranges such as 1-4, or 'all'")

    chosen = set()
    for part in parts:
        first, _, last = part.partition("-")
        chosen.update(range(index(first), index(last or first) + 1))
    ordered = sorted(chosen)
    if not ordered or ordered != list(range(ordered[0], ordered[-1] + 1)):
        raise ValueError(f"stages {spec!r} must be consecutive in the order 1, 2, 3, 4, C")
    return tuple(STAGES[position] for position in ordered)


def acceptance(backbone_train_loss: float, final_train_loss: float,
               factor: float = ACCEPTANCE_FACTOR) -> dict[str, Any]:
    """One process writes a run directory at a time (:mod:`lhc.training.run_lock`). An interrupt
(Ctrl-C) surfaces as :class:`Interrupted`, which says after which epoch of which stage the run
stopped; the checkpoints are intact and :func:`resume` continues.

The paper's acceptance rule for stage 4 (section 3, "Stage 4").

    Args:
        backbone_train_loss: training loss of the backbone stage 4 started from.
        final_train_loss: training loss of the stage-4 model; NaN or inf for a diverged run.
        factor: the allowed growth (the paper's 10% for the added complexity: 1.1).

    Returns:
        ``kept`` (final <= factor x backbone), the numbers, and the ``reason`` in words.
    """
    limit = factor * backbone_train_loss
    finite = math.isfinite(final_train_loss)
    kept = finite and final_train_loss <= limit
    if not finite:
        reason = "training diverged (non-finite training loss)"
    else:
        relation = "<=" if kept else ">"
        reason = (f"final training loss {final_train_loss:.4f} {relation} {factor:g} x starting "
                  f"backbone's {backbone_train_loss:.4f} = {limit:.4f}")
    return {"rule": f"final training loss <= {factor:g} x starting backbone's training loss",
            "factor": factor, "backbone_train_loss": backbone_train_loss,
            "final_train_loss": final_train_loss if finite else None, "limit": limit,
            "kept": kept, "reason": reason}


def _check_imagenet_weights(profile: Profile) -> None:
    path = profile.imagenet_weights
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(
            f"imagenet_weights: {path} does not exist. It must be a local h5 file of the "
            "image-classifiers resnet34 ImageNet weights (layer groups 'bn_data', 'conv0', "
            "'stage1_unit1_conv1', ...); downloads are never attempted. Set imagenet_weights: "
            "null in the profile, or leave out --imagenet-weights, to train from scratch.")


def train(profile: Profile | str, data_path: str | Path | None = None,
          out: str | Path | None = None, seed: int | None = None, stages: str | list = "all",
          *, imagenet_weights: str | Path | None = None, start_from: str | Path | None = None,
          verbose: int = 1) -> dict[str, Any]:
    """Train a profile's stages into a run directory (module docstring), or continue one.

    Calling it again on the same ``out`` with the same profile and data continues the run:
    finished stages are kept, an interrupted stage resumes from its last checkpoint, new
    stages are added (e.g. stages 1-3 first, then ``"4,C"``).

    Args:
        profile: a :class:`Profile`, a shipped profile's name or a YAML path.
        data_path: FER2013 source for :func:`lhc.data.load_fer2013`; None or "" generates the
            profile's synthetic data set (``data.n`` rows).
        out: the run directory; default ``runs/<profile name>``.
        seed: overrides the profile's seed.
        stages: which stages (:func:`parse_stages`); the first one's predecessor must be done
            in ``out`` or in ``start_from``.
        imagenet_weights: overrides the profile's local ImageNet weights file.
        start_from: another run directory whose finished stages stand in for the stages
            before the first one requested here (the seed sweeps start stage 4 this way).
        verbose: Keras' fit verbosity (0 silent, 1 progress bars, 2 one line per epoch).

    Returns:
        The run's metrics (``metrics.json``). A diverged run returns with ``status`` "diverged".

    Raises:
        ValueError: ``out`` holds another profile or data, or a stage's predecessor is missing.
        FileNotFoundError: the ImageNet weights file does not exist.
    """
    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    changes = {}
    if seed is not None:
        changes["seed"] = seed
    if imagenet_weights is not None:
        changes["imagenet_weights"] = str(imagenet_weights)
    if changes:
        profile = profile.replace(**changes)
    requested = parse_stages(stages)
    if "stage1" in requested:
        _check_imagenet_weights(profile)
    check_strategy(profile.strategy)
    run_dir = Path(out) if out else Path("runs") / profile.name
    data_path = str(Path(data_path).resolve()) if data_path else None
    start_from = str(Path(start_from).resolve()) if start_from else None
    with run_lock(run_dir, "lhc train"), _naming_the_run(run_dir):
        _prepare_run_dir(run_dir, profile, data_path, requested, start_from)
        return _execute(run_dir, verbose)


def resume(run_dir: str | Path, verbose: int = 1) -> dict[str, Any]:
    """Continue a run after an interruption (even kill -9) from its last completed epoch.

    The resumed run reaches the same weights as an uninterrupted one on the same machine.

    Args:
        run_dir: the run directory.
        verbose: Keras' fit verbosity.

    Returns:
        The run's metrics (``metrics.json``).

    Raises:
        NotARunDirectory: ``run_dir`` is missing or holds no run.
    """
    run_dir = Path(run_dir)
    if not (run_dir / RUN_STATE).exists():
        what = "does not exist" if not run_dir.exists() else f"holds no run (no {RUN_STATE})"
        raise NotARunDirectory(f"{run_dir}: {what}; start a run there with "
                               f"lhc.training.train(profile, out={str(run_dir)!r})")
    with run_lock(run_dir, "lhc train --resume"), _naming_the_run(run_dir):
        return _execute(run_dir, verbose)


@contextlib.contextmanager
def _naming_the_run(run_dir: Path) -> Iterator[None]:
    """A full disk names the run it stopped (``DiskFull.run_dir``), for the resume hint."""
    try:
        yield
    except DiskFull as full:
        full.run_dir = run_dir
        raise


def _prepare_run_dir(run_dir: Path, profile: Profile, data_path: str | None,
                     stages: tuple[str, ...], start_from: str | None) -> None:
    """Check everything a run needs before its folder is written; then write or update it."""
    state_path = run_dir / RUN_STATE
    if state_path.exists():
        stored = load_profile(run_dir / PROFILE_FILE).to_dict()
        wanted = profile.to_dict()
        differing = [key for key in wanted if wanted[key] != stored[key]]
        if differing:
            raise ValueError(f"{run_dir} holds a run of another profile (differs in {differing}); "
                             "choose another out folder, or continue it with resume()")
        state = read_json(state_path)
        for key, value in (("data_path", data_path), ("start_from", start_from)):
            if value is not None and state[key] != value:
                raise ValueError(f"{run_dir} was run with {key} {state[key]!r}, not {value!r}")
        state["stages"] = list(stages)
    else:
        if run_dir.exists() and any(entry.name not in WORKBENCH_ENTRIES
                                    for entry in run_dir.iterdir()):
            raise ValueError(f"{run_dir} exists and is not a run directory (no {RUN_STATE}); "
                             "choose a new or empty folder")
        if data_path is not None and not Path(data_path).exists():
            raise FileNotFoundError(f"{data_path}: no such FER2013 source")
        state = {"profile": profile.name, "data_path": data_path, "start_from": start_from,
                 "stages": list(stages), "diverged": None}
    _check_predecessors(run_dir, profile, state)
    if not (run_dir / PROFILE_FILE).exists():
        write_text(run_dir / PROFILE_FILE, profile.to_yaml())
    write_json(state_path, state)


def _execute(run_dir: Path, verbose: int) -> dict[str, Any]:
    state = read_json(run_dir / RUN_STATE)
    profile = load_profile(run_dir / PROFILE_FILE)
    if state["diverged"]:
        where = state["diverged"]
        log.warning("%s: diverged in %s %s epoch %s; nothing to resume", run_dir,
                    where["stage"], where["model"], where["epoch"])
        return _write_metrics(run_dir, profile, state, None)
    _check_predecessors(run_dir, profile, state)
    if "stage1" in state["stages"]:
        _check_imagenet_weights(profile)
    data = load_data(profile, state["data_path"], run_dir)
    log.info("%s: profile %s (%s), stages %s, seed %s, data %s (%s)", run_dir, profile.name,
             profile.mode, state["stages"], profile.seed, data.source,
             ", ".join(f"{split} {len(rows)}" for split, rows in data.splits.items()))
    running: tuple[str | None, str | None] = (None, None)
    try:
        with precision_policy(profile.precision):
            placement = make_strategy(profile.strategy)
            for stage in state["stages"]:
                results = {}
                for track in stage_tracks(profile, stage):
                    running = stage, track
                    results[track] = run_stage(run_dir, profile, state, stage, track, data,
                                               placement, verbose)
                    if "diverged" in results[track]:
                        state["diverged"] = results[track]["diverged"]
                        write_json(run_dir / RUN_STATE, state)
                        log.warning("%s %s: DIVERGED at epoch %s (loss %s); run stopped, last "
                                    "good checkpoint kept", stage, track,
                                    state["diverged"]["epoch"], state["diverged"]["loss"])
                        return _write_metrics(run_dir, profile, state, data)
                if len(results) > 1:
                    log.info("%s side by side: %s", stage, " | ".join(
                        f"{track} val_accuracy {result['val_accuracy']:.4f}"
                        for track, result in results.items()))
                metrics = _write_metrics(run_dir, profile, state, data)
                if stage == "stage4" and "acceptance" in metrics:
                    log.info("stage4 acceptance: %s (%s)",
                             "kept" if metrics["acceptance"]["kept"] else "REJECTED",
                             metrics["acceptance"]["reason"])
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, Interrupted):
            raise
        raise Interrupted(run_dir, *running, _epochs_checkpointed(run_dir, *running)) from None
    return _write_metrics(run_dir, profile, state, data)


def _epochs_checkpointed(run_dir: Path, stage: str | None, track: str | None) -> int:
    """Epochs of ``stage`` whose checkpoint is published (0 when none, or unreadable)."""
    return next((epoch for begun, model, epoch in RunLayout(run_dir).checkpointed()
                 if (begun, model) == (stage, track)), 0)


def _check_predecessors(run_dir: Path, profile: Profile, state: dict) -> None:
    """Every requested stage's predecessor is finished or requested before it."""
    for stage in state["stages"]:
        for track in stage_tracks(profile, stage):
            needed = predecessor(profile, stage, track)
            if (needed and needed[0] not in state["stages"]
                    and finished_folder(run_dir, state, *needed) is None):
                elsewhere = f" nor in {state['start_from']}" if state["start_from"] else ""
                raise ValueError(
                    f"{run_dir}: {stage} ({track}) starts from {needed[0]}'s trained "
                    f"{needed[1]}, which is neither finished in this run{elsewhere} nor "
                    f"requested before it; run {needed[0]} first or pass start_from")


def load_data(profile: Profile, data_path: str | None, run_dir: Path):
    from lhc.data import load_fer2013
    from lhc.data.synthetic import write_fer2013_csv

    if data_path is None:
        path = run_dir / "data" / f"synthetic_n{profile.data.n}_seed{DATA_SEED}.csv.gz"
        if not path.exists():
            write_fer2013_csv(path, n=profile.data.n, seed=DATA_SEED)
    else:
        path = Path(data_path)
    data = load_fer2013(path, carve_test=profile.data.carve_test, seed=DATA_SEED)
    if "train" not in data.splits or "val" not in data.splits:
        raise ValueError(f"{path}: training needs a train split (Training) and a val split "
                         f"(PublicTest, for early stopping); found {list(data.splits)}")
    return data


def read_history(run_dir: str | Path, stage: str, model: str | None = None) -> list[dict]:
    """The per-epoch history of a stage's model (``history.csv``) as a list of dicts.

    Args:
        run_dir: the run directory.
        stage: a stage name (``stage1``..``stage4``, ``lhcc``).
        model: the model's name; may be left out when the stage trained one model.

    Returns:
        One dict per epoch with :data:`HISTORY_COLUMNS` as numbers.
    """
    folder = Path(run_dir) / "stages" / stage
    if model is None:
        models = sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []
        if len(models) != 1:
            raise ValueError(f"{folder}: name the model, the stage trained {models or 'none'}")
        model = models[0]
    with open(folder / model / "history.csv", newline="", encoding="utf-8") as handle:
        return [{key: (int(value) if key == "epoch" else float(value))
                 for key, value in row.items()} for row in csv.DictReader(handle)]


def _write_metrics(run_dir: Path, profile: Profile, state: dict, data) -> dict[str, Any]:
    summaries: dict[str, dict[str, dict]] = {}
    for stage in STAGES:
        for track in stage_tracks(profile, stage):
            folder = finished_folder(run_dir, state, stage, track)
            if folder is not None:
                summary = json.loads((folder / SUMMARY_FILE).read_text())
                summaries.setdefault(stage, {})[track] = {**summary, "folder": str(folder)}
    done = all(track in summaries.get(stage, {}) for stage in state["stages"]
               for track in stage_tracks(profile, stage))
    metrics: dict[str, Any] = {
        "run": str(run_dir), "profile": profile.name, "mode": profile.mode, "seed": profile.seed,
        "input_size": profile.input_size, "precision": profile.precision,
        "strategy": profile.strategy, "stages_requested": state["stages"],
        "start_from": state["start_from"],
        "status": "diverged" if state["diverged"] else "complete" if done else "incomplete",
        "diverged": state["diverged"], "stages": summaries,
    }
    if data is not None:
        metrics["data"] = {"source": data.source, "split_convention": data.split_convention,
                           "counts": {name: len(split) for name, split in data.splits.items()},
                           "test_is_carved": data.test_is_carved, "notes": data.notes}
    elif (run_dir / METRICS_FILE).exists():
        metrics["data"] = json.loads((run_dir / METRICS_FILE).read_text()).get("data")
    backbone = summaries.get("stage3", {}).get("resnet34v2")
    if profile.mode == "modular" and backbone:
        stage4 = summaries.get("stage4", {}).get(profile.stages["stage4"].model)
        if stage4 or (state["diverged"] and state["diverged"]["stage"] == "stage4"):
            final = stage4["train_loss"] if stage4 else math.nan
            metrics["acceptance"] = acceptance(backbone["train_loss"], final)
    if profile.mode == "standalone":
        metrics["comparison"] = {
            stage: {track: {key: summary.get(key) for key in ("val_accuracy", "test_accuracy")}
                    for track, summary in summaries[stage].items()}
            for stage in ("stage1", "stage2", "stage3") if stage in summaries}
    write_json(run_dir / METRICS_FILE, metrics)
    return metrics
