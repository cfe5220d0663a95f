"""The GPU run's steps that need Keras, each run by ``gpu/run.py`` as a child process.

- ``python gpu/steps.py environment OUT.json [--require-gpu]``: check that Keras and every
  module it imports at ``import keras`` are importable (naming the missing ones), then write
  the versions and devices (:func:`lhc.workbench.environment_summary`, Keras, JAX, the devices
  JAX sees). With ``--require-gpu`` it fails (exit status 4) when JAX's default backend is not
  a GPU, so that a broken CUDA set-up costs seconds rather than a CPU-bound training.
- ``python gpu/steps.py report RUN_DIR OUT_DIR [--evaluate stage4,stage3,lhcc] [--split val]
  [--tta flip] [--deadline UNIX_TIME]``: the stage table, one learning-curve figure per
  stage, and the evaluation (:func:`lhc.evaluation.run_evaluation`: float32, with and
  without TTA) of each finished stage in the order given, each begun only while at least
  :data:`EVALUATION_SECONDS` remain before the deadline; ``OUT_DIR/evaluation.json`` sums
  them up.

Exit status 3: a module is missing; 4: no GPU where one was required; 1: a step failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Modules ``import keras`` imports on JAX (Keras 3's requirements), and the backend.
KERAS_MODULES = ("keras", "absl", "numpy", "rich", "namex", "h5py", "optree", "ml_dtypes",
                 "packaging", "jax", "yaml", "matplotlib", "seaborn", "PIL")
STAGE_ORDER = ("stage1", "stage2", "stage3", "stage4", "lhcc")
# Seconds an evaluation of one stage needs at least (process already up; on an H200 at 224:
# rebuild in float32, load, compile, 3,589 images with flip TTA).
EVALUATION_SECONDS = 30.0


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, default=str) + "\n")


def environment(out: Path, require_gpu: bool = False) -> int:
    missing = [name for name in KERAS_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        message = (f"missing Python modules: {', '.join(missing)} (the kit carries keras, namex "
                   "and optree; the rest must be on the machine)")
        _write_json(out, {"error": message})
        print(f"gpu/steps.py environment: error: {message}", file=sys.stderr)
        return 3
    import jax
    import keras

    from lhc.workbench import environment_summary

    devices = jax.devices()
    summary = environment_summary()
    summary.update({
        "keras": keras.__version__, "keras_file": keras.__file__,
        "keras_backend": keras.backend.backend(), "jax": jax.__version__,
        "jaxlib": getattr(importlib.import_module("jaxlib"), "__version__", None),
        "jax_default_backend": jax.default_backend(),
        "devices": [f"{device.platform}:{device.id} {getattr(device, 'device_kind', '')}".strip()
                    for device in devices],
        "executable": sys.executable,
    })
    _write_json(out, summary)
    print(f"environment: Python {summary['python']}, Keras {summary['keras']} "
          f"({summary['keras_backend']}), JAX {summary['jax']}, devices {summary['devices']}")
    if keras.backend.backend() != "jax":
        print(f"gpu/steps.py environment: note: Keras runs on {keras.backend.backend()}, not JAX")
    if require_gpu and jax.default_backend() != "gpu":
        print(f"gpu/steps.py environment: error: JAX's default backend is "
              f"{jax.default_backend()!r}, not a GPU; not training", file=sys.stderr)
        return 4
    return 0


def _finished_stages(run_dir: Path) -> tuple[object, dict[str, str]]:
    from lhc.training import load_run
    from lhc.training.layout import RunLayout

    profile, _ = load_run(run_dir)
    layout = RunLayout(run_dir)
    return profile, {stage: settings.model for stage, settings in profile.stages.items()
                     if layout.stage(stage, settings.model).done}


def report(run_dir: Path, out: Path, stages: list[str], split: str, tta: str,
           deadline: float | None) -> int:
    from lhc import plots
    from lhc.training import learning_curves, stage_table

    failures = 0
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        print(f"report: {metrics_path} does not exist: no stage finished")
        _write_json(out / "evaluation.json", {"split": split, "tta": tta, "stages": {},
                                              "skipped": {stage: "not trained"
                                                          for stage in stages}})
        return 1
    metrics = json.loads(metrics_path.read_text())
    order = [stage for stage in STAGE_ORDER if stage in metrics["stages"]]
    table = stage_table(metrics, order + sorted(set(metrics["stages"]) - set(order)))
    (out / "stage_table.txt").write_text(table + "\n")
    print(table, flush=True)

    plots.apply_style()
    import matplotlib.pyplot as plt

    for folder in sorted((run_dir / "stages").glob("*")):
        if not any((model / "history.csv").exists() for model in folder.iterdir()):
            continue
        try:
            figure = learning_curves(run_dir, folder.name)
            plots.save_figure(figure, out / "figures" / f"learning_curves_{folder.name}",
                              formats=("png",))
            plt.close(figure)
        except Exception:  # noqa: BLE001  (a figure must not cost the evaluations)
            failures += 1
            traceback.print_exc()

    from lhc.evaluation import run_evaluation

    _, finished = _finished_stages(run_dir)
    summary: dict = {"split": split, "tta": tta, "stages": {}, "skipped": {}}
    for stage in stages:
        if stage not in finished:
            summary["skipped"][stage] = "not trained"
            continue
        if deadline is not None and time.time() + EVALUATION_SECONDS > deadline:
            summary["skipped"][stage] = "no time left in the budget"
            print(f"report: {stage} not evaluated: less than {EVALUATION_SECONDS:.0f} s left")
            continue
        start = time.perf_counter()
        try:
            result = run_evaluation(run_dir, split=split, tta=tta, stage=stage,
                                    out=out / "eval" / stage)
        except Exception as error:  # noqa: BLE001  (the next stage may still evaluate)
            failures += 1
            traceback.print_exc()
            summary["skipped"][stage] = f"failed: {error}"
            continue
        row = {"model": finished[stage], "test_split": result["test_split"],
               "images": result["without_tta"]["num_images"],
               "accuracy_without_tta": result["without_tta"]["accuracy"],
               "loss_without_tta": result["without_tta"]["loss"],
               "accuracy": result["accuracy"], "seconds": round(time.perf_counter() - start, 1)}
        if result.get("with_tta"):
            row["accuracy_with_tta"] = result["with_tta"]["accuracy"]
            row["tta_views"] = len(result["tta"]["views"])
        summary["stages"][stage] = row
        _write_json(out / "evaluation.json", summary)
        print(f"report: {stage} ({row['model']}) on {split}: {row['images']} images, accuracy "
              f"{row['accuracy_without_tta']:.4f} without TTA, "
              f"{row.get('accuracy_with_tta', float('nan')):.4f} with {tta} "
              f"({row['seconds']:.0f} s)", flush=True)
    _write_json(out / "evaluation.json", summary)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The GPU run's steps that need Keras.")
    sub = parser.add_subparsers(dest="step", required=True)
    env = sub.add_parser("environment")
    env.add_argument("out", type=Path)
    env.add_argument("--require-gpu", action="store_true")
    rep = sub.add_parser("report")
    rep.add_argument("run_dir", type=Path)
    rep.add_argument("out", type=Path)
    rep.add_argument("--evaluate", default="stage4,stage3,lhcc")
    rep.add_argument("--split", default="val")
    rep.add_argument("--tta", default="flip")
    rep.add_argument("--deadline", type=float, help="Unix time after which no evaluation begins")
    args = parser.parse_args(argv)
    if args.step == "environment":
        return environment(args.out, args.require_gpu)
    stages = [stage for stage in args.evaluate.split(",") if stage]
    return report(args.run_dir, args.out, stages, args.split, args.tta, args.deadline)


if __name__ == "__main__":
    sys.exit(main())
