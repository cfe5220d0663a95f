"""Fixtures shared across test modules."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def smoke_training(tmp_path_factory):
    """One full smoke run (stages 1-4 and LHC-NetC), trained once per session: ``(dir, metrics)``.

    Tests read it or copy it, and may add beside it (``train_global_arm`` writes
    ``global_arm/``); none may change what the training wrote. Under pytest-xdist the workers
    share it: the first to need it trains it under a file lock in their common temporary
    folder, and the others wait for it and read its ``metrics.json``.
    """
    from lhc.training import train

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # every worker's basetemp lies in one folder of the session
    run_dir = shared / "smoke-training" / "run"
    with open(shared / "smoke-training.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
        if metrics is not None and metrics["status"] == "complete":
            return run_dir, metrics
        return run_dir, train("smoke", out=run_dir, verbose=0)


def tiny_profile(name: str = "tiny"):
    """The smoke profile shrunk to 80 images at 32x32 (64 training, 8 validation, 8 test), stage
    1 in batches of 16, so that every batch splits evenly over two devices.

    For tests of the training machinery (resume, side-by-side models, backends), not of what a
    model learns: two such stage-1 epochs take seconds where the smoke profile takes a minute.
    """
    import dataclasses

    from lhc.training import load_profile

    smoke = load_profile("smoke")
    profile = smoke.replace(name=name, input_size=32, data={**dataclasses.asdict(smoke.data),
                                                            "n": 80})
    return profile.replace_stage("stage1", batch_size=16)


def kill_after_first_checkpoint(process: subprocess.Popen, run_dir: Path, timeout: float) -> None:
    """SIGKILL ``process`` as soon as stage 1 of ``run_dir`` has its first checkpoint.

    Then asserts that the kill came after exactly one epoch and before the stage finished.
    """
    pointer = run_dir / "stages/stage1/resnet34v2/checkpoints/latest.json"
    deadline = time.monotonic() + timeout
    while not pointer.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert pointer.exists(), "the run ended or timed out before its first checkpoint"
    assert json.loads(pointer.read_text())["epoch"] == 1
    assert not (run_dir / "stages/stage1/resnet34v2/summary.json").exists()


# Under pytest-xdist (make test: two workers, ``--dist loadfile --no-loadscope-reorder``) each
# test file runs whole on one worker, so module fixtures are built once, and files go out in
# collection order. The files that take minutes go first, the two that use the session's smoke
# training first of all, so that one worker gets both of them (and trains once) while the
# other takes the next two, and both finish close together.
LONG_FILES = ("test_training_run.py", "test_notebooks_nbval.py", "test_workbench.py",
              "test_training_jax.py", "test_faults.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: position for position, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable
