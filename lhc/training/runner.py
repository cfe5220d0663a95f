"""Runs of the paper's protocol: :func:`train` and :func:`resume` (paper section 3).

A run directory holds everything about one run and survives interruption, even kill -9::

    runs/<name>/
      profile.yaml                      the resolved profile (block settings written out)
      run.json                          data path, stages requested, start_from, divergence
      data/                             the synthetic data set, when no data path is given
      stages/<stage>/<model>/
        history.csv                     one row per epoch (loss, accuracy, val_*, lr, seconds)
        checkpoints/                    per-epoch checkpoints (lhc.training.checkpoints)
        final.weights.h5                the stage's result: best epoch's weights (when done)
        initial_lhc_weights.npz         the LHC modules' starting weights (models with LHC)
        summary.json                    the stage's metrics; its presence marks the stage done
      tensorboard/<stage>_<model>/      keras.callbacks.TensorBoard logs
      metrics.json                      everything above summarised, rewritten after each stage

Training is seeded and deterministic on one machine: each stage seeds Python, NumPy, TF and
Keras from (seed, stage) before building its model, TensorFlow's op determinism is on, and
every epoch's batches and augmentation are drawn from (seed, stage, epoch), so a resumed run
sees exactly the batches the uninterrupted one saw. Early stopping follows Keras'
``EarlyStopping(monitor="val_accuracy", restore_best_weights=True)``: the stage stops after
``patience`` epochs without a strictly higher validation accuracy, and ends with the best
epoch's weights. A NaN or infinite training loss stops the stage and the run, marks it
diverged and keeps the last good checkpoint (the paper saw LHC training diverge).

The paper's acceptance rule for stage 4 is recorded, never enforced by deleting: a stage-4
model is kept when its training loss is at most 1.1 times the starting backbone's. Both are the
training losses Keras logged in the epoch whose weights each stage kept (stage 3's best epoch
for the backbone, stage 4's best epoch for the new model).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from lhc._io import atomic_path, write_json, write_text
from lhc.training.checkpoints import epoch_folder, load_checkpoint, save_checkpoint
from lhc.training.distribute import (
    check_strategy,
    jit_compile,
    make_deterministic,
    make_strategy,
    precision_policy,
)
from lhc.training.profiles import STAGES, Profile, load_profile

__all__ = ["ACCEPTANCE_FACTOR", "DivergenceGuard", "acceptance", "parse_stages", "read_history",
           "resume", "stage_tracks", "train"]

ACCEPTANCE_FACTOR = 1.1
# Synthetic data and carved test splits are drawn with this seed, never the run's: every run
# of a seed sweep then trains and is judged on the same images.
DATA_SEED = 0
STAGE_LABELS = {"1": "stage1", "2": "stage2", "3": "stage3", "4": "stage4", "C": "lhcc"}
KERAS_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
HISTORY_COLUMNS = ("epoch", *KERAS_METRICS, "learning_rate", "seconds")
RUN_STATE = "run.json"
PROFILE_FILE = "profile.yaml"
METRICS_FILE = "metrics.json"
SUMMARY_FILE = "summary.json"
FINAL_WEIGHTS = "final.weights.h5"
INITIAL_LHC_WEIGHTS = "initial_lhc_weights.npz"
# What the notebook sequence (lhc run) writes into a run directory before training starts.
WORKBENCH_ENTRIES = {"notebooks", "workbench.json", "data", "cache", "figures", "data_report.json"}


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


def stage_tracks(profile: Profile, stage: str) -> tuple[str, ...]:
    """The models a stage trains: one in modular mode; LHC-Net and ResNet34v2 side by side in
    stages 1-3 of standalone mode, where stage 4 trains none."""
    if profile.mode == "standalone" and stage != "lhcc":
        return () if stage == "stage4" else ("lhc_net", "resnet34v2")
    return (profile.stages[stage].model,)


def _predecessor(profile: Profile, stage: str, track: str) -> tuple[str, str] | None:
    """The (stage, model) whose final weights a stage's model starts from; None for stage 1."""
    position = STAGES.index(stage)
    if position == 0:
        return None
    previous = STAGES[position - 1]
    if not stage_tracks(profile, previous):
        previous = STAGES[position - 2]
    tracks = stage_tracks(profile, previous)
    if track in tracks:
        return previous, track
    if track == "lhc_netc" and "lhc_net" not in tracks:
        raise ValueError(f"{profile.source}: stage lhcc trains LHC-NetC from a trained LHC-Net, "
                         f"but {previous} trains {list(tracks)}; set stages.{previous}.model to "
                         "lhc_net or leave out stage C")
    return previous, "lhc_net" if track == "lhc_netc" else tracks[0]


