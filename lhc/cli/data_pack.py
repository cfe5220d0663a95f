"""``lhc data pack SOURCE OUT.lhcpack`` and ``lhc data unpack PACK OUT.csv[.gz]``.

The compact lossless pack the data travels in to a machine without network
(:mod:`lhc.data.pack`); ``load_fer2013`` (and so every ``--data``) reads a pack like the
source it was made from.
"""

from __future__ import annotations

import argparse

__all__ = ["add_cli"]


def add_cli(subparsers) -> None:
    """Add ``data`` with its subcommands ``pack`` and ``unpack`` to the ``lhc`` subparsers.

    Args:
        subparsers: what ``argparse.ArgumentParser.add_subparsers`` returned.
    """
    data = subparsers.add_parser(
        "data", help="pack FER2013 into one compact lossless file, or unpack it to a CSV",
        description="A data pack holds images, labels, splits and provenance losslessly in "
                    "about 63% of the raw pixel bytes; load_fer2013 (and so --data) reads it "
                    "like the source it was made from, with numpy alone.")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    pack = data_sub.add_parser("pack", help="write SOURCE as a lossless data pack OUT",
                               description="Read SOURCE (a fer2013.csv[.gz], per-split CSVs or "
                                           "image folders) with the validating reader and "
                                           "write it to OUT as a data pack.")
    pack.add_argument("source", help="a FER2013 source, as load_fer2013 reads it")
    pack.add_argument("out", help="the pack to write, e.g. fer2013.lhcpack")
    pack.set_defaults(func=_cmd_data_pack)
    unpack = data_sub.add_parser("unpack", help="write a data pack back as a Kaggle CSV",
                                 description="Write PACK as a Kaggle fer2013.csv (emotion,"
                                             "pixels,Usage) in source row order; .gz to "
                                             "compress it.")
    unpack.add_argument("pack", help="a data pack written by lhc data pack")
    unpack.add_argument("out", help="the CSV to write, OUT.csv or OUT.csv.gz")
    unpack.set_defaults(func=_cmd_data_unpack)


def _cmd_data_pack(args: argparse.Namespace) -> int:
    import time

    from lhc.data.pack import write_pack

    start = time.perf_counter()
    info = write_pack(args.source, args.out)
    print(f"packed {info.num_images} images from {args.source} into {info.path}: "
          f"{info.num_bytes:,} bytes ({info.num_bytes / info.raw_pixel_bytes:.1%} of the "
          f"{info.raw_pixel_bytes:,} raw pixel bytes) in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_data_unpack(args: argparse.Namespace) -> int:
    from lhc.data.pack import unpack_to_csv

    rows = unpack_to_csv(args.pack, args.out)
    print(f"wrote {rows} rows of {args.pack} to {args.out} (Kaggle fer2013.csv format)")
    return 0
