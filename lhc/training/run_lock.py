"""One writer per run folder: ``lhc train``, ``lhc run`` and ``lhc sweep`` take a lock on it.

Two processes training into one run directory overwrite each other's checkpoints. The lock is
the file ``.lock`` in the folder, held with ``fcntl.flock`` for as long as the writer runs and
holding the writer's process id, host, command and start time. The kernel releases a flock
when its process dies, however it dies, so:

- a second writer is refused at once, with a message naming the holder (:class:`RunLocked`);
- a lock file naming a holder whose lock is no longer held (the process was killed) is taken
  over, with a warning naming the process that left it;
- a folder the lock created, and left empty by a writer that failed before writing, is
  removed again.

The holder's child processes may write too: ``lhc run`` executes notebooks in Jupyter kernels
that call :func:`lhc.training.train` on the very folder it holds. The holder names the folders
it holds in the environment variable ``LHC_RUN_LOCKS``, which its children inherit; a child
whose ancestor holds a folder's lock proceeds without taking it. In one process the lock is
re-entrant (``sweep`` calls ``train`` inside its own lock).

Nothing here imports Keras: ``lhc run`` takes the lock without importing TensorFlow.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["LOCK_FILE", "RunLocked", "run_lock"]

LOCK_FILE = ".lock"
ENVIRONMENT = "LHC_RUN_LOCKS"  # os.pathsep-separated "<pid>=<folder>" held by ancestors

logger = logging.getLogger(__name__)
_held: dict[Path, int] = {}  # folder -> depth of nested run_lock calls in this process


class RunLocked(RuntimeError):
    """Another process is writing the run folder.

    Attributes:
        folder: the run folder.
        holder: what the lock file says of its holder (pid, host, command, started).
    """

    def __init__(self, folder: Path, holder: dict):
        self.folder, self.holder = folder, holder
        super().__init__(
            f"{folder}: in use by {holder.get('command', 'another process')} (process "
            f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since "
            f"{holder.get('started', '?')}); one writer per run folder: wait for it to finish "
            f"or stop it (lock file {folder / LOCK_FILE})")


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold ``folder``'s writer lock for the block (module docstring).

    Args:
        folder: the run (or sweep) folder; created if missing.
        command: what is writing, for the refusal message (e.g. ``"lhc train"``).

    Raises:
        RunLocked: another process (not an ancestor) holds the lock.
    """
    folder = Path(folder).resolve()
    if _held.get(folder) or _ancestor_holds(folder):
        _held[folder] = _held.get(folder, 0) + 1
        try:
            yield
        finally:
            _held[folder] -= 1
        return
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(folder, _read_holder(path)) from None
        left = _read_holder(path)
        if left:
            logger.warning("%s: taking over the lock left by %s (process %s on %s, since %s), "
                           "which no longer runs", folder, left.get("command", "?"),
                           left.get("pid", "?"), left.get("host", "?"), left.get("started", "?"))
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                  "started": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(holder) + "\n").encode(), 0)
        os.fsync(descriptor)
        _held[folder] = 1
        previous = os.environ.get(ENVIRONMENT)
        os.environ[ENVIRONMENT] = os.pathsep.join(
            filter(None, [previous, f"{os.getpid()}={folder}"]))
        try:
            yield
        finally:
            _held.pop(folder, None)
            if previous is None:
                os.environ.pop(ENVIRONMENT, None)
            else:
                os.environ[ENVIRONMENT] = previous
            os.ftruncate(descriptor, 0)  # empty: released, not left behind
    finally:
        os.close(descriptor)  # releases the flock
        if created and {entry.name for entry in folder.iterdir()} <= {LOCK_FILE}:
            # A writer refused or failing before it wrote anything leaves no folder behind.
            with contextlib.suppress(OSError):
                path.unlink()
                folder.rmdir()


def _read_holder(path: Path) -> dict:
    try:
        text = path.read_text()
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {"command": "an unknown writer (unreadable lock file)"}


def _ancestor_holds(folder: Path) -> bool:
    """True when a process up our parent chain took ``folder``'s lock and still holds it."""
    entries = [entry.partition("=") for entry in os.environ.get(ENVIRONMENT, "").split(os.pathsep)
               if entry]
    holders = {int(pid) for pid, _, held in entries if pid.isdigit() and Path(held) == folder}
    if not holders or _read_holder(folder / LOCK_FILE).get("pid") not in holders:
        return False
    return bool(holders & _ancestors())


def _ancestors() -> set[int]:
    """Process ids of this process's parent chain (Linux /proc; else just the parent)."""
    found, pid = set(), os.getppid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: ppid
    return found
