"""Cache parsed FER2013 arrays as ``.npz``, keyed by a hash of the source content.

The key is the sha256 of a format version, the loader options and every source file (its
path relative to the data root, then its bytes), so a changed source, option or format
gives a new key and the old entry is simply never read again. Provenance and skipped-row
file names are stored relative to the data root, so a moved copy of the data hits the
cache and still names its own files.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lhc._io import atomic_path
from lhc.data.dataset import FER2013Data, Provenance, Skipped, Split

CACHE_FORMAT_VERSION = 1


def content_key(sources: Iterable[tuple[str, bytes]], options: Mapping[str, Any]) -> str:
    """sha256 hex digest of the cache format version, ``options`` and each (name, bytes)."""
    digest = hashlib.sha256(f"lhc.data cache v{CACHE_FORMAT_VERSION}\n".encode())
    digest.update(json.dumps(options, sort_keys=True).encode() + b"\n")
    for name, data in sources:
        # Lengths delimit the fields, so that no two different inputs hash the same stream.
        encoded = name.encode()
        digest.update(len(encoded).to_bytes(8, "little") + encoded)
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def cache_path(cache_dir: str | os.PathLike, source_name: str, key: str) -> Path:
    """The cache file of a source under ``key``: ``<cache_dir>/<source_name>-<key>.npz``."""
    return Path(cache_dir) / f"{source_name}-{key[:32]}.npz"


def save(path: Path, data: FER2013Data, root: Path) -> None:
    """Write ``data`` (before any carving) to ``path`` atomically."""
    arrays: dict[str, np.ndarray] = {}
    for name, split in data.splits.items():
        arrays.update({f"{name}.images": split.images, f"{name}.labels": split.labels,
                       f"{name}.file_index": split.provenance.file_index,
                       f"{name}.lines": split.provenance.lines})
        if split.distributions is not None:
            arrays[f"{name}.distributions"] = split.distributions
    meta = {
        "class_names": data.class_names, "split_convention": data.split_convention,
        "rows_read": data.rows_read, "excluded": data.excluded, "notes": data.notes,
        "num_resized": data.num_resized,
        "skipped": [(os.path.relpath(s.file, root), s.line, s.reason) for s in data.skipped],
        "files": {name: [os.path.relpath(file, root) for file in split.provenance.files]
                  for name, split in data.splits.items()},
    }
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def load(path: Path, root: Path, source: str) -> FER2013Data | None:
    """Read a cache entry written by :func:`save`; None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            splits = {}
            for name, files in meta["files"].items():
                distributions = (archive[f"{name}.distributions"]
                                 if f"{name}.distributions" in archive.files else None)
                provenance = Provenance(tuple(str(root / file) for file in files),
                                        archive[f"{name}.file_index"], archive[f"{name}.lines"])
                splits[name] = Split(archive[f"{name}.images"], archive[f"{name}.labels"],
                                     provenance, distributions)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    skipped = [Skipped(str(root / file), line, reason) for file, line, reason in meta["skipped"]]
    return FER2013Data(
        splits=splits, class_names=tuple(meta["class_names"]),
        split_convention=meta["split_convention"], source=source, rows_read=meta["rows_read"],
        skipped=skipped, excluded=meta["excluded"], notes=meta["notes"],
        num_resized=meta["num_resized"], cache_path=str(path), cache_hit=True)
