"""``lhc predict``: facial expressions of the faces in photos (:mod:`lhc.predict`).

``lhc predict MODEL IMAGE_OR_DIR... [--tta flip] [--out DIR] [--no-detect] [--margin F]
[--stage S --model M]``. ``MODEL`` is a run directory (its stage-4 LHC-Net unless
``--stage``/``--model`` say otherwise) or a ``.keras`` file. TensorFlow is imported only when
the command runs.

The command exits 1 when it predicted no face at all (every input skipped, or no face
found), after saying so.
"""

from __future__ import annotations

import argparse
import sys

from lhc.cli._common import add_model_arguments

__all__ = ["add_cli"]


def add_cli(subparsers) -> None:
    """Add ``predict`` to the ``lhc`` command's subparsers.

    Args:
        subparsers: what ``argparse.ArgumentParser.add_subparsers`` returned.
    """
    predict = subparsers.add_parser(
        "predict", help="facial expressions of the faces in photos",
        description="Find faces (OpenCV Haar cascade), crop them FER2013-style and predict "
                    "their expression; writes predictions.csv/.json and annotated images.")
    add_model_arguments(predict)
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
