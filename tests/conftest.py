"""Fixtures shared across test modules."""

from __future__ import annotations

import os

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
