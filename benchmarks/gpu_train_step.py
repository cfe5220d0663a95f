"""Training-step time of LHC-Net and ResNet34v2 on one GPU, float32 and mixed_bfloat16.

Both models at 224x224 (batch 64), compiled with SGD, sparse categorical crossentropy and
``jit_compile=True`` (XLA: right on a GPU), train on one batch of synthetic random pixels and
labels that stays on the device for the whole benchmark, so that what is timed is the step and
not the input pipeline. Per precision (``float32``, then ``mixed_bfloat16``; the global policy
is set before the models are built) both models are built and compiled; each one's first
``train_on_batch`` (tracing, XLA compilation, first step) is timed apart as
``compile_seconds``, then ``--warmup`` untimed steps, then ``--steps`` timed steps in
``--rounds`` rounds that alternate which model goes first. Every step blocks until its loss is
on the host (``train_on_batch`` returns NumPy values), so each timed step includes the device
sync and ``train_on_batch``'s own host-side work (gathering and writing back the variables).
The JSON reports per configuration the median seconds per step, images/s and compile seconds;
per precision the LHC-Net / ResNet34v2 step-time ratio; per model the mixed_bfloat16 speedup
over float32; and the devices and versions.

Float32 matrix products: the default (``jax_default_matmul_precision`` unset, i.e. JAX's
DEFAULT precision) is what is measured, and lets XLA compute float32 products and
convolutions in TF32 on Ampere and later GPUs; the JSON records the setting.
``BENCH_F32_PRECISION=highest`` measures full float32 instead.

Written for the JAX backend (``KERAS_BACKEND`` defaults to ``jax`` here); it also runs under
TensorFlow. The script has a time budget (``--budget``, seconds since start): a configuration
that would start after it is skipped and listed in ``skipped``; the JSON is also written
after each precision, so a run cut short keeps what it measured.

Output: ``<out-dir>/gpu_train_step_<device>_<backend>.json`` (device e.g. ``h200``).

Usage: python benchmarks/gpu_train_step.py [--size 224] [--batch 64] [--steps 20]
       [--rounds 4] [--warmup 2] [--budget 300] [--out-dir benchmarks/results]

Environment overrides (defaults of the flags above, for a quick smoke test on a CPU, e.g.
``BENCH_INPUT=32 BENCH_BATCH=2 BENCH_STEPS=2 BENCH_ROUNDS=1 BENCH_WARMUP=0``):
``BENCH_INPUT``, ``BENCH_BATCH``, ``BENCH_STEPS``, ``BENCH_ROUNDS``, ``BENCH_WARMUP``,
``BENCH_BUDGET``; ``BENCH_PRECISIONS`` (comma-separated, default
``float32,mixed_bfloat16``); ``BENCH_F32_PRECISION`` (sets ``jax_default_matmul_precision``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import sys
import time

START = time.perf_counter()
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _report import emit  # noqa: E402  (sibling module: one report format)

from lhc import models  # noqa: E402
from lhc._io import write_text  # noqa: E402

NUM_CLASSES = 7
MODELS = {"resnet34v2": models.build_resnet34v2, "lhc_net": models.build_lhc_net}
PRECISIONS = ("float32", "mixed_bfloat16")
# JAX matmul precisions under which XLA may round float32 products to TF32 on a GPU.
TF32_PRECISIONS = (None, "default", "fastest", "bfloat16", "tensorfloat32", "bfloat16_3x")


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def backend_info() -> dict:
    """Backend, its version, devices and float32 matmul precision setting."""
    backend = keras.backend.backend()
    info = {"backend": backend, "keras": keras.__version__}
    if backend == "jax":
        import jax

        wanted = os.environ.get("BENCH_F32_PRECISION")
        if wanted:
            jax.config.update("jax_default_matmul_precision", wanted)
        try:
            precision = jax.config.jax_default_matmul_precision
        except AttributeError:
            precision = jax.config.read("jax_default_matmul_precision")
        precision = None if precision is None else str(precision)
        devices = jax.devices()
        info.update({
            "jax": jax.__version__,
            "jaxlib": getattr(__import__("jaxlib"), "__version__", None),
            "devices": [f"{d.platform}:{d.id} {getattr(d, 'device_kind', '')}".strip()
                        for d in devices],
            "device_kind": getattr(devices[0], "device_kind", devices[0].platform),
            "jax_default_matmul_precision": precision,
            "float32_tf32_allowed": (precision in TF32_PRECISIONS
                                     and devices[0].platform == "gpu"),
            "xla_flags": os.environ.get("XLA_FLAGS"),
        })
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        info.update({
            "tensorflow": tf.__version__,
            "devices": [d.name for d in gpus] or ["CPU"],
            "device_kind": (tf.config.experimental.get_device_details(
                tf.config.list_physical_devices("GPU")[0]).get("device_name", "gpu")
                if gpus else "cpu"),
            "float32_tf32_allowed": bool(gpus)
            and tf.config.experimental.tensor_float_32_execution_enabled(),
        })
    else:
        info.update({"devices": ["unknown"], "device_kind": "unknown"})
    return info


def device_tag(kind: str) -> str:
    """``"NVIDIA H200"`` -> ``"h200"``; ``"NVIDIA H100 80GB HBM3"`` -> ``"h100"``; else a slug."""
    match = re.search(r"\b([A-Z]\d{2,4}[A-Za-z]?)\b", kind)
    if match:
        return match[1].lower()
    slug = re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")
    return slug or "device"


def on_device(array: np.ndarray):
    """The array as the backend's device-resident tensor (NumPy is copied every step)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.block_until_ready(jax.device_put(array))
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.constant(array)
    return array


