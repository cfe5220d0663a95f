"""The ``lhc train`` and ``lhc sweep`` subcommands, added to the ``lhc`` parser by :func:`add_cli`.

- ``lhc train --profile cpu --data PATH --out runs/NAME [--seed S] [--stages 1-4]
  [--imagenet-weights FILE] [--start-from RUN_DIR]``; ``lhc train --resume runs/NAME``
  continues an interrupted run.
- ``lhc sweep --profile cpu --data PATH --seeds 1-10 --arms A,B [--out DIR] [--base RUN_DIR]
  [--engine ray --ray-address ADDRESS --gpus-per-trial 1]``.

An interrupt (Ctrl-C) ends either command with one line saying where the run stopped and how
to resume it, and exit status 130; a full disk with one line naming the folder and the space
needed, and exit status 1. A second writer on one run folder is refused
(:mod:`lhc.training.run_lock`).

TensorFlow is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["EXIT_INTERRUPTED", "add_cli"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a process stopped by Ctrl-C


def add_cli(subparsers) -> None:
    """Add ``train`` and ``sweep`` to the ``lhc`` command's subparsers.

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

    sweep = subparsers.add_parser(
        "sweep", help="the paper's seed sets A/B/C and the attention peers: stage 4 per arm "
                      "and seed",
        description="Run stage 4 (and LHC-NetC for arm C) once per arm and seed, every arm on "
                    "the same seeds from one backbone.")
    sweep.add_argument("--profile", required=True)
    sweep.add_argument("--seeds", required=True, help="e.g. 1-10 or 1,3,7")
    sweep.add_argument("--arms", default="A,B",
                       help="some of A (no attention), B (LHC-Net), C (B then LHC-NetC), GLOBAL "
                            "(LHC with global heads), SE, CBAM, ECA (default A,B)")
    sweep.add_argument("--data")
    sweep.add_argument("--out", help="sweep folder (default runs/sweep-<profile>)")
    sweep.add_argument("--base", help="run directory with stages 1-3 done (default: train one)")
    sweep.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    sweep.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: the runs one after another in this process (default); "
                            "ray: each (arm, seed) a Ray Tune trial (pip install -e '.[ray]')")
    ray = sweep.add_argument_group("engine ray")
    ray.add_argument("--ray-address", metavar="ADDRESS",
                     help="an existing Ray cluster (e.g. ray://head:10001 or auto); default: "
                          "a local Ray instance for this sweep")
    ray.add_argument("--ray-num-cpus", type=int, metavar="N",
                     help="CPUs of the local Ray instance (default: all)")
    ray.add_argument("--cpus-per-trial", type=float, default=1, metavar="N")
    ray.add_argument("--gpus-per-trial", type=float, default=0, metavar="N")
    ray.add_argument("--max-failures", type=int, default=2, metavar="N",
                     help="retries of a trial that dies; each continues from its last "
                          "checkpoint (default 2)")
    sweep.set_defaults(func=_cmd_sweep, parser=sweep)


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


def _cmd_sweep(args: argparse.Namespace) -> int:
    from lhc._io import DiskFull
    from lhc.logs import show
    from lhc.training import sweep
    from lhc.training.ray_engine import RayMissing, TrialsFailed
    from lhc.training.runner import Interrupted

    show()

    engine_settings = {}
    ray_flags = {"ray_address": "address", "ray_num_cpus": "num_cpus",
                 "cpus_per_trial": "cpus_per_trial", "gpus_per_trial": "gpus_per_trial",
                 "max_failures": "max_failures"}
    if args.engine == "ray":
        engine_settings = {setting: getattr(args, flag) for flag, setting in ray_flags.items()
                           if getattr(args, flag) is not None}
    else:
        given = [flag for flag in ray_flags
                 if getattr(args, flag) != args.parser.get_default(flag)]
        if given:
            args.parser.error(f"{', '.join('--' + flag.replace('_', '-') for flag in given)}: "
                              "only with --engine ray")
    try:
        summary = sweep(args.profile, args.seeds, arms=args.arms.split(","),
                        data_path=args.data, out=args.out, base=args.base, verbose=args.verbose,
                        engine=args.engine, **engine_settings)
    except RayMissing as missing:
        print(f"lhc sweep: error: {missing}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"lhc sweep: {stop}; resume with the same lhc sweep command (finished runs are "
              "kept, the interrupted one continues)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DiskFull as full:
        print(f"lhc sweep: error: {full}; free space there, then rerun the same lhc sweep "
              "command to continue", file=sys.stderr)
        return 1
    except TrialsFailed as failed:
        print(f"lhc sweep: error: {failed}", file=sys.stderr)
        return 1
    for key, run in summary["runs"].items():
        kept = run["acceptance"]["kept"] if run["acceptance"] else None
        print(f"{key}: {run['status']}, kept by the acceptance rule: {kept}")
    if "A" in summary["arms"]:
        from lhc.evaluation import peer_table

        # Every arm against A, paired by seed (lhc.statistics), over all finished runs.
        print(peer_table(summary["folder"])["table"])
    return 0
