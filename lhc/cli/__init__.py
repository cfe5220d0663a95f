"""The ``lhc`` command line: :func:`main` and :func:`build_parser`, one module per subcommand.

Subcommands, each registered by its module's ``add_cli``:

- ``lhc summary [--input-size 224]`` (:mod:`lhc.cli.summary`): build ResNet34v2, LHC-Net and
  LHC-NetC at the paper's settings, print the parameter table and the LHC block settings, and
  run a forward pass on random input.
- ``lhc synth OUT.csv[.gz] [--n N] [--seed S]`` (:mod:`lhc.cli.synth`): write the synthetic
  FER-like data set in Kaggle's ``fer2013.csv`` format.
- ``lhc data-report PATH [--out DIR] [--carve-test F] [--allow-resize]``
  (:mod:`lhc.cli.data_report`): validate a FER2013 source and write its data report (JSON and
  figures).
- ``lhc data pack SOURCE OUT.lhcpack`` and ``lhc data unpack PACK OUT.csv[.gz]``
  (:mod:`lhc.cli.data_pack`): the compact lossless pack the data travels in to a machine
  without network (:mod:`lhc.data.pack`).
- ``lhc train --profile smoke|cpu|gpu|paper [--data PATH] --out runs/NAME [--seed S]
  [--stages 1-4]`` and ``lhc train --resume runs/NAME`` (:mod:`lhc.cli.train`).
- ``lhc sweep --profile ... --seeds 1-10 --arms A,B`` (:mod:`lhc.cli.sweep`).
- ``lhc evaluate RUN_DIR_OR_MODEL --data PATH [--split] [--tta]`` (:mod:`lhc.cli.evaluate`;
  the workflow is :func:`lhc.evaluation.run_evaluation`).
- ``lhc predict MODEL IMAGE_OR_DIR... [--tta flip] [--out DIR]`` (:mod:`lhc.cli.predict`).
- ``lhc export MODEL --format keras|savedmodel|tflite`` (:mod:`lhc.cli.export`).
- ``lhc run [--profile smoke|cpu|gpu|paper] [--data PATH] [--out runs/NAME]``
  (:mod:`lhc.cli.run`): the notebook sequence, headless.
- ``lhc report runs/NAME [--no-images]`` (:mod:`lhc.cli.report`): a run's HTML report.

Shared pieces (the interrupt's exit status, the model options) are in :mod:`lhc.cli._common`.
Building the parser imports neither TensorFlow nor Keras; a command imports what it needs
when it runs, and :func:`main` quiets TensorFlow's start-up logs first for those that need it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

__all__ = ["build_parser", "main"]

# The modules under lhc.cli, in the order their subcommands are listed by ``lhc --help``.
COMMAND_MODULES = ("summary", "synth", "data_report", "data_pack", "train", "sweep", "evaluate",
                   "predict", "export", "run", "report")

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


def build_parser() -> argparse.ArgumentParser:
    """The ``lhc`` parser, with every subcommand of :data:`COMMAND_MODULES`.

    Returns:
        The parser; a parsed namespace's ``func`` runs its command and returns the exit status.
    """
    parser = argparse.ArgumentParser(prog="lhc", description="LHC-Net research workbench.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"lhc.cli.{name}").add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``lhc`` command.

    Args:
        argv: the arguments after ``lhc``; None for ``sys.argv[1:]``.

    Returns:
        The exit status: the command's own, or 2 on bad input (a ``ValueError`` or
        ``FileNotFoundError``) or a run folder another process writes, after one line on stderr.
    """
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