def peak_memory_gib():
    if keras.backend.backend() != "jax":
        return None
    import jax

    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001  (not every device reports memory)
        return None
    peak = stats.get("peak_bytes_in_use")
    return round(peak / 2**30, 2) if peak else None


def step(model, x, y) -> float:
    """One synced training step; returns its loss (the host copy is the sync)."""
    logs = model.train_on_batch(x, y, return_dict=True)
    return float(logs["loss"])


def finite_or_none(value: float):
    """``value`` rounded, or None if it is NaN or infinite (strict JSON has neither)."""
    return round(value, 4) if np.isfinite(value) else None


def build(name: str, size: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = MODELS[name](input_shape=(size, size, 3), num_classes=NUM_CLASSES)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy", jit_compile=True)
    return model


def run_precision(precision, args, x, y, results, skipped, out_path, report):
    """Build, compile and time both models under ``precision``; fills ``results``."""
    keras.mixed_precision.set_global_policy(precision)
    compiled = {}
    try:
        for name in MODELS:
            key = f"{name}/{precision}"
            elapsed = time.perf_counter() - START
            if elapsed > args.budget:
                skipped.append({"config": key,
                                "reason": f"budget: {elapsed:.0f}s > {args.budget}s"})
                print(f"[skip] {key}: over budget ({elapsed:.0f}s)", flush=True)
                continue
            try:
                start = time.perf_counter()
                model = build(name, args.size)
                build_seconds = time.perf_counter() - start
                start = time.perf_counter()
                first_loss = step(model, x, y)
                compile_seconds = time.perf_counter() - start
                for _ in range(args.warmup):
                    step(model, x, y)
            except Exception as error:  # noqa: BLE001  (record it, go on with the rest)
                skipped.append({"config": key, "reason": f"{type(error).__name__}: {error}"[:500]})
                print(f"[fail] {key}: {type(error).__name__}: {error}", flush=True)
                continue
            compiled[name] = model
            results[key] = {
                "model": name,
                "precision": precision,
                "params": model.count_params(),
                "build_seconds": round(build_seconds, 2),
                "compile_seconds": round(compile_seconds, 2),
                "first_loss": finite_or_none(first_loss),
                "step_seconds_all": [],
            }
            print(f"[compiled] {key}: {compile_seconds:.1f}s (build {build_seconds:.1f}s)",
                  flush=True)
        order = list(compiled)
        per_round = max(1, args.steps // args.rounds)
        for round_index in range(args.rounds):
            for name in order if round_index % 2 == 0 else order[::-1]:
                times = results[f"{name}/{precision}"]["step_seconds_all"]
                for _ in range(per_round):
                    start = time.perf_counter()
                    loss = step(compiled[name], x, y)
                    times.append(time.perf_counter() - start)
                results[f"{name}/{precision}"]["last_loss"] = finite_or_none(loss)
        for name in order:
            entry = results[f"{name}/{precision}"]
            times = entry["step_seconds_all"]
            median = statistics.median(times)
            entry.update({
                "steps_timed": len(times),
                "step_seconds_median": round(median, 5),
                "step_seconds_mean": round(statistics.fmean(times), 5),
                "step_seconds_min": round(min(times), 5),
                "images_per_second": round(args.batch / median, 1),
                "loss_finite": entry["last_loss"] is not None,
            })
            entry["step_seconds_all"] = [round(t, 5) for t in times]
            print(f"[timed] {name}/{precision}: {median * 1e3:.1f} ms/step, "
                  f"{args.batch / median:.0f} images/s", flush=True)
        report.setdefault("peak_device_memory_gib", {})[precision] = peak_memory_gib()
    finally:
        compiled.clear()
        keras.backend.clear_session()
        gc.collect()
        keras.mixed_precision.set_global_policy("float32")
        write_text(out_path, json.dumps(report, indent=2) + "\n")  # partial, rewritten later


def summarise(results: dict, precisions) -> dict:
    def median(name, precision):
        entry = results.get(f"{name}/{precision}")
        return entry.get("step_seconds_median") if entry else None

    ratios, speedups = {}, {}
    for precision in precisions:
        lhc, resnet = median("lhc_net", precision), median("resnet34v2", precision)
        ratios[precision] = round(lhc / resnet, 3) if lhc and resnet else None
    for name in MODELS:
        f32, bf16 = median(name, "float32"), median(name, "mixed_bfloat16")
        speedups[name] = round(f32 / bf16, 3) if f32 and bf16 else None
    return {"ratio_lhc_net_over_resnet34v2": ratios, "bf16_speedup_over_float32": speedups}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=_env_int("BENCH_INPUT", 224))
    parser.add_argument("--batch", type=int, default=_env_int("BENCH_BATCH", 64))
    parser.add_argument("--steps", type=int, default=_env_int("BENCH_STEPS", 20),
                        help="timed steps per model and precision")
    parser.add_argument("--rounds", type=int, default=_env_int("BENCH_ROUNDS", 4),
                        help="the timed steps come in this many rounds, alternating models")
    parser.add_argument("--warmup", type=int, default=_env_int("BENCH_WARMUP", 2),
                        help="untimed steps after the compiling first step")
    parser.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET", 300)),
                        help="seconds since start after which no configuration starts")
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    if min(args.size, args.batch, args.steps, args.rounds) < 1 or args.warmup < 0:
        parser.error("--size, --batch, --steps and --rounds must be positive, --warmup >= 0")
    precisions = tuple(p for p in os.environ.get("BENCH_PRECISIONS", ",".join(PRECISIONS))
                       .split(",") if p)

    info = backend_info()
    out_path = os.path.join(args.out_dir, f"gpu_train_step_{device_tag(info['device_kind'])}_"
                                          f"{info['backend']}.json")
    print(f"[start] {info} -> {out_path} (import {time.perf_counter() - START:.1f}s)", flush=True)
    rng = np.random.default_rng(0)
    x = on_device(rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32"))
    y = on_device(rng.integers(0, NUM_CLASSES, (args.batch,)).astype("int32"))

    results, skipped = {}, []
    report = {
        "benchmark": "training step LHC-Net vs ResNet34v2, SGD, jit_compile, device-resident batch",
        "complete": False,
        "input_size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "precisions": list(precisions),
        "runtime": info,
        "results": results,
        "skipped": skipped,
    }
    for precision in precisions:
        try:
            run_precision(precision, args, x, y, results, skipped, out_path, report)
        except Exception as error:  # noqa: BLE001  (e.g. out of memory: keep the other precision)
            skipped.append({"config": precision,
                            "reason": f"{type(error).__name__}: {error}"[:500]})
            print(f"[fail] {precision}: {type(error).__name__}: {error}", flush=True)
        report.update(summarise(results, precisions))
    report["complete"] = not skipped
    report["total_seconds"] = round(time.perf_counter() - START, 1)
    emit(report, out_path)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
