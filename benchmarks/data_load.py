"""Load time of the full shared FER2013 CSV: lhc.data.load_fer2013 against a per-row loop.

Side by side in one process: the library's validated, vectorised reader (cold, then from its
``.npz`` cache) and the naive reader most scripts use (``csv`` module, one
``np.array(row.split())`` per row, no validation). Prints JSON with seconds and ratios.
The issue's budget for the library's cold load on this machine is 8 s.

Usage: python benchmarks/data_load.py [--path ../shared/fer2013/fer2013.csv.gz]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from lhc.data import load_fer2013

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "fer2013" / "fer2013.csv.gz"


def naive_load(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    images, labels = [], []
    with opener(path, "rt") as handle:
        for row in csv.DictReader(handle):
            images.append(np.array(row["pixels"].split(), dtype=np.uint8).reshape(48, 48))
            labels.append(int(row["emotion"]))
    return np.stack(images), np.array(labels)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=DEFAULT)
    args = parser.parse_args()
    if not args.path.exists():
        print(json.dumps({"skipped": f"{args.path} not found (the real data lives in ../shared)"}))
        return
    with tempfile.TemporaryDirectory() as cache_dir:
        cold, data = timed(load_fer2013, args.path, cache_dir=cache_dir)
        cached, _ = timed(load_fer2013, args.path, cache_dir=cache_dir)
    naive, (images, _) = timed(naive_load, args.path)
    rows = sum(len(split) for split in data.splits.values())
    assert rows == len(images), "both readers must read every row"
    print(json.dumps({
        "rows": rows,
        "seconds": {"load_fer2013_cold": round(cold, 2), "load_fer2013_cached": round(cached, 3),
                    "naive_per_row_loop": round(naive, 2)},
        "naive_over_library": round(naive / cold, 2),
        "budget_seconds": 8.0,
    }, indent=2))


if __name__ == "__main__":
    main()
