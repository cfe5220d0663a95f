"""One model through one stage of the protocol: build, fit, finish (paper section 3).

:func:`run_stage` is the runner's unit of work:

1. **build**: seed everything from (seed, stage); build the model from the registry with its
   starting weights (scratch or ImageNet for stage 1, the predecessor's final weights later,
   copied by layer name when the model changes), freeze all but the gates for LHC-NetC, put it
   behind the device-side input pipeline (:func:`lhc.data.pipeline.with_inputs`: resize, the
   stage's augmentation, three channels), compile, and restore the latest checkpoint if any;
2. **fit**: one ``fit(epochs=max_epochs, initial_epoch=...)`` over host batches whose order is
   (seed, stage, epoch), with the callbacks of :mod:`lhc.training.callbacks` (divergence guard,
   epoch order, early stopping and checkpoints);
3. **finish**: the best epoch's weights back, the test split evaluated, the model's final
   weights and ``summary.json`` written (the summary last: its presence marks the stage done).

Nothing here imports TensorFlow unless it is Keras' backend; TensorBoard logs are written when
TensorFlow is installed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from lhc._io import atomic_path, ensure_space, write_json
from lhc.training.callbacks import DivergenceGuard, EarlyStoppingCheckpoint, EpochOrder
from lhc.training.checkpoints import epoch_folder, load_checkpoint
from lhc.training.distribute import (
    Placement,
    jit_compile,
    make_deterministic,
    tensorflow_available,
)
from lhc.training.layout import RunLayout, StageLayout
from lhc.training.profiles import STAGES, Profile
from lhc.training.registry import build_model

logger = logging.getLogger(__name__)

__all__ = ["derive_seed", "initialised_model", "predecessor", "run_stage", "stage_tracks"]

# Offsets of the seeds a stage derives from (run seed, stage number, offset).
_ORDER_SEED, _AUGMENTATION_SEED = 0, 1


def derive_seed(seed: int, *parts: int) -> int:
    """A 31-bit seed for one purpose, derived from the run's seed and ``parts``."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0] & 0x7FFFFFFF)


def stage_tracks(profile: Profile, stage: str) -> tuple[str, ...]:
    """The models a stage trains: one in modular mode; LHC-Net and ResNet34v2 side by side in
    stages 1-3 of standalone mode, where stage 4 trains none."""
    if profile.mode == "standalone" and stage != "lhcc":
        return () if stage == "stage4" else ("lhc_net", "resnet34v2")
    return (profile.stages[stage].model,)


def predecessor(profile: Profile, stage: str, track: str) -> tuple[str, str] | None:
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


def finished_folder(run_dir: Path, state: dict, stage: str, track: str) -> Path | None:
    """Folder of a finished (stage, model): this run's, else ``start_from``'s; None if neither."""
    roots = [run_dir] + ([Path(state["start_from"])] if state["start_from"] else [])
    for root in roots:
        files = RunLayout(root).stage(stage, track)
        if files.done:
            return files.folder
    return None


def initialised_model(run_dir: Path, profile: Profile, state: dict, stage: str, track: str,
                      num_classes: int) -> tuple[keras.Model, str]:
    """Build a stage's model with its starting weights; call inside the placement's scope.

    Stage 1 starts from scratch or ImageNet; in standalone mode LHC-Net's backbone starts from
    exactly the weights the ResNet34v2 beside it starts from (built first, same seed). Later
    stages start from the predecessor's final weights, copied by layer name when the model
    changes (:func:`lhc.models.transfer_backbone_weights`).

    Returns:
        The model and a description of where its weights came from.
    """
    from lhc.models import load_backbone_weights, transfer_backbone_weights

    needed = predecessor(profile, stage, track)
    if needed is None:
        donor = build_model("resnet34v2", profile, num_classes)
        origin = "scratch"
        if profile.imagenet_weights:
            load_backbone_weights(donor, profile.imagenet_weights)
            origin = f"ImageNet weights {profile.imagenet_weights}"
        if track == "resnet34v2":
            return donor, origin
    else:
        source = StageLayout(finished_folder(run_dir, state, *needed)).final_weights
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


