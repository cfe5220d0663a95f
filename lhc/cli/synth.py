"""``lhc synth OUT.csv[.gz] [--n 3000] [--seed 0]``: the synthetic FER-like data set.

Written in Kaggle's ``fer2013.csv`` format (:mod:`lhc.data.synthetic`).
"""

from __future__ import annotations

import argparse

__all__ = ["add_cli"]


def add_cli(subparsers) -> None:
    """Add ``synth`` to the ``lhc`` command's subparsers.

    Args:
        subparsers: what ``argparse.ArgumentParser.add_subparsers`` returned.
    """
    synth = subparsers.add_parser("synth", help="write the synthetic FER-like data set")
    synth.add_argument("out")
    synth.add_argument("--n", type=int, default=3000)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from lhc.data import synthetic

    synthetic.write_fer2013_csv(args.out, n=args.n, seed=args.seed)  # returns the data set
    print(f"wrote {args.n} synthetic images to {args.out}")
    return 0
