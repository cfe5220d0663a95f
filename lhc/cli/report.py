"""``lhc report``: the self-contained HTML report of a run.

``lhc report runs/NAME [--out reports/NAME] [--no-images]``
(:func:`lhc.run_report.build_report`). This process never imports TensorFlow.
"""

from __future__ import annotations

import argparse

__all__ = ["add_cli"]


def add_cli(subparsers) -> None:
    """Add ``report`` to the ``lhc`` command's subparsers.

    Args:
        subparsers: what ``argparse.ArgumentParser.add_subparsers`` returned.
    """
    report = subparsers.add_parser(
        "report", help="build the self-contained HTML report of a run",
        description="Write reports/NAME/report.html (figures embedded) and every figure as PNG "
                    "and SVG under reports/NAME/figures/.")
    report.add_argument("run_dir")
    report.add_argument("--out", help="report folder (default reports/<run name>)")
    report.add_argument("--no-images", dest="images", action="store_false",
                        help="leave out every figure that shows faces (for real data)")
    report.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from lhc.run_report import build_report

    report = build_report(args.run_dir, args.out, images=args.images)
    print(report.summary())
    return 0
