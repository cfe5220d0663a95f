"""Input pipeline throughput next to a ResNet34v2 training step, side by side in one process.

For each image size the script times, on the same synthetic uint8 48x48 input:

- the pipeline alone (``lhc.data.pipeline.make_dataset`` with stage-2 augmentation: rotation,
  shifts, zoom, flip), images per second over a run of batches after a warm-up;
- one training step of ResNet34v2 (``model.train_on_batch``, float32, SGD, no XLA since XLA
  is far slower on this CPU) on a batch the pipeline produced, images per second after a
  warm-up step that traces the function.

It prints JSON with both throughputs and their ratio; the issue asks for a ratio of at least
3, so that the pipeline never starves training.

Usage: python benchmarks/pipeline.py [--sizes 48 224] [--batch 64] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _report import emit  # noqa: E402  (sibling module: one report format)

from lhc.data.pipeline import STAGE_AUGMENTATION, make_dataset  # noqa: E402
from lhc.models import build_resnet34v2  # noqa: E402

# Timed pipeline batches and training steps per size: a training step at 224 takes seconds.
PIPELINE_BATCHES = {48: 40, 224: 20}
TRAIN_STEPS = {48: 5, 224: 2}
TARGET_RATIO = 3.0


def pipeline_images_per_second(images, labels, image_size, batch_size, num_batches):
    dataset = make_dataset(images, labels, image_size=image_size, batch_size=batch_size,
                           augmentation=STAGE_AUGMENTATION[2], drop_remainder=True).repeat()
    batches = iter(dataset)
    for _ in range(2):  # warm-up: tracing and filling the shuffle buffer
        first_batch = next(batches)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(batches)
    return num_batches * batch_size / (time.perf_counter() - start), first_batch


def training_images_per_second(batch, image_size, num_steps):
    model = build_resnet34v2(input_shape=(image_size, image_size, 3), num_classes=7)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy",
                  jit_compile=False)
    images, labels = batch
    model.train_on_batch(images, labels)  # warm-up: traces the step
    start = time.perf_counter()
    for _ in range(num_steps):
        model.train_on_batch(images, labels)
    return num_steps * int(images.shape[0]) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 224])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    num_images = 16 * args.batch
    images = rng.integers(0, 256, (num_images, 48, 48), dtype=np.uint8)
    labels = rng.integers(0, 7, num_images)

    results = {}
    for size in args.sizes:
        pipeline_rate, batch = pipeline_images_per_second(
            images, labels, size, args.batch, PIPELINE_BATCHES.get(size, 20))
        train_rate = training_images_per_second(batch, size, TRAIN_STEPS.get(size, 2))
        results[str(size)] = {
            "pipeline_images_per_s": round(pipeline_rate, 1),
            "train_step_images_per_s": round(train_rate, 1),
            "ratio": round(pipeline_rate / train_rate, 1),
            "meets_target": pipeline_rate / train_rate >= TARGET_RATIO,
        }

    report = {
        "benchmark": "tf.data pipeline (stage 2 augmentation) vs ResNet34v2 train_on_batch",
        "batch": args.batch,
        "target_ratio": TARGET_RATIO,
        "results": results,
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
