"""Fixtures shared across test modules."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
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


# The photo tests (test_predict, test_faults): scikit-image's astronaut (Eileen Collins, one
# frontal face) and a small classifier; 64, not 48, so that the pipeline's resize does real work.
PHOTO_MODEL_INPUT_SIZE = 64


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data as skimage_data  # a test dependency

    return skimage_data.astronaut()  # RGB uint8 (512, 512, 3)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small seeded classifier of 64x64x3 images in [0, 255], saved as .keras."""
    import keras

    from lhc.data import FER2013_CLASSES

    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((PHOTO_MODEL_INPUT_SIZE, PHOTO_MODEL_INPUT_SIZE, 3)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(8, 5, strides=2, activation="tanh"),
        keras.layers.Flatten(),
        keras.layers.Dense(len(FER2013_CLASSES), activation="softmax"),
    ])
    path = tmp_path_factory.mktemp("model") / "small.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def predictor(model_file):
    from lhc.predict import Predictor

    return Predictor(model_file)


def skin_mask(rgb):
    """Skin-coloured pixels, the uniform-daylight rule of Peer et al. (2003)."""
    red, green, blue = (rgb[..., channel].astype(int) for channel in range(3))
    spread = rgb.max(axis=-1).astype(int) - rgb.min(axis=-1)
    return ((red > 95) & (green > 40) & (blue > 20) & (spread > 15)
            & (abs(red - green) > 15) & (red > green) & (red > blue))


def h5_arrays(path: Path) -> dict:
    """Every dataset of an h5 file (weights, checkpoints) by its path, as numpy arrays."""
    import h5py

    arrays = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                          if isinstance(item, h5py.Dataset) else None)
    return arrays


def write_notebook(path: Path, parameters: str, *cells: str) -> Path:
    """A python3 notebook with a ``parameters`` cell and the given code cells."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    notebook = new_notebook(
        cells=[new_code_cell(parameters, metadata={"tags": ["parameters"]}),
               *(new_code_cell(source) for source in cells)],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}})
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


def randomise_batch_norms(model, seed=0):
    """Non-trivial BatchNorm statistics, so that a missed weight shows in the outputs.

    ResNet34v2's first BatchNorm (``bn_data``) normalises raw [0, 255] pixels, so its
    statistics are drawn at that scale.
    """
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            values = []
            for weight in layer.weights:
                shape = tuple(weight.shape)
                if weight.name == "moving_mean":
                    values.append(rng.uniform(100, 150, shape) if layer.name == "bn_data"
                                  else rng.uniform(-0.2, 0.2, shape))
                elif weight.name == "moving_variance":
                    values.append(rng.uniform(3000, 5000, shape) if layer.name == "bn_data"
                                  else rng.uniform(0.5, 1.5, shape))
                elif weight.name == "gamma":
                    values.append(rng.uniform(0.5, 1.5, shape))
                else:
                    values.append(rng.uniform(-0.2, 0.2, shape))
            layer.set_weights(values)


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


def wait_for_checkpoint(process: subprocess.Popen, checkpoints: Path, epoch: int,
                        timeout: float) -> None:
    """Return once the index ``checkpoints/latest.json`` names ``epoch`` or later; fail, with
    the end of the process's output, if the process ends or ``timeout`` seconds pass first."""
    pointer = checkpoints / "latest.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if json.loads(pointer.read_text())["epoch"] >= epoch:
                return
        except (OSError, ValueError, KeyError):
            pass  # not written yet, or being replaced
        time.sleep(0.02)
    process.kill()
    stdout, stderr = process.communicate()
    pytest.fail(f"no checkpoint of epoch {epoch} in {checkpoints}: "
                f"{((stdout or '') + (stderr or ''))[-3000:]}")


def history_rows(stage_dir: Path) -> list[list[str]]:
    """A stage's history.csv without its seconds column (wall time differs between runs)."""
    return [line.split(",")[:-1] for line in (stage_dir / "history.csv").read_text().splitlines()]


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
# collection order. The files that take minutes go first, longest first, so that the two
# workers finish close together; the session's smoke training is trained once, by the first
# file that needs it, and the others wait for it.
LONG_FILES = ("test_training_run.py", "test_notebooks_nbval.py", "test_workbench.py",
              "test_sweeps.py", "test_training_jax.py", "test_faults.py")


# --- disk: the suite's run folders (ResNet34v2 weights, checkpoints) add up to gigabytes, and
# machines differ in free space. A passing test's tmp_path is removed when it ends, so that
# what is on disk at once is the shared runs and the tests in progress; a failing test's is
# kept for inspection. The header says how much space the session started with.

_CALL_REPORT = pytest.StashKey()


def pytest_report_header(config):
    free = shutil.disk_usage(tempfile.gettempdir()).free
    return f"temporary folders: {tempfile.gettempdir()}, {free / 2**30:.1f} GiB free"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.stash[_CALL_REPORT] = report
    return report


@pytest.fixture(autouse=True)
def _remove_tmp_path_of_a_passing_test(request):
    yield
    report = request.node.stash.get(_CALL_REPORT, None)
    tmp_path = getattr(request.node, "funcargs", {}).get("tmp_path")
    if tmp_path is not None and report is not None and report.passed:
        shutil.rmtree(tmp_path, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    rank = {name: position for position, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable
