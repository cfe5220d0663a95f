"""The input pipeline against the training step it feeds, side by side in one process.

The host side (``lhc.data.pipeline.EpochBatches``: slicing batches of 48x48 images in the
epoch's order) must outpace the fastest consumer this project has measured, ResNet34v2 at 224
in bf16 on an H200 (4,529 images/s, ``benchmarks/results/gpu_train_step_h200_jax.json``), ten
times over. The device side (resize, stage-2 augmentation and grey-to-RGB inside the compiled
step, ``lhc.data.pipeline.with_inputs``) is timed as what it adds to a ResNet34v2 training
step: the same ``train_on_batch`` with and without it, at each size.

Prints JSON with the rates and ratios. Any backend: ``KERAS_BACKEND=jax python
benchmarks/pipeline.py`` times the JAX path.

Usage: python benchmarks/pipeline.py [--sizes 64 224] [--batch 64] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _report import emit  # noqa: E402  (sibling module: one report format)

from lhc.data.pipeline import STAGE_AUGMENTATION, EpochBatches, preprocess, with_inputs  # noqa: E402
from lhc.models import build_resnet34v2  # noqa: E402

H200_IMAGES_PER_S = 4529  # ResNet34v2 at 224, batch 64, bf16 (gpu_train_step_h200_jax.json)
HOST_TARGET_RATIO = 10.0
TRAIN_STEPS = {48: 5, 64: 5, 224: 2}


def host_images_per_second(images, labels, batch_size, epochs=3):
    batches = EpochBatches(images, labels, batch_size, seed=0)
    start = time.perf_counter()
    count = 0
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        for index in range(len(batches)):
            count += len(batches[index][1])
    return count / (time.perf_counter() - start)


def step_images_per_second(model, inputs, labels, num_steps):
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy",
                  jit_compile=False if keras.backend.backend() == "tensorflow" else "auto")
    model.train_on_batch(inputs, labels)  # warm-up: traces the step
    start = time.perf_counter()
    for _ in range(num_steps):
        model.train_on_batch(inputs, labels)
    return num_steps * len(labels) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (28709, 48, 48), dtype=np.uint8)  # FER2013's Training size
    labels = rng.integers(0, 7, len(images))
    host_rate = host_images_per_second(images, labels, args.batch)

    batch_images, batch_labels = images[:args.batch], labels[:args.batch]
    grey = batch_images[..., None].astype(np.float32)  # (B, 48, 48) -> (B, 48, 48, 1)
    device = {}
    for size in args.sizes:
        steps = TRAIN_STEPS.get(size, 2)
        keras.utils.set_random_seed(0)
        plain = step_images_per_second(build_resnet34v2((size, size, 3), 7),
                                       preprocess(batch_images, size), batch_labels, steps)
        keras.utils.set_random_seed(0)
        augmented = step_images_per_second(
            with_inputs(build_resnet34v2((size, size, 3), 7),
                        augmentation=STAGE_AUGMENTATION[2], seed=0),
            grey, batch_labels, steps)
        device[str(size)] = {
            "train_step_images_per_s": round(plain, 1),
            "train_step_with_device_inputs_images_per_s": round(augmented, 1),
            "with_inputs_over_plain": round(augmented / plain, 3),
        }

    report = {
        "benchmark": "EpochBatches (host) and with_inputs (device, stage-2 augmentation) against "
                     "a ResNet34v2 train_on_batch",
        "batch": args.batch,
        "host_images_per_s": round(host_rate, 1),
        "host_over_h200_resnet34v2_bf16": round(host_rate / H200_IMAGES_PER_S, 1),
        "host_target_ratio": HOST_TARGET_RATIO,
        "host_meets_target": host_rate / H200_IMAGES_PER_S >= HOST_TARGET_RATIO,
        "device": device,
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