def acceptance(backbone_train_loss: float, final_train_loss: float,
               factor: float = ACCEPTANCE_FACTOR) -> dict[str, Any]:
    """The paper's acceptance rule for stage 4 (section 3, "Stage 4").

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


class _StopAfterOneEpoch(keras.callbacks.Callback):
    # fit() runs one epoch per call, so that every epoch gets its own seeded data; asking for
    # all epochs and stopping after one keeps Keras' "Epoch k/max" progress line right.
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def _derive_seed(seed: int, *parts: int) -> int:
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0] & 0x7FFFFFFF)


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
    """
    run_dir = Path(run_dir)
    if not (run_dir / RUN_STATE).exists():
        raise ValueError(f"{run_dir}: not a run directory (no {RUN_STATE}); start it with train()")
    return _execute(run_dir, verbose)


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
        state = json.loads(state_path.read_text())
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
    state = json.loads((run_dir / RUN_STATE).read_text())
    profile = load_profile(run_dir / PROFILE_FILE)
    if state["diverged"]:
        where = state["diverged"]
        print(f"{run_dir}: diverged in {where['stage']} {where['model']} epoch {where['epoch']}; "
              "nothing to resume")
        return _write_metrics(run_dir, profile, state, None)
    _check_predecessors(run_dir, profile, state)
    if "stage1" in state["stages"]:
        _check_imagenet_weights(profile)
    data = load_data(profile, state["data_path"], run_dir)
    print(f"{run_dir}: profile {profile.name} ({profile.mode}), stages {state['stages']}, "
          f"seed {profile.seed}, data {data.source} "
          f"({', '.join(f'{k} {len(v)}' for k, v in data.splits.items())})")
    with precision_policy(profile.precision):
        strategy = make_strategy(profile.strategy)
        for stage in state["stages"]:
            results = {}
            for track in stage_tracks(profile, stage):
                results[track] = _run_stage(run_dir, profile, state, stage, track, data,
                                            strategy, verbose)
                if "diverged" in results[track]:
                    state["diverged"] = results[track]["diverged"]
                    write_json(run_dir / RUN_STATE, state)
                    print(f"{stage} {track}: DIVERGED at epoch {state['diverged']['epoch']} "
                          f"(loss {state['diverged']['loss']}); run stopped, last good "
                          f"checkpoint kept")
                    return _write_metrics(run_dir, profile, state, data)
            if len(results) > 1:
                print(f"{stage} side by side: " + " | ".join(
                    f"{track} val_accuracy {result['val_accuracy']:.4f}"
                    for track, result in results.items()))
            metrics = _write_metrics(run_dir, profile, state, data)
            if stage == "stage4" and "acceptance" in metrics:
                print(f"stage4 acceptance: {'kept' if metrics['acceptance']['kept'] else 'REJECTED'}"
                      f" ({metrics['acceptance']['reason']})")
    return _write_metrics(run_dir, profile, state, data)


def finished_folder(run_dir: Path, state: dict, stage: str, track: str) -> Path | None:
    """Folder of a finished (stage, model): this run's, else ``start_from``'s; None if neither."""
    roots = [run_dir] + ([Path(state["start_from"])] if state["start_from"] else [])
    for root in roots:
        folder = root / "stages" / stage / track
        if (folder / SUMMARY_FILE).exists():
            return folder
    return None


def _check_predecessors(run_dir: Path, profile: Profile, state: dict) -> None:
    """Every requested stage's predecessor is finished or requested before it."""
    for stage in state["stages"]:
        for track in stage_tracks(profile, stage):
            needed = _predecessor(profile, stage, track)
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


def build_model(model_name: str, profile: Profile, num_classes: int) -> keras.Model:
    from lhc.models import build_lhc_net, build_resnet34v2

    if model_name == "resnet34v2":
        return build_resnet34v2(profile.input_size_shape, num_classes)
    variant = "lhcc" if model_name == "lhc_netc" else "lhc"
    head_layout = "global" if model_name == "lhc_net_global" else "bands"
    return build_lhc_net(profile.input_size_shape, num_classes, variant=variant,
                         blocks=profile.resolved_blocks(), head_layout=head_layout,
                         value_initializer=profile.lhc_value_init)


