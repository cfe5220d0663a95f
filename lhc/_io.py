"""Atomic file writes: a reader never sees a half-written file under its final name.

Every writer in the workbench (checkpoints, caches, metrics, figures, reports) goes
through :func:`atomic_path`, which hands out a temporary name in the destination's
folder and renames it over the destination only when the block finishes without error.
A full disk surfaces as :class:`DiskFull`, naming the folder, whatever wrote the bytes.

:func:`read_json` is the matching reader: a damaged file is named with the line and column
(as an editor numbers them) where its JSON stops making sense.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class DiskFull(OSError):
    """No space left under a folder the workbench writes to.

    Attributes:
        folder: the folder that could not be written.
        needed: bytes the write needed (an estimate; None when unknown).
        free: bytes free there when the write was refused (None when unknown).
    """

    def __init__(self, folder: str | os.PathLike, needed: int | None = None,
                 free: int | None = None):
        self.folder, self.needed = Path(folder), needed
        self.free = shutil.disk_usage(self.folder).free if free is None and self.folder.exists() \
            else free
        wanted = f"about {_megabytes(needed)} needed, " if needed else ""
        have = f"{_megabytes(self.free)} free" if self.free is not None else "free space unknown"
        super().__init__(errno.ENOSPC, f"{self.folder}: no space left on the device ({wanted}"
                                       f"{have})")

    def __str__(self) -> str:
        return self.strerror


def _megabytes(count: int) -> str:
    return f"{count / 2**20:,.1f} MB"


def ensure_space(folder: str | os.PathLike, needed: int) -> None:
    """Raise :class:`DiskFull` before writing ``needed`` bytes under ``folder`` if they do not fit.

    Checking first matters for writers in C libraries (HDF5): one that meets a full disk
    mid-file can leave the process unable to exit cleanly.
    """
    folder = Path(folder)
    existing = next((parent for parent in (folder, *folder.parents) if parent.exists()), folder)
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise DiskFull(folder, needed, free)


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
        with naming_full_disks(destination.parent):
            yield tmp_path
            os.replace(tmp_path, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def naming_full_disks(folder: str | os.PathLike) -> Iterator[None]:
    """Raise an out-of-space error met in the block as :class:`DiskFull` naming ``folder``."""
    try:
        yield
    except DiskFull as full:
        if full.folder == Path(folder):
            raise
        raise DiskFull(folder, full.needed) from full  # the outer folder is the one to free
    except Exception as error:
        if _is_disk_full(error):
            raise DiskFull(folder) from error
        raise


def _is_disk_full(error: BaseException) -> bool:
    # HDF5 and NumPy wrap the OSError; its errno survives somewhere in the chain.
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


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


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file.

    Raises:
        ValueError: the file is not valid JSON; the message names the file, the line and the
            column (as an editor numbers them) and what the parser expected.
        FileNotFoundError: there is no such file.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}:{error.colno}: damaged JSON ({error.msg}); "
                         f"{len(text)} characters in all") from None


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
