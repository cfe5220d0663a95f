"""LHC-Net as a TFLite flat buffer against the Keras model: file size and single-image latency.

Both forms of the same model are timed side by side on one image ``(1, S, S, 3)``: each
repeat runs both, alternating which goes first, so that load from other processes hits both
alike. Keras runs ``predict_on_batch`` (its compiled predict function, traced once in the
warm-up); TFLite runs the interpreter's ``invoke`` (XNNPACK on CPU) with as many threads as
TensorFlow uses, all cores (the interpreter alone would use one). Sizes are those of the
``.keras`` archive and of the ``.tflite`` file. Probability parity of the two forms is a test
(``tests/test_export.py``), not measured here: this script's default model has random weights.

Usage: python benchmarks/export.py [--input-size 224] [--model RUN_DIR_OR_KERAS]
       [--repeats 30] [--threads N (default: all cores)] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _report import emit  # noqa: E402  (sibling module: one report format)

from lhc.export import TFLiteModel, export_model, load_model, tflite_bytes  # noqa: E402
from lhc.models import build_lhc_net  # noqa: E402


def time_side_by_side(runners, image, repeats, warmup=3):
    """Median seconds per call of each runner on ``image``, interleaved across repeats."""
    for run in runners.values():
        for _ in range(warmup):
            run(image)
    times = {name: [] for name in runners}
    order = list(runners)
    for repeat in range(repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            runners[name](image)  # both return numpy: the work is done
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}, times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=224,
                        help="side of the random LHC-Net's input (ignored with --model)")
    parser.add_argument("--model", help="a run directory or .keras file instead")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="TFLite interpreter threads (default: all cores, as TensorFlow "
                             "uses; TFLite's own default is one thread)")
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be positive")

    if args.model:
        loaded = load_model(args.model)
        model, source = loaded.model, loaded.source
    else:
        keras.utils.set_random_seed(0)
        model = build_lhc_net((args.input_size, args.input_size, 3))
        source = f"random LHC-Net (paper-derived blocks) at {args.input_size}x{args.input_size}"
    size = model.input_shape[1]

    start = time.perf_counter()
    flat_buffer = tflite_bytes(model)
    convert_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        keras_bytes = export_model(model, "keras", Path(folder) / "model.keras").stat().st_size
    interpreter = TFLiteModel(flat_buffer, num_threads=args.threads)

    image = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype("float32")
    medians, times = time_side_by_side(
        {"keras": model.predict_on_batch, "tflite": interpreter.predict}, image, args.repeats)
    report = {
        "benchmark": "LHC-Net export: TFLite vs Keras, file size and single-image latency",
        "model": source,
        "input_size": size,
        "params": model.count_params(),
        "repeats": args.repeats,
        "size_bytes": {"keras": keras_bytes, "tflite": len(flat_buffer)},
        "size_mib": {"keras": round(keras_bytes / 2**20, 1),
                     "tflite": round(len(flat_buffer) / 2**20, 1)},
        "latency_ms_median": {name: round(1000 * value, 2) for name, value in medians.items()},
        "latency_ms_all": {name: [round(1000 * t, 2) for t in values]
                           for name, values in times.items()},
        "tflite_speedup": round(medians["keras"] / medians["tflite"], 2),
        "tflite_convert_seconds": round(convert_seconds, 1),
        "tflite_threads": args.threads,
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