def _initialised_model(run_dir: Path, profile: Profile, state: dict, stage: str, track: str,
                       num_classes: int) -> tuple[keras.Model, str]:
    """Build a stage's model with its starting weights; call inside the strategy's scope.

    Stage 1 starts from scratch or ImageNet; in standalone mode LHC-Net's backbone starts from
    exactly the weights the ResNet34v2 beside it starts from (built first, same seed). Later
    stages start from the predecessor's final weights, copied by layer name when the model
    changes (:func:`lhc.models.transfer_backbone_weights`).
    """
    from lhc.models import load_backbone_weights, transfer_backbone_weights

    needed = _predecessor(profile, stage, track)
    if needed is None:
        donor = build_model("resnet34v2", profile, num_classes)
        origin = "scratch"
        if profile.imagenet_weights:
            load_backbone_weights(donor, profile.imagenet_weights)
            origin = f"ImageNet weights {profile.imagenet_weights}"
        if track == "resnet34v2":
            return donor, origin
    else:
        source = finished_folder(run_dir, state, *needed) / FINAL_WEIGHTS
        origin = str(source)
        if needed[1] == track:
            model = build_model(track, profile, num_classes)
            model.load_weights(source)
            return model, origin
        donor = build_model(needed[1], profile, num_classes)
        donor.load_weights(source)
    model = build_model(track, profile, num_classes)
    transfer_backbone_weights(donor, model)
    return model, f"{origin} ({donor.name} weights copied by layer name)"


