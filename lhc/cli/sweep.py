"""``lhc sweep``: the paper's seed sets A/B/C and the attention peers, stage 4 per arm and seed.

``lhc sweep --profile cpu --data PATH --seeds 1-10 --arms A,B [--out DIR] [--base RUN_DIR]
[--engine ray --ray-address ADDRESS --gpus-per-trial 1]`` (:func:`lhc.training.sweep`).

An interrupt (Ctrl-C) ends the command with one line saying how to resume it, and exit status
130; a full disk with one line naming the folder and the space needed, and exit status 1.
TensorFlow is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys

from lhc.cli._common import EXIT_INTERRUPTED

__all__ = ["add_cli"]


def add_cli(subparsers) -> None:
    """Add ``sweep`` to the ``lhc`` command's subparsers.

    Args:
        subparsers: what ``argparse.ArgumentParser.add_subparsers`` returned.
    """
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
