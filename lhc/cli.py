"""The ``lhc`` command line.

Subcommands:

- ``lhc summary [--input-size 224]``: build ResNet34v2, LHC-Net and LHC-NetC at the paper's
  settings, print the parameter table and the LHC block settings, and run a forward pass
  on random input (the main job of ``make run`` until the notebook sequence lands).
- ``lhc synth OUT.csv[.gz] [--n N] [--seed S]``: write the synthetic FER-like data set in
  Kaggle's ``fer2013.csv`` format.
- ``lhc data-report PATH [--out DIR] [--carve-test F] [--allow-resize]``: validate a FER2013
  source and write its data report (JSON and figures).
- ``lhc data pack SOURCE OUT.lhcpack`` and ``lhc data unpack PACK OUT.csv[.gz]``: the compact
  lossless pack the data travels in to a machine without network (:mod:`lhc.data.pack`).
- ``lhc train --profile smoke|cpu|gpu|paper [--data PATH] --out runs/NAME [--seed S] [--stages 1-4]``
  and ``lhc train --resume runs/NAME``; ``lhc sweep --profile ... --seeds 1-10 --arms A,B``
  (:mod:`lhc.training.commands`).
- ``lhc evaluate RUN_DIR_OR_MODEL --data PATH [--split] [--tta]`` (:mod:`lhc.evaluate_cli`).
- ``lhc run [--profile smoke|cpu|gpu|paper] [--data PATH] [--out runs/NAME]`` (the notebook
  sequence, headless) and ``lhc report runs/NAME [--no-images]`` (:mod:`lhc.workbench_cli`).
- ``lhc predict MODEL IMAGE_OR_DIR... [--tta flip] [--out DIR]`` and
  ``lhc export MODEL --format keras|savedmodel|tflite`` (:mod:`lhc.predict_cli`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

# Commands that never import TensorFlow start faster without the quiet import below.
TENSORFLOW_FREE_COMMANDS = {"synth", "data-report", "data", "run", "report"}


def _quiet_tensorflow() -> None:
    """Import TensorFlow with its start-up log lines hidden from the terminal.

    TF 2.19+ writes them to file descriptor 2 before absl logging exists, so
    ``TF_CPP_MIN_LOG_LEVEL`` alone does not hide them; level 3 hides the later cuInit error
    on machines without a GPU. Set ``LHC_TF_LOGS=1`` to see them.
    """
    if os.environ.get("LHC_TF_LOGS") == "1" or os.environ.get("KERAS_BACKEND",
                                                             "tensorflow") != "tensorflow":
        return  # another backend never imports TensorFlow
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        import tensorflow  # noqa: F401
    except ImportError:
        pass  # an installation without TensorFlow has no such logs
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def parameter_table(input_size: int = 224, num_classes: int = 7) -> list[dict]:
    """Rows of model name, total and LHC parameters and LHC share, counted from the models."""
    from lhc.evaluation import parameter_counts
    from lhc.models import build_lhc_net, build_resnet34v2

    shape = (input_size, input_size, 3)
    models = {
        "ResNet34v2": build_resnet34v2(shape, num_classes),
        "LHC-Net": build_lhc_net(shape, num_classes, variant="lhc"),
        "LHC-NetC": build_lhc_net(shape, num_classes, variant="lhcc"),
    }
    rows = []
    for name, model in models.items():
        total, attention = parameter_counts(model)
        rows.append({"model": name, "params": total, "lhc_params": attention,
                     "lhc_share_percent": round(100 * attention / total, 2), "keras_model": model})
    return rows


def _cmd_summary(args: argparse.Namespace) -> int:
    import numpy as np

    from lhc.layers import LHC

    rows = parameter_table(args.input_size)
    print(f"Models at {args.input_size}x{args.input_size}x3, 7 classes")
    print(f"{'model':<12} {'params':>12} {'LHC params':>12} {'LHC share':>10}")
    for row in rows:
        print(f"{row['model']:<12} {row['params']:>12,} {row['lhc_params']:>12,} "
              f"{row['lhc_share_percent']:>9.2f}%")
    lhc_net = rows[1]["keras_model"]
    print("\nLHC blocks (heads n, head dim d, pool p, kernel s, scale g) and their input maps")
    for layer in lhc_net.layers:
        if isinstance(layer, LHC):
            print(f"  {layer.name}: n={layer.num_heads} d={layer.head_dim} p={layer.pool_size} "
                  f"s={layer.kernel_size} g={layer.scale_exponent}  on "
                  f"{layer.height}x{layer.width}x{layer.channels}")
    images = np.random.default_rng(args.seed).uniform(
        0, 255, (args.batch, args.input_size, args.input_size, 3)).astype("float32")
    print(f"\nForward pass on random input {images.shape}:")
    for row in rows:
        probabilities = row["keras_model"].predict(images, verbose=0)
        print(f"  {row['model']:<12} output {probabilities.shape}, rows sum to "
              f"{np.round(probabilities.sum(axis=1), 4).tolist()}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from lhc.data import synthetic

    synthetic.write_fer2013_csv(args.out, n=args.n, seed=args.seed)  # returns the data set
    print(f"wrote {args.n} synthetic images to {args.out}")
    return 0


def _cmd_data_report(args: argparse.Namespace) -> int:
    from lhc import plots
    from lhc._io import write_json
    from lhc.data import load_fer2013
    from lhc.data import report as data_report

    data = load_fer2013(args.path, carve_test=args.carve_test, on_error=args.on_error,
                        allow_resize=args.allow_resize)
    summary = data_report.data_report(data)
    out = Path(args.out)
    write_json(out / "data_report.json", summary)
    plots.apply_style()
    figures = {
        "data_class_distribution": data_report.class_distribution_figure(summary),
        "data_pixel_statistics": data_report.pixel_statistics_figure(data),
        "data_duplicates": data_report.duplicates_figure(summary),
    }
    if args.images:  # off by default: a report on real data must not show faces
        train = data.splits["train"]
        figures["data_samples_per_class"] = data_report.sample_grid(
            train.images, train.labels, data.class_names)
    for name, fig in figures.items():
        plots.save_figure(fig, out / "figures" / name)
    print(data.split_convention)
    for note in data.notes:
        print(f"note: {note}")
    for name, split in summary["splits"].items():
        print(f"{name:>5}: {split['rows']:>6} rows, per class {split['class_counts']}")
    duplicates = summary["duplicates"]
    print(f"duplicates: {duplicates['repeated_rows']} repeated rows in {duplicates['groups']} "
          f"groups, {duplicates['groups_across_splits']} across splits, "
          f"{duplicates['groups_with_conflicting_labels']} with conflicting labels")
    if data.skipped:
        print(f"skipped {len(data.skipped)} invalid rows (see data_report.json)")
    print(f"report written to {out}")
    return 0


def _cmd_data_pack(args: argparse.Namespace) -> int:
    import time

    from lhc.data.pack import write_pack

    start = time.perf_counter()
    info = write_pack(args.source, args.out)
    print(f"packed {info.num_images} images from {args.source} into {info.path}: "
          f"{info.num_bytes:,} bytes ({info.num_bytes / info.raw_pixel_bytes:.1%} of the "
          f"{info.raw_pixel_bytes:,} raw pixel bytes) in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_data_unpack(args: argparse.Namespace) -> int:
    from lhc.data.pack import unpack_to_csv

    rows = unpack_to_csv(args.pack, args.out)
    print(f"wrote {rows} rows of {args.pack} to {args.out} (Kaggle fer2013.csv format)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lhc", description="LHC-Net research workbench.")
    sub = parser.add_subparsers(dest="command", required=True)

    summary = sub.add_parser("summary", help="parameter table and a forward pass")
    summary.add_argument("--input-size", type=int, default=224)
    summary.add_argument("--batch", type=int, default=2)
    summary.add_argument("--seed", type=int, default=0)
    summary.set_defaults(func=_cmd_summary)

    synth = sub.add_parser("synth", help="write the synthetic FER-like data set")
    synth.add_argument("out")
    synth.add_argument("--n", type=int, default=3000)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_cmd_synth)

    report = sub.add_parser("data-report", help="validate a FER2013 source and report on it")
    report.add_argument("path")
    report.add_argument("--out", default="runs/data-report")
    report.add_argument("--carve-test", type=float, default=None,
                        help="carve a stratified test split of this fraction from train")
    report.add_argument("--on-error", choices=("raise", "skip"), default="raise")
    report.add_argument("--allow-resize", action="store_true",
                        help="resize image-folder images that are not 48x48 to 48x48 (bilinear) "
                             "instead of failing on them")
    report.add_argument("--images", action="store_true",
                        help="also draw a grid of sample faces (off: no images of the data)")
    report.set_defaults(func=_cmd_data_report)

    data = sub.add_parser(
        "data", help="pack FER2013 into one compact lossless file, or unpack it to a CSV",
        description="A data pack holds images, labels, splits and provenance losslessly in "
                    "about 63% of the raw pixel bytes; load_fer2013 (and so --data) reads it "
                    "like the source it was made from, with numpy alone.")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    pack = data_sub.add_parser("pack", help="write SOURCE as a lossless data pack OUT",
                               description="Read SOURCE (a fer2013.csv[.gz], per-split CSVs or "
                                           "image folders) with the validating reader and "
                                           "write it to OUT as a data pack.")
    pack.add_argument("source", help="a FER2013 source, as load_fer2013 reads it")
    pack.add_argument("out", help="the pack to write, e.g. fer2013.lhcpack")
    pack.set_defaults(func=_cmd_data_pack)
    unpack = data_sub.add_parser("unpack", help="write a data pack back as a Kaggle CSV",
                                 description="Write PACK as a Kaggle fer2013.csv (emotion,"
                                             "pixels,Usage) in source row order; .gz to "
                                             "compress it.")
    unpack.add_argument("pack", help="a data pack written by lhc data pack")
    unpack.add_argument("out", help="the CSV to write, OUT.csv or OUT.csv.gz")
    unpack.set_defaults(func=_cmd_data_unpack)

    from lhc.training.commands import add_cli as add_training_commands

    add_training_commands(sub)  # lhc train, lhc sweep
    # lhc evaluate; lhc predict, export; lhc run, report
    for module in ("lhc.evaluate_cli", "lhc.predict_cli", "lhc.workbench_cli"):
        importlib.import_module(module).add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in TENSORFLOW_FREE_COMMANDS:
        _quiet_tensorflow()
    from lhc.training.run_lock import RunLocked

    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RunLocked) as error:
        # Bad input (a DataError names file and line), or a run folder another process
        # writes, is the user's to fix: no traceback.
        print(f"lhc {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