def _run_stage(run_dir: Path, profile: Profile, state: dict, stage: str, track: str, data,
               strategy, verbose: int) -> dict[str, Any]:
    """Train one model through one stage; returns its summary or ``{"diverged": ...}``."""
    from lhc.data.pipeline import make_dataset
    from lhc.models import freeze_all_but_gates

    stage_dir = run_dir / "stages" / stage / track
    checkpoint_dir = stage_dir / "checkpoints"
    if (stage_dir / SUMMARY_FILE).exists():
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # left when killed while finishing
        summary = json.loads((stage_dir / SUMMARY_FILE).read_text())
        print(f"{stage} {track}: already done (val_accuracy {summary['val_accuracy']:.4f})")
        return summary
    started = time.monotonic()
    settings = profile.stages[stage]
    stage_number = STAGES.index(stage) + 1
    num_classes = len(data.class_names)
    make_deterministic(_derive_seed(profile.seed, stage_number))
    with strategy.scope():
        model, origin = _initialised_model(run_dir, profile, state, stage, track, num_classes)
        if track == "lhc_netc":
            freeze_all_but_gates(model)
        steps_per_epoch = math.ceil(len(data.splits["train"].labels) / settings.batch_size)
        model.compile(optimizer=settings.make_optimizer(steps_per_epoch), loss=settings.make_loss(),
                      metrics=["accuracy"], jit_compile=jit_compile())
        model.optimizer.build(model.trainable_variables)
    progress = load_checkpoint(checkpoint_dir, model)
    if progress is None:
        progress = {"best_value": None, "best_epoch": None, "wait": 0, "history": [],
                    "wall_seconds": 0.0, "initialised_from": origin}
        epoch = 0
        _save_initial_lhc_weights(stage_dir / INITIAL_LHC_WEIGHTS, model)
    else:
        epoch = progress.pop("epoch")
        progress.pop("optimizer_steps")
        print(f"{stage} {track}: resuming after epoch {epoch} from {checkpoint_dir}")

    splits = data.splits
    augmentation = settings.make_augmentation()
    val_data = make_dataset(splits["val"].images, splits["val"].labels,
                            image_size=profile.input_size, batch_size=settings.batch_size,
                            shuffle=False, num_classes=num_classes)
    tensorboard = keras.callbacks.TensorBoard(str(run_dir / "tensorboard" / f"{stage}_{track}"),
                                              write_graph=False, profile_batch=0)
    guard = DivergenceGuard()
    while epoch < settings.max_epochs and progress["wait"] < settings.patience:
        train_data = make_dataset(
            splits["train"].images, splits["train"].labels, image_size=profile.input_size,
            batch_size=settings.batch_size, augmentation=augmentation, shuffle=True,
            seed=_derive_seed(profile.seed, stage_number, epoch), num_classes=num_classes,
            paper_jpeg=profile.data.paper_jpeg,
            jpeg_cache_dir=run_dir / "cache" if profile.data.paper_jpeg else None)
        epoch_started = time.monotonic()
        logs = model.fit(train_data, validation_data=val_data, initial_epoch=epoch,
                         epochs=settings.max_epochs, verbose=verbose, shuffle=False,
                         callbacks=[guard, _StopAfterOneEpoch(), tensorboard]).history
        if guard.failure:
            last_good = str(epoch_folder(checkpoint_dir, epoch)) if epoch else None
            return {"diverged": {"stage": stage, "model": track, "epoch": epoch + 1,
                                 **guard.failure, "last_good_checkpoint": last_good}}
        epoch += 1
        row = {"epoch": epoch, **{key: float(logs[key][-1]) for key in KERAS_METRICS},
               "learning_rate": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
               "seconds": round(time.monotonic() - epoch_started, 3)}
        progress["history"].append(row)
        progress["wait"] += 1
        if progress["best_value"] is None or row["val_accuracy"] > progress["best_value"]:
            progress.update(best_value=row["val_accuracy"], best_epoch=epoch, wait=0)
        progress["wall_seconds"] += time.monotonic() - started
        started = time.monotonic()
        save_checkpoint(checkpoint_dir, epoch, model, progress, keep=[progress["best_epoch"]])
        _write_history(stage_dir / "history.csv", progress["history"])

    model.load_weights(epoch_folder(checkpoint_dir, progress["best_epoch"]) / "model.weights.h5")
    best = progress["history"][progress["best_epoch"] - 1]
    summary = {
        "stage": stage, "model": track, "epochs_run": epoch, "best_epoch": progress["best_epoch"],
        "stopped_by": "patience" if progress["wait"] >= settings.patience else "max_epochs",
        "train_loss": best["loss"], "train_accuracy": best["accuracy"],
        "val_loss": best["val_loss"], "val_accuracy": best["val_accuracy"],
        "params": model.count_params(),
        "trainable_params": int(sum(np.prod(v.shape) for v in model.trainable_weights)),
        "initialised_from": progress["initialised_from"], "settings": dataclasses.asdict(settings),
    }
    if "test" in splits:
        test_data = make_dataset(splits["test"].images, splits["test"].labels,
                                 image_size=profile.input_size, batch_size=settings.batch_size,
                                 shuffle=False, num_classes=num_classes)
        scores = model.evaluate(test_data, verbose=0, return_dict=True)
        summary.update(test_loss=float(scores["loss"]), test_accuracy=float(scores["accuracy"]))
    # Saved from an uncompiled copy: a compiled model's file would carry its optimizer too.
    result = build_model(track, profile, num_classes)
    result.set_weights(model.get_weights())
    with atomic_path(stage_dir / FINAL_WEIGHTS, suffix=".weights.h5") as tmp:
        result.save_weights(tmp)
    summary["wall_seconds"] = round(progress["wall_seconds"] + time.monotonic() - started, 1)
    write_json(stage_dir / SUMMARY_FILE, summary)
    # The final weights are the stage's result; per-epoch checkpoints only served resumption.
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    test = f", test_accuracy {summary['test_accuracy']:.4f}" if "test_accuracy" in summary else ""
    print(f"{stage} {track}: {epoch} epochs ({summary['stopped_by']}), best epoch "
          f"{summary['best_epoch']}: val_accuracy {summary['val_accuracy']:.4f}, val_loss "
          f"{summary['val_loss']:.4f}, train_loss {summary['train_loss']:.4f}{test}; "
          f"{summary['wall_seconds']:.0f} s")
    return summary


def _save_initial_lhc_weights(path: Path, model: keras.Model) -> None:
    """Keep the LHC modules' starting weights: the ablations' "de-train" resets to them."""
    from lhc.layers import LHC

    arrays = {f"{layer.name}/{index}": np.asarray(weight)
              for layer in model.layers if isinstance(layer, LHC)
              for index, weight in enumerate(layer.get_weights())}
    if arrays:
        with atomic_path(path) as tmp:
            np.savez(tmp, **arrays)


def _write_history(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


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
