"""Training on JAX with TensorFlow out of reach: a tiny profile, kill -9 and an exact resume.

Each run is a subprocess whose import system refuses ``tensorflow`` (an import hook, as in an
environment installed with ``pip install -e '.[jax]'`` alone) and that leaves ``KERAS_BACKEND``
unset, so ``lhc`` must pick JAX by itself, and a run that still needed TensorFlow anywhere on
the training path fails here. The profile is ``conftest.tiny_profile`` (JAX on this CPU trains
ResNet34v2 about ten times slower than TensorFlow), stage 1 only, whose two epochs let one run
be killed after the first.
Both runs go on side by side, and the resumed one must end exactly where the uninterrupted
one did: the same history and bit-identical weights, the JAX counterpart of
``test_training_run.py::test_resume_after_kill_reaches_the_same_weights``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import kill_after_first_checkpoint

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                       reason="JAX is not installed (pip install -e '.[jax]')"),
]

REPO = Path(__file__).resolve().parents[1]
RUN = textwrap.dedent("""
    import importlib.abc, json, sys

    class NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "tensorflow":
                raise ImportError(f"{name}: this test runs without TensorFlow")

    sys.meta_path.insert(0, NoTensorFlow())
    from lhc.training import resume, train  # first: importing lhc chooses the backend
    import keras

    out, mode, tests = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "resume":
        metrics = resume(out, verbose=0)
    else:
        sys.path.insert(0, tests)
        from conftest import tiny_profile

        metrics = train(tiny_profile(), out=out, stages="1", verbose=0)
    from lhc.export import require_tensorflow
    try:
        require_tensorflow("tflite")
        refusal = None
    except ValueError as error:
        refusal = str(error)
    print(json.dumps({"status": metrics["status"], "backend": keras.backend.backend(),
                      "tensorflow_imported": "tensorflow" in sys.modules, "tflite": refusal}))
""")


def start(out: Path, mode: str = "train") -> subprocess.Popen:
    # No KERAS_BACKEND: with TensorFlow absent, importing lhc picks JAX (lhc.backend).
    env = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.Popen([sys.executable, "-c", RUN, str(out), mode, str(REPO / "tests")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> dict:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def history(run_dir: Path) -> list[dict[str, float]]:
    """stage 1's history without its timing column."""
    with open(run_dir / "stages/stage1/resnet34v2/history.csv", newline="") as handle:
        return [{key: float(value) for key, value in row.items() if key != "seconds"}
                for row in csv.DictReader(handle)]


def weights(path: Path) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                          if isinstance(item, h5py.Dataset) else None)
    return arrays


def test_jax_trains_without_tensorflow_and_resumes_exactly_after_kill(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    uninterrupted = start(whole)
    victim = start(killed)
    kill_after_first_checkpoint(victim, killed, timeout=400)

    expected = {"status": "complete", "backend": "jax", "tensorflow_imported": False,
                "tflite": "export format 'tflite' needs TensorFlow, which is not installed here: "
                          "pip install -e '.[tf]' (the format keras needs no TensorFlow)"}
    assert finish(uninterrupted) == expected
    assert finish(start(killed, "resume")) == expected

    summary = json.loads((whole / "stages/stage1/resnet34v2/summary.json").read_text())
    assert summary["backend"] == "jax" and summary["epochs_run"] == 2
    assert not (whole / "tensorboard").exists(), "TensorBoard needs TensorFlow"
    assert history(killed) == history(whole)
    final_whole = weights(whole / "stages/stage1/resnet34v2/final.weights.h5")
    final_killed = weights(killed / "stages/stage1/resnet34v2/final.weights.h5")
    assert final_whole.keys() == final_killed.keys()
    for name, array in final_whole.items():
        np.testing.assert_array_equal(array, final_killed[name], err_msg=name)
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (whole, killed)]
    assert metrics[0]["stages"]["stage1"]["resnet34v2"]["backend"] == "jax"
    for record in metrics:  # everything but where each run lives and how long it took
        record.pop("run"), record["data"].pop("source")
        for model in record["stages"]["stage1"].values():
            model.pop("folder"), model.pop("wall_seconds")
    assert metrics[0] == metrics[1]

