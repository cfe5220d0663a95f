"""``lhc run``: the notebook sequence, headless, into a run directory.

``lhc run [--profile smoke|cpu|gpu|paper] [--data PATH] [--out runs/NAME] [--only 04,05]
[--from 03] [--no-images] [-p NAME VALUE ...]`` (:func:`lhc.workbench.run_sequence`).

An interrupt ends it with one line naming the ``lhc run`` command that continues the
sequence, and exit status 130; a failed notebook, bad input, a run folder another process
writes or a full disk with one line and exit status 1. This process never imports TensorFlow:
the notebooks' kernels do.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from lhc.cli._common import EXIT_INTERRUPTED

__all__ = ["add_cli", "notebook_parameters"]


def add_cli(subparsers) -> None:
    """Add ``run`` to the ``lhc`` command's subparsers.

    Args:
        subparsers: what ``argparse.ArgumentParser.add_subparsers`` returned.
    """
    run = subparsers.add_parser(
        "run", help="run the notebook sequence headless (papermill) into a run directory",
        description="Execute notebooks/NN_*.ipynb in order into RUN_DIR/notebooks/; the last "
                    "one writes the report to reports/<run name>/.")
    run.add_argument("--profile", default="smoke",
                     help="training profile: smoke (default), cpu, paper or a YAML file")
    run.add_argument("--data", help="FER2013 source; default: the synthetic data set")
    run.add_argument("--out", help="run directory (default runs/<profile>)")
    selection = run.add_mutually_exclusive_group()
    selection.add_argument("--only", help="run only these notebooks, e.g. 04,05 (05 includes 05b)")
    selection.add_argument("--from", dest="start", help="run from this notebook on, e.g. 03")
    run.add_argument("--no-images", dest="images", action="store_false",
                     help="draw and report no figure that shows faces")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                     metavar=("NAME", "VALUE"), dest="parameters",
                     help="a notebook parameter, as papermill's -p (the value is read as YAML: "
                          "-p split val, -p sample_size 1200); repeatable")
    run.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from lhc._io import DiskFull
    from lhc.training.run_lock import RunLocked
    from lhc.workbench import NotebookFailed, SequenceInterrupted, run_sequence

    try:
        run_sequence(args.profile, args.data, out=args.out, only=args.only, start=args.start,
                     images=args.images, parameters=notebook_parameters(args.parameters))
    except SequenceInterrupted as stop:
        print(f"lhc run: {stop}; resume with: {_resume_command(args, stop.key)}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except (NotebookFailed, ValueError, RunLocked, DiskFull) as failure:
        print(f"lhc run: {failure}", file=sys.stderr)
        return 1
    return 0


def _resume_command(args: argparse.Namespace, key: str) -> str:
    """The ``lhc run`` command that continues from notebook ``key``, with the same settings.

    The training notebooks continue their stages from the last checkpoints.
    """
    from pathlib import Path

    out = args.out or str(Path("runs") / Path(args.profile).stem)
    words = ["lhc", "run", "--profile", args.profile, "--out", out, "--from", key]
    if args.data:
        words += ["--data", args.data]
    if not args.images:
        words.append("--no-images")
    for name, value in args.parameters:
        words += ["-p", name, value]
    return shlex.join(words)


def notebook_parameters(pairs) -> dict:
    """``-p NAME VALUE`` pairs as a dict, each value read as YAML (``1200`` an int, ``false`` a
    bool, ``val`` a string), as papermill's own ``-p`` reads them."""
    import yaml

    return {name: yaml.safe_load(value) for name, value in pairs}
