"""``lhc export``: a trained model as ``.keras``, SavedModel or TFLite (:mod:`lhc.export`).

``lhc export MODEL --format keras|savedmodel|tflite [--out PATH] [--stage S --model M]``.
``MODEL`` is a run directory (its stage-4 LHC-Net unless ``--stage``/``--model`` say
otherwise) or a ``.keras`` file. TensorFlow is imported only when the command runs.
"""

from __future__ import annotations

import argparse

from lhc.cli._common import add_model_arguments

__all__ = ["add_cli"]


def add_cli(subparsers) -> None:
    """Add ``export`` to the ``lhc`` command's subparsers.

    Args:
        subparsers: what ``argparse.ArgumentParser.add_subparsers`` returned.
    """
    export = subparsers.add_parser(
        "export", help="export a trained model as .keras, SavedModel or TFLite",
        description="Export a run's model (or a .keras file) for deployment.")
    add_model_arguments(export)
    export.add_argument("--format", required=True, choices=("keras", "savedmodel", "tflite"))
    export.add_argument("--out", help="destination (default exports/<run name>.<format suffix>)")
    export.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from lhc.export import default_export_path, export_model, load_model

    loaded = load_model(args.model, stage=args.stage, model=args.model_name)
    out = args.out or default_export_path(args.model, args.format)
    path = export_model(loaded.model, args.format, out)
    print(f"exported {loaded.source} as {args.format} to {path}")
    return 0
