"""Training on JAX with TensorFlow out of reach: kill -9 and an exact resume; two devices and
two processes.

Each run is a subprocess whose import system refuses ``tensorflow`` (an import hook, as in an
environment installed with ``pip install -e '.[jax]'`` alone) and that leaves ``KERAS_BACKEND``
unset, so ``lhc`` must pick JAX by itself, and a run that still needed TensorFlow anywhere on
the training path fails here. The profile is ``conftest.tiny_profile`` (JAX on this CPU trains
ResNet34v2 about ten times slower than TensorFlow), stage 1 only, whose two epochs let one run
be killed after the first. All runs go on side by side (:func:`jax_runs`):

- the resumed run must end exactly where the uninterrupted one did: the same history and
  bit-identical weights, the JAX counterpart of
  ``test_training_run.py::test_resume_after_kill_reaches_the_same_weights``;
- ``keras.distribution.DataParallel`` over two virtual CPU devices, and two local processes
  joined by ``keras.distribution.initialize`` (``lhc train --coordinator``), must reach the
  one-device run's training metrics within :data:`DISTRIBUTED_LOSS_TOLERANCE`.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import socket
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
    sys.path.insert(0, tests)
    from conftest import tiny_profile

    if mode == "resume":
        metrics = resume(out, verbose=0)
    elif mode == "train":
        metrics = train(tiny_profile(), out=out, stages="1", verbose=0)
    elif mode == "mirrored":
        metrics = train(tiny_profile().replace(strategy="mirrored"), out=out, stages="1",
                        verbose=0)
    else:  # "process I of N at HOST:PORT": the lhc train command with the multi-host flags
        from lhc.cli import main

        process_id, num_processes, coordinator = mode.split(":", 2)
        profile_file = f"{out}.profile.yaml"
        with open(profile_file, "w") as handle:
            handle.write(tiny_profile().replace(strategy="multi_worker").to_yaml())
        assert main(["train", "--profile", profile_file, "--out", out, "--stages", "1",
                     "--verbose", "0", "--coordinator", coordinator,
                     "--num-processes", num_processes, "--process-id", process_id]) == 0
        metrics = json.load(open(f"{out}/metrics.json"))
    from lhc.export import require_tensorflow
    try:
        require_tensorflow("tflite")
        refusal = None
    except ValueError as error:
        refusal = str(error)
    print(json.dumps({"status": metrics["status"], "backend": keras.backend.backend(),
                      "tensorflow_imported": "tensorflow" in sys.modules, "tflite": refusal}))
""")
EXPECTED = {"status": "complete", "backend": "jax", "tensorflow_imported": False,
            "tflite": "export format 'tflite' needs TensorFlow, which is not installed here: "
                      "pip install -e '.[tf]' (the format keras needs no TensorFlow)"}
# Two devices (virtual, or one per process) compute the same global batches in another
# summation order: after two epochs the training loss moved by 3e-5 (relative) and no
# accuracy changed; 1e-3 leaves room for other CPUs. The validation loss is not compared: a
# model this small and this short-trained has BatchNorm statistics so unsettled that its
# epoch-2 validation loss went from 10.23 on one device to 10.70 on two.
DISTRIBUTED_LOSS_TOLERANCE = 1e-3
TINY_TRAIN_IMAGES = 64  # conftest.tiny_profile's training split: accuracy moves in 1/64 steps


def start(out: Path, mode: str = "train", devices: int = 1) -> subprocess.Popen:
    # No KERAS_BACKEND: with TensorFlow absent, importing lhc picks JAX (lhc.backend).
    env = {key: value for key, value in os.environ.items()
           if key != "KERAS_BACKEND" and not key.startswith("KERAS_DISTRIBUTION_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.Popen([sys.executable, "-c", RUN, str(out), mode, str(REPO / "tests")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> dict:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def jax_runs(tmp_path_factory):
    """Every JAX run of this module, started side by side: ``{name: run folder}``.

    ``whole``: the tiny profile's stage 1 on one device; ``killed``: the same, SIGKILLed after
    its first checkpoint and resumed; ``mirrored``: on two virtual CPU devices; ``process0``
    and ``process1``: two local processes training together through ``lhc train
    --coordinator 127.0.0.1:PORT --num-processes 2 --process-id I``, one device each.
    """
    root = tmp_path_factory.mktemp("jax")
    runs = {name: root / name for name in ("whole", "killed", "mirrored", "process0",
                                           "process1")}
    coordinator = f"127.0.0.1:{free_port()}"
    processes = {"whole": start(runs["whole"]), "killed": start(runs["killed"]),
                 "mirrored": start(runs["mirrored"], "mirrored", devices=2)}
    for index in range(2):
        processes[f"process{index}"] = start(runs[f"process{index}"],
                                             f"{index}:2:{coordinator}")
    kill_after_first_checkpoint(processes.pop("killed"), runs["killed"], timeout=500)
    processes["killed"] = start(runs["killed"], "resume")
    reports = {name: finish(process) for name, process in processes.items()}
    for name, report in reports.items():
        assert report == EXPECTED, name
    yield runs
    shutil.rmtree(root, ignore_errors=True)  # half a gigabyte of checkpoints and weights


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


def test_jax_trains_without_tensorflow_and_resumes_exactly_after_kill(jax_runs):
    whole, killed = jax_runs["whole"], jax_runs["killed"]
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



def test_two_devices_and_two_processes_reach_the_metrics_of_one_device(jax_runs):
    one_device = history(jax_runs["whole"])
    processes = [history(jax_runs[f"process{index}"]) for index in range(2)]
    assert processes[0] == processes[1], "each process logs the global batch's metrics"
    for name, run in (("mirrored", history(jax_runs["mirrored"])), ("processes", processes[0])):
        assert len(run) == len(one_device) == 2, name
        for epoch, (reference, distributed) in enumerate(zip(one_device, run, strict=True), 1):
            assert distributed["loss"] == pytest.approx(
                reference["loss"], rel=DISTRIBUTED_LOSS_TOLERANCE), f"{name} epoch {epoch}"
            assert abs(distributed["accuracy"] - reference["accuracy"]) <= (
                1 / TINY_TRAIN_IMAGES + 1e-9), f"{name} epoch {epoch}"
    summaries = {name: json.loads((jax_runs[name] / "stages/stage1/resnet34v2/summary.json")
                                  .read_text()) for name in ("whole", "mirrored", "process0")}
    assert [(summary["devices"], summary["processes"]) for summary in summaries.values()] == [
        (1, 1), (2, 1), (2, 2)]
    assert "images_left_out_per_epoch" not in summaries["mirrored"]  # 64/8/8 split evenly
    # Replicated weights: both processes end with the same model, bit for bit.
    final = [weights(jax_runs[f"process{index}"] / "stages/stage1/resnet34v2/final.weights.h5")
             for index in range(2)]
    for name, array in final[0].items():
        np.testing.assert_array_equal(array, final[1][name], err_msg=name)
