"""The redesigned TensorFlow training path against the one it replaced, side by side in one run.

Issue 16 asks that the any-backend redesign train the cpu profile on this CPU at least as fast
as the ``tf.data`` pipeline did (images/s, 64x64, mixed_bfloat16). Both paths here train the
same ResNet34v2 (same initial weights) with the cpu profile's stage-1 optimizer on the same
48x48 images, with stage-2 augmentation (the heaviest), batch 64, ``jit_compile=False``:

- ``tf_data``: the pipeline of commit ``OLD_COMMIT`` (``lhc/data/pipeline.py`` as ``git show``
  gives it): shuffle, batch, resize, augmentation and grey-to-RGB as ``tf.data`` maps, fed to
  the bare classifier;
- ``device_inputs``: today's ``lhc.data.pipeline``: ``EpochBatches`` slices batches on the host
  in the epoch's order, ``with_inputs`` resizes, augments and copies channels inside the step.

Each path fits ``--epochs`` epochs twice, in the order old, new, new, old (drift in the
machine's speed then falls on both alike); an epoch's rate is images over its wall time, the
first epoch of each fit (tracing) left out. Prints JSON with the median rates and their ratio.
TensorFlow only: the path it compares against exists only there.

Usage: python benchmarks/training_path.py [--images 1280] [--epochs 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _report import emit  # noqa: E402  (sibling module: one report format)

from lhc.data.pipeline import STAGE_AUGMENTATION, EpochBatches, with_inputs  # noqa: E402
from lhc.models import build_resnet34v2  # noqa: E402
from lhc.training.callbacks import EpochOrder  # noqa: E402
from lhc.training.profiles import load_profile  # noqa: E402

OLD_COMMIT = "ef6cdff"  # the last commit whose pipeline was tf.data (before 1b19977)
REPO = Path(__file__).resolve().parents[1]
IMAGE_SIZE, BATCH_SIZE, SEED = 64, 64, 0


def old_pipeline():
    """``lhc/data/pipeline.py`` of :data:`OLD_COMMIT`, imported under another name."""
    source = subprocess.run(["git", "show", f"{OLD_COMMIT}:lhc/data/pipeline.py"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "pipeline_tf_data.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("pipeline_tf_data", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class EpochTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def compiled(model, learning_rate, momentum):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum),
                  loss="sparse_categorical_crossentropy", jit_compile=False)
    return model


def fit_rates(path, images, labels, epochs, stage, old):
    """Images/s of each epoch after the first, training on ``path``."""
    keras.utils.set_random_seed(SEED)
    classifier = build_resnet34v2((IMAGE_SIZE, IMAGE_SIZE, 3), 7)
    times = EpochTimes()
    augmentation = STAGE_AUGMENTATION[2]
    if path == "tf_data":
        dataset = old.make_dataset(
            images, labels, image_size=IMAGE_SIZE, batch_size=BATCH_SIZE, seed=SEED,
            augmentation=old.augmentation_from_dict(dataclasses.asdict(augmentation)))
        compiled(classifier, stage.learning_rate, stage.momentum).fit(
            dataset, epochs=epochs, verbose=0, callbacks=[times])
    else:
        batches = EpochBatches(images, labels, BATCH_SIZE, seed=SEED)
        model = with_inputs(classifier, augmentation=augmentation, seed=SEED)
        compiled(model, stage.learning_rate, stage.momentum).fit(
            batches, epochs=epochs, shuffle=False, verbose=0,
            callbacks=[EpochOrder(batches), times])
    return [len(images) / seconds for seconds in times.seconds[1:]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1280)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        sys.exit("benchmarks/training_path.py compares against the tf.data pipeline: it needs "
                 "KERAS_BACKEND=tensorflow (and TensorFlow installed)")

    old = old_pipeline()
    stage = load_profile("cpu").stages["stage1"]
    rng = np.random.default_rng(SEED)
    images = rng.integers(0, 256, (args.images, 48, 48), dtype=np.uint8)
    labels = rng.integers(0, 7, args.images)
    keras.mixed_precision.set_global_policy(args.precision)
    rates = {"tf_data": [], "device_inputs": []}
    for path in ("tf_data", "device_inputs", "device_inputs", "tf_data"):
        rates[path] += fit_rates(path, images, labels, args.epochs, stage, old)
    median = {path: statistics.median(values) for path, values in rates.items()}
    report = {
        "benchmark": "ResNet34v2 training at 64x64 with stage-2 augmentation: today's "
                     f"EpochBatches + with_inputs against the tf.data pipeline of {OLD_COMMIT}",
        "precision": args.precision, "batch": BATCH_SIZE, "images_per_epoch": args.images,
        "epoch_images_per_s": {path: [round(value, 1) for value in values]
                               for path, values in rates.items()},
        "median_images_per_s": {path: round(value, 1) for path, value in median.items()},
        "device_inputs_over_tf_data": round(median["device_inputs"] / median["tf_data"], 3),
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
