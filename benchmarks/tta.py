"""Batched TTA (:class:`lhc.tta.TTAPredictor`) against the original code's per-view loop.

Same model, same images, same protocol, side by side in one process. The loop form
(:func:`lhc.tta.predict_tta_looped`) transforms every image eagerly and calls ``model.predict``
once per view, as the original code does; the batched form builds every view inside one
compiled function and sends up to ``--max-batch`` images per model call. Both forms are
called once first (tracing and warm-up, timed apart as ``first_call_seconds``), then
``--repeats`` times alternating which goes first; the JSON reports the medians, their ratio
(target: batched at least 5x faster) and the largest absolute difference between the two
forms' scores (target: at most 1e-5).

The model is an untrained LHC-Net with block settings derived for the input size. Its
BatchNorm statistics are set from one batch of the benchmark's images (momentum 0 for one
training-mode call), so that its scores are spread out rather than saturated at 0 and 1 and
the score difference means something. Matrix products and convolutions run at full float32
precision (TF32 off) unless ``--allow-tf32``: on GPUs that round to TF32 (10-bit mantissa) the
two forms' different batch sizes pick different kernels, whose scores then differ by about 1e-5
whatever the TTA code does.

Usage: python benchmarks/tta.py [--size 64] [--images 8] [--protocol reference]
       [--max-batch 256] [--repeats 3] [--allow-tf32] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _report import emit  # noqa: E402  (sibling module: one report format)

from lhc import models, tta  # noqa: E402

TARGET_SPEEDUP = 5.0
TARGET_MAX_DIFFERENCE = 1e-5


def calibrated_lhc_net(size: int, images: np.ndarray) -> keras.Model:
    """An untrained LHC-Net whose BatchNorm statistics are those of ``images``."""
    keras.utils.set_random_seed(0)
    model = models.build_lhc_net((size, size, 3))
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0  # the moving statistics become this batch's
    model(images, training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum
    return model


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="input side of the model")
    parser.add_argument("--images", type=int, default=8, help="images to augment")
    parser.add_argument("--protocol", choices=tuple(tta.PROTOCOLS), default="reference")
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--loop-batch", type=int, default=128,
                        help="model.predict's batch size in the loop form (the original's 128)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--allow-tf32", action="store_true",
                        help="let GPUs round float32 products to TF32 (off: full float32)")
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args()
    if min(args.size, args.images, args.max_batch, args.loop_batch, args.repeats) < 1:
        parser.error("--size, --images, --max-batch, --loop-batch and --repeats must be positive")

    if not args.allow_tf32:
        full_float32_products()
    images = np.random.default_rng(0).uniform(
        0, 255, (args.images, args.size, args.size, 3)).astype("float32")
    model = calibrated_lhc_net(args.size, images)
    protocol = tta.get_protocol(args.protocol)
    predictor = tta.TTAPredictor(model, protocol, max_batch=args.max_batch)
    forms = {
        "batched": lambda: predictor(images),
        "looped": lambda: tta.predict_tta_looped(model, images, protocol,
                                                 batch_size=args.loop_batch),
    }
    first = {name: timed(form) for name, form in forms.items()}
    times = {name: [] for name in forms}
    scores = {name: result for name, (result, _) in first.items()}
    order = list(forms)
    for repeat in range(args.repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:
            scores[name], seconds = timed(forms[name])
            times[name].append(seconds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    speedup = medians["looped"] / medians["batched"]
    difference = float(np.max(np.abs(scores["batched"] - scores["looped"])))
    repeat_difference = float(np.max(np.abs(scores["batched"] - first["batched"][0])))
    num_views = len(protocol.views)
    report = {
        "benchmark": "TTA: batched in-graph views vs one model.predict per view",
        "protocol": protocol.name,
        "views": num_views,
        "images": args.images,
        "input_size": args.size,
        "model": f"{model.name} (untrained, derived blocks), {model.count_params():,} params",
        "max_batch": args.max_batch,
        "tf32_allowed": args.allow_tf32,
        "images_per_step": predictor.images_per_step,
        "loop_batch": args.loop_batch,
        "repeats": args.repeats,
        "first_call_seconds": {name: round(seconds, 3) for name, (_, seconds) in first.items()},
        "seconds_median": {name: round(value, 3) for name, value in medians.items()},
        "seconds_all": {name: [round(t, 3) for t in values] for name, values in times.items()},
        "model_images_per_second": {name: round(num_views * args.images / value, 1)
                                    for name, value in medians.items()},
        "speedup": round(speedup, 2),
        "target_speedup": TARGET_SPEEDUP,
        "max_abs_score_difference": difference,
        "target_max_abs_difference": TARGET_MAX_DIFFERENCE,
        "batched_repeat_max_abs_difference": repeat_difference,
        "score_range": [float(scores["batched"].min()), float(scores["batched"].max())],
        "meets_targets": speedup >= TARGET_SPEEDUP and difference <= TARGET_MAX_DIFFERENCE,
    }
    emit(report, args.out)


def full_float32_products() -> None:
    """Turn off TF32 rounding of float32 matrix products and convolutions on GPUs."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
    elif keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")


def _accelerators() -> list[str]:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return [device.name for device in tf.config.list_logical_devices("GPU")]
    if keras.backend.backend() == "jax":
        import jax

        return [str(device) for device in jax.devices() if device.platform != "cpu"]
    return []


if __name__ == "__main__":
    main()
