"""The ``lhc predict`` and ``lhc export`` subcommands, added to the parser by :func:`add_cli`.

- ``lhc predict MODEL IMAGE_OR_DIR... [--tta flip] [--out DIR] [--no-detect] [--margin F]
  [--stage S --model M]``: facial expressions of the faces in photos (:mod:`lhc.predict`).
- ``lhc export MODEL --format keras|savedmodel|tflite [--out PATH] [--stage S --model M]``
  (:mod:`lhc.export`).

``MODEL`` is a run directory (its stage-4 LHC-Net unless ``--stage``/``--model`` say
otherwise) or a ``.keras`` file. TensorFlow is imported only when a command runs.

``lhc predict`` exits 1 when it predicted no face at all (every input skipped, or no face
found), after saying so.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_cli"]

def add_cli(subparsers) -> None:
    """Add ``predict`` and ``export`` to the ``lhc`` command's subparsers.

    Args:
        subparsers: what ``argparse.ArgumentParser.add_subparsers`` returned.
    """
    predict = subparsers.add_parser(
        "predict", help="facial expressions of the faces in photos",
        description="Find faces (OpenCV Haar cascade), crop them FER2013-style and predict "
                    "their expression; writes predictions.csv/.json and annotated images.")
    _add_model_arguments(predict)
    predict.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR",
                         help="image files, or folders searched recursively for images")
    predict.add_argument("--tta", default="none",
                         help="test-time augmentation protocol of lhc.tta: none (default), flip, "
                              "paper or reference")
    predict.add_argument("--out", default="runs/predictions",
                         help="folder for predictions.csv/.json and annotated/ "
                              "(default runs/predictions)")
    predict.add_argument("--no-detect", action="store_true",
                         help="take each image as an already-cropped face")
    predict.add_argument("--margin", type=float, default=None,
                         help="crop margin around a detected face, fraction of its box "
                              "(default 0.1)")
    predict.set_defaults(func=_cmd_predict)

    export = subparsers.add_parser(
        "export", help="export a trained model as .keras, SavedModel or TFLite",
        description="Export a run's model (or a .keras file) for deployment.")
    _add_model_arguments(export)
    export.add_argument("--format", required=True, choices=("keras", "savedmodel", "tflite"))
    export.add_argument("--out", help="destination (default exports/<run name>.<format suffix>)")
    export.set_defaults(func=_cmd_export)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="run directory or .keras file")
    parser.add_argument("--stage", default="stage4",
                        help="with a run directory: stage1..stage4 or lhcc (default stage4)")
    parser.add_argument("--model", dest="model_name", default=None,
                        help="with a run directory: resnet34v2, lhc_net or lhc_netc "
                             "(default: the model the stage trains, LHC-Net in stage 4)")


def _cmd_predict(args: argparse.Namespace) -> int:
    from lhc.predict import DEFAULT_MARGIN, Predictor

    predictor = Predictor(args.model, tta=args.tta, stage=args.stage, model_name=args.model_name,
                          detect=not args.no_detect,
                          margin=DEFAULT_MARGIN if args.margin is None else args.margin)
    report = predictor.predict_paths(args.images, out=args.out)
    for result in report.results:
        if not result.faces:
            print(f"{result.file}: {result.message}")
        for number, face in enumerate(result.faces, 1):
            print(f"{result.file}: face {number} at (x, y, w, h) = {face.box}: {face.label} "
                  f"({face.probability:.2f})")
    for entry in report.skipped:
        print(f"skipped {entry.file}: {entry.reason}")
    print(f"faces: {report.num_faces}, images: {len(report.results)}, without a face: "
          f"{sum(not result.faces for result in report.results)}, skipped: "
          f"{len(report.skipped)}; predictions in {args.out}")
    if report.num_faces == 0:
        # A script that runs ``lhc predict`` must see that it got no prediction at all (wrong
        # paths, unreadable files, no face), not a success with empty tables.
        skipped, read = len(report.skipped), len(report.results)
        print(f"lhc predict: nothing predicted: {_count(skipped, 'input')} skipped, "
              f"{_count(read, 'image')} read, none with a face", file=sys.stderr)
        return 1
    return 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _cmd_export(args: argparse.Namespace) -> int:
    from lhc.export import default_export_path, export_model, load_model

    loaded = load_model(args.model, stage=args.stage, model=args.model_name)
    out = args.out or default_export_path(args.model, args.format)
    path = export_model(loaded.model, args.format, out)
    print(f"exported {loaded.source} as {args.format} to {path}")
    return 0
