"""Fixtures shared across test modules."""

from __future__ import annotations

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
    ``global_arm/``); none may change what the training wrote.
    """
    from lhc.training import train

    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    return run_dir, train("smoke", out=run_dir, verbose=0)


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