def build_compiled_state(trainer: keras.Model, batch) -> None:
    """Create a compiled model's metric and loss variables before its first ``fit``.

    With no ``tf.distribute`` strategy, Keras on TensorFlow creates them inside the first
    traced training step, and TensorFlow traces a function that creates variables twice:
    for ResNet34v2 here, about ten seconds more per stage, whatever its size (measured with
    ``tf.function``'s tracing count: 2 without this, 1 with it). Keras's own symbolic build,
    which it runs itself under a strategy (where this is then a no-op), creates them from the
    batch's shapes alone. JAX
    and PyTorch build eagerly and need nothing.

    Args:
        trainer: the compiled model ``fit`` will train.
        batch: one ``(images, labels)`` batch; only its shapes and dtypes are read.
    """
    if keras.backend.backend() != "tensorflow":
        return
    symbolic_build = getattr(trainer, "_symbolic_build", None)  # private; absent: trace twice
    if symbolic_build is not None:
        symbolic_build(data_batch=tuple(batch))


def _batches(profile: Profile, data, split: str, batch_size: int, placement: Placement,
             layout: RunLayout, seed: int | None = None):
    """The host batches of one split; training batches carry the paper's JPEG ETL if asked."""
    from lhc.data.pipeline import EpochBatches, paper_jpeg_cache, read_jpeg_cache

    images, labels = data.splits[split].images, data.splits[split].labels
    # JAX shards every batch evenly over the devices; tf.distribute splits uneven ones itself.
    replicas = placement.replicas if keras.backend.backend() == "jax" else 1
    options = {"num_classes": len(data.class_names), "process_index": placement.process_index,
               "process_count": placement.process_count, "replicas": replicas}
    if profile.data.paper_jpeg:
        # The paper's ETL feeds JPEGs at the model's size, so every split arrives at that size.
        options["host_size"] = profile.input_size
        if split == "train":
            cache = paper_jpeg_cache(images, profile.input_size, layout.cache_dir)
            options["jpeg"] = read_jpeg_cache(cache)
    return EpochBatches(images, labels, batch_size, seed=seed or 0, shuffle=seed is not None,
                        **options)


def run_stage(run_dir: Path, profile: Profile, state: dict, stage: str, track: str, data,
              placement: Placement, verbose: int, log=logger.info) -> dict[str, Any]:
    """Train one model through one stage (module docstring).

    Returns:
        The stage's summary (``summary.json``), or ``{"diverged": {...}}`` when the training
        loss became NaN or infinite (the last good checkpoint is kept and named).
    """
    files = RunLayout(run_dir).stage(stage, track)
    if files.done:
        shutil.rmtree(files.checkpoints, ignore_errors=True)  # left when killed while finishing
        summary = json.loads(files.summary.read_text())
        log(f"{stage} {track}: already done (val_accuracy {summary['val_accuracy']:.4f})")
        return summary
    # Building, fitting and evaluating all inside: on JAX the distribution places the
    # variables when they are made and shards the batches when fit and evaluate run.
    with placement.scope():
        return _train_stage(run_dir, profile, state, stage, track, data, placement, verbose, log)


