"""``lhc data-report PATH [--out DIR] [--carve-test F] [--on-error raise|skip] [--allow-resize]
[--images]``: validate a FER2013 source and write its data report.

The report (:mod:`lhc.data.report`) is ``DIR/data_report.json`` and figures under
``DIR/figures``; none shows a face unless ``--images`` asks for the sample grid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_cli"]


def add_cli(subparsers) -> None:
    """Add ``data-report`` to the ``lhc`` command's subparsers.

    Args:
        subparsers: what ``argparse.ArgumentParser.add_subparsers`` returned.
    """
    report = subparsers.add_parser("data-report",
                                   help="validate a FER2013 source and report on it")
    report.add_argument("path")
    report.add_argument("--out", default="runs/data-report")
    report.add_argument("--carve-test", type=float, default=None,
                        help="carve a stratified test split of this fraction from train")
    report.add_argument("--on-error", choices=("raise", "skip"), default="raise")
    report.add_argument("--allow-resize", action="store_true",
                        help="resize image-folder images that are not 48x48 to 48x48 (bilinear) "
                             "instead of failing on them")
    report.add_argument("--images", action="store_true",
                        help="also draw a grid of sample faces (off: no images of the data)")
    report.set_defaults(func=_cmd_data_report)


def _cmd_data_report(args: argparse.Namespace) -> int:
    from lhc import plots
    from lhc._io import write_json
    from lhc.data import load_fer2013
    from lhc.data import report as data_report

    data = load_fer2013(args.path, carve_test=args.carve_test, on_error=args.on_error,
                        allow_resize=args.allow_resize)
    summary = data_report.data_report(data)
    out = Path(args.out)
    write_json(out / "data_report.json", summary)
    plots.apply_style()
    figures = {
        "data_class_distribution": data_report.class_distribution_figure(summary),
        "data_pixel_statistics": data_report.pixel_statistics_figure(data),
        "data_duplicates": data_report.duplicates_figure(summary),
    }
    if args.images:  # off by default: a report on real data must not show faces
        train = data.splits["train"]
        figures["data_samples_per_class"] = data_report.sample_grid(
            train.images, train.labels, data.class_names)
    for name, fig in figures.items():
        plots.save_figure(fig, out / "figures" / name)
    print(data.split_convention)
    for note in data.notes:
        print(f"note: {note}")
    for name, split in summary["splits"].items():
        print(f"{name:>5}: {split['rows']:>6} rows, per class {split['class_counts']}")
    duplicates = summary["duplicates"]
    print(f"duplicates: {duplicates['repeated_rows']} repeated rows in {duplicates['groups']} "
          f"groups, {duplicates['groups_across_splits']} across splits, "
          f"{duplicates['groups_with_conflicting_labels']} with conflicting labels")
    if data.skipped:
        print(f"skipped {len(data.skipped)} invalid rows (see data_report.json)")
    print(f"report written to {out}")
    return 0
