"""``lhc train``: a profile's stages into a run directory, or an interrupted run resumed.

- ``lhc train --profile cpu --data PATH --out runs/NAME [--seed S] [--stages 1-4]
  [--imagenet-weights FILE] [--start-from RUN_DIR]`` (:func:`lhc.training.train`);
- ``lhc train --resume runs/NAME`` continues an interrupted run (:func:`lhc.training.resume`).

An interrupt (Ctrl-C) ends the command with one line saying where the run stopped and how to
resume it, and exit status 130; a full disk with one line naming the folder and the space
needed, and exit status 1. A second writer on one run folder is refused
(:mod:`lhc.training.run_lock`). TensorFlow is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lhc.cli._common import EXIT_INTERRUPTED

__all__ = ["add_cli"]


def add_cli(subparsers) -> None:
    """Add ``train`` to the ``lhc`` command's subparsers.

    Args:
        subparsers: what ``argparse.ArgumentParser.add_subparsers`` returned.
    """
    train = subparsers.add_parser(
        "train", help="train a profile's stages into a run directory, or resume one",
        description="Train the paper's protocol (stages 1-4 and C, LHC-NetC) from a profile.")
    train.add_argument("--profile", help="shipped profile (paper, cpu, smoke) or YAML file")
    train.add_argument("--data", help="FER2013 source; default: the profile's synthetic data")
    train.add_argument("--out", help="run directory (default runs/<profile>)")
    train.add_argument("--seed", type=int, help="override the profile's seed")
    train.add_argument("--stages", default="all",
                       help="stages to run: all, 1-4, 1-3, 4,C ... (C is LHC-NetC)")
    train.add_argument("--imagenet-weights", help="local h5 of ImageNet backbone weights")
    train.add_argument("--start-from", help="run directory whose finished stages precede these")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue an interrupted run; takes no other option")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                       help="0 silent, 1 progress bars, 2 one line per epoch")
    hosts = train.add_argument_group(
        "several hosts (strategy multi_worker, KERAS_BACKEND=jax): the same command on every "
        "host, each with its own --process-id")
    hosts.add_argument("--coordinator", metavar="HOST:PORT",
                       help="process 0's address (sets KERAS_DISTRIBUTION_JOB_ADDRESSES)")
    hosts.add_argument("--num-processes", type=int,
                       help="processes in all (sets KERAS_DISTRIBUTION_NUM_PROCESSES)")
    hosts.add_argument("--process-id", type=int,
                       help="this process's index, 0 on the coordinator "
                            "(sets KERAS_DISTRIBUTION_PROCESS_ID)")
    train.set_defaults(func=_cmd_train, parser=train)


def _cmd_train(args: argparse.Namespace) -> int:
    from lhc._io import DiskFull
    from lhc.logs import show
    from lhc.training import resume, train
    from lhc.training.runner import RUN_STATE, Interrupted

    show()  # the runner's progress lines on stdout, however the command is called

    # keras.distribution.initialize reads these when the run's strategy is multi_worker.
    for flag, variable in (("coordinator", "KERAS_DISTRIBUTION_JOB_ADDRESSES"),
                           ("num_processes", "KERAS_DISTRIBUTION_NUM_PROCESSES"),
                           ("process_id", "KERAS_DISTRIBUTION_PROCESS_ID")):
        if getattr(args, flag) is not None:
            os.environ[variable] = str(getattr(args, flag))

    if args.resume:
        given = [name for name in ("profile", "data", "out", "seed", "imagenet_weights",
                                   "start_from") if getattr(args, name) is not None]
        if given or args.stages != "all":
            args.parser.error(f"--resume takes no other option (got {given or ['--stages']}): "
                              "the run directory holds its profile, data and stages")
        if not (Path(args.resume) / RUN_STATE).exists():
            what = "does not exist" if not Path(args.resume).exists() else \
                f"holds no run (no {RUN_STATE})"
            print(f"lhc train: error: {args.resume}: {what}, nothing to resume; start a run "
                  f"there with: lhc train --profile NAME --out {args.resume}", file=sys.stderr)
            return 2
    elif args.profile is None:
        args.parser.error("--profile is required unless --resume is given")
    try:
        if args.resume:
            metrics = resume(args.resume, verbose=args.verbose)
        else:
            metrics = train(args.profile, args.data, out=args.out, seed=args.seed,
                            stages=args.stages, imagenet_weights=args.imagenet_weights,
                            start_from=args.start_from, verbose=args.verbose)
    except Interrupted as stop:
        print(f"lhc train: {stop}; resume with: lhc train --resume {stop.run_dir}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except DiskFull as full:
        print(f"lhc train: error: {full}; free space there, then resume with: lhc train "
              f"--resume {full.run_dir}", file=sys.stderr)
        return 1
    print(f"{metrics['run']}: {metrics['status']}; metrics in {metrics['run']}/metrics.json")
    return 0 if metrics["status"] == "complete" else 1