def _train_stage(run_dir: Path, profile: Profile, state: dict, stage: str, track: str, data,
                 placement: Placement, verbose: int, log) -> dict[str, Any]:
    from lhc.data.pipeline import with_inputs
    from lhc.models import freeze_all_but_gates

    layout = RunLayout(run_dir)
    files = layout.stage(stage, track)
    started = time.monotonic()
    settings = profile.stages[stage]
    stage_number = STAGES.index(stage) + 1
    num_classes = len(data.class_names)
    make_deterministic(derive_seed(profile.seed, stage_number))
    train_batches = _batches(profile, data, "train", settings.batch_size, placement, layout,
                             seed=derive_seed(profile.seed, stage_number, _ORDER_SEED))
    val_batches = _batches(profile, data, "val", settings.batch_size, placement, layout)
    left_out = {split: batches.dropped for split, batches in (("train", train_batches),
                                                              ("val", val_batches))}
    if any(left_out.values()):
        logger.warning(
            "%s %s: the last batch splits evenly over %d replicas only without its last rows: "
            "%s images left out per epoch", stage, track, placement.replicas, left_out)
    first_batch = train_batches[0]
    source_shape = first_batch[0].shape[1:]
    model, origin = initialised_model(run_dir, profile, state, stage, track, num_classes)
    if track == "lhc_netc":
        freeze_all_but_gates(model)
    trainer = with_inputs(model, source_shape=source_shape,
                          augmentation=settings.make_augmentation(),
                          seed=derive_seed(profile.seed, stage_number, _AUGMENTATION_SEED))
    trainer.compile(optimizer=settings.make_optimizer(len(train_batches)),
                    loss=settings.make_loss(), metrics=["accuracy"], jit_compile=jit_compile())
    trainer.optimizer.build(trainer.trainable_variables)
    build_compiled_state(trainer, first_batch)
    progress = load_checkpoint(files.checkpoints, trainer)
    if progress is None:
        progress = {"best_value": None, "best_epoch": None, "wait": 0, "history": [],
                    "wall_seconds": 0.0, "initialised_from": origin}
        epoch = 0
        _save_initial_lhc_weights(files.initial_lhc_weights, model)
    else:
        epoch = progress.pop("epoch")
        progress.pop("optimizer_steps")
        log(f"{stage} {track}: resuming after epoch {epoch} from {files.checkpoints}")

    guard = DivergenceGuard()
    recorder = EarlyStoppingCheckpoint(files.checkpoints, files.history, progress,
                                       settings.patience, guard, started)
    if epoch < settings.max_epochs and progress["wait"] < settings.patience:
        callbacks = [guard, EpochOrder(train_batches), recorder]
        if tensorflow_available():
            callbacks.append(keras.callbacks.TensorBoard(str(layout.tensorboard(stage, track)),
                                                         write_graph=False, profile_batch=0))
        # shuffle=False: the batches' order is ours (EpochBatches); Keras would otherwise reorder
        # a PyDataset's batches with Python's random module, which a resume does not restore.
        trainer.fit(train_batches, initial_epoch=epoch, epochs=settings.max_epochs, shuffle=False,
                    validation_data=val_batches,
                    verbose=verbose, callbacks=callbacks)
        if guard.failure:
            done = recorder.epochs_done
            last_good = str(epoch_folder(files.checkpoints, done)) if done else None
            return {"diverged": {"stage": stage, "model": track, "epoch": done + 1,
                                 **guard.failure, "last_good_checkpoint": last_good}}
    return _finish(trainer, model, files, profile, data, stage, track, settings, placement,
                   layout, progress, recorder, log, left_out)


def _finish(trainer, model, files: StageLayout, profile, data, stage, track, settings,
            placement, layout, progress, recorder, log, left_out) -> dict[str, Any]:
    """Best epoch back, test split evaluated, final weights and summary written.

    ``left_out``: per split, the images its last batch leaves out to split evenly over the
    replicas (:class:`lhc.data.pipeline.EpochBatches`); named in the summary when any are.
    """
    epochs_run = len(progress["history"])
    trainer.load_weights(epoch_folder(files.checkpoints, progress["best_epoch"])
                         / "model.weights.h5")
    best = progress["history"][progress["best_epoch"] - 1]
    summary = {
        "stage": stage, "model": track, "epochs_run": epochs_run,
        "best_epoch": progress["best_epoch"],
        "stopped_by": "patience" if progress["wait"] >= settings.patience else "max_epochs",
        "train_loss": best["loss"], "train_accuracy": best["accuracy"],
        "val_loss": best["val_loss"], "val_accuracy": best["val_accuracy"],
        "params": model.count_params(),
        "trainable_params": int(sum(math.prod(v.shape) for v in model.trainable_weights)),
        "initialised_from": progress["initialised_from"], "settings": dataclasses.asdict(settings),
        "backend": keras.backend.backend(), "devices": placement.replicas,
        "processes": placement.process_count,
    }
    if "test" in data.splits:
        test_batches = _batches(profile, data, "test", settings.batch_size, placement, layout)
        left_out = {**left_out, "test": test_batches.dropped}
        scores = trainer.evaluate(test_batches, verbose=0, return_dict=True)
        summary.update(test_loss=float(scores["loss"]), test_accuracy=float(scores["accuracy"]))
    if any(left_out.values()):
        summary["images_left_out_per_epoch"] = left_out
    # The classifier alone, uncompiled: its file holds neither the optimizer nor the inputs.
    # Space checked first: HDF5 meeting a full disk mid-file can crash the process's exit.
    ensure_space(files.folder, 2 * sum(weight.nbytes for weight in model.get_weights()))
    with atomic_path(files.final_weights, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    summary["wall_seconds"] = round(progress["wall_seconds"] + recorder.seconds_since_checkpoint(),
                                    1)
    write_json(files.summary, summary)
    # The final weights are the stage's result; per-epoch checkpoints only served resumption.
    shutil.rmtree(files.checkpoints, ignore_errors=True)
    test = f", test_accuracy {summary['test_accuracy']:.4f}" if "test_accuracy" in summary else ""
    log(f"{stage} {track}: {epochs_run} epochs ({summary['stopped_by']}), best epoch "
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
