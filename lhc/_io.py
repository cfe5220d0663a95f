"""Atomic file writes: a reader never sees a half-written file under its final name.

Every writer in the workbench (checkpoints, caches, metrics, figures, reports) goes
through :func:`atomic_path`, which hands out a temporary name in the destination's
folder and renames it over the destination only when the block finishes without error.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; rename it over ``destination`` on success.

    The temporary file lives in the same folder so that the final ``os.replace`` is atomic
    on POSIX file systems. On error the temporary file is removed and the destination is
    left as it was. ``suffix`` defaults to the destination's own suffix, since some writers
    (``np.savez``, ``model.save``) pick their format from the file name.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    suffix = destination.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=f".tmp{suffix}",
                                    dir=destination.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    # mkstemp creates 0600; the final file gets the permissions an ordinary open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text(destination: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``destination``."""
    with atomic_path(destination) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(destination)


def write_bytes(destination: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``destination``."""
    with atomic_path(destination) as tmp:
        tmp.write_bytes(data)
    return Path(destination)


def write_json(destination: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Atomically write ``obj`` as JSON (keys sorted, so that files diff cleanly)."""
    return write_text(destination, json.dumps(obj, indent=indent, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays reach us from metrics; JSON has no type for them.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")
