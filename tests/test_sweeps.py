"""``lhc sweep`` on both engines: in this process, and as Ray Tune trials on a local instance.

Both sweeps start from the session's smoke run (``conftest.smoke_training``) with two stage-4
epochs, arms A and SE on seed 1. The Ray sweep runs as a real ``lhc sweep --engine ray``
process on two CPUs, and one of its trials has its worker killed (SIGKILL, as a lost node
would) once its first stage-4 checkpoint is published. Ray retries it, the retry continues
the run directory from that checkpoint, and the sweep's results must equal the in-process
engine's bit for bit: same machine, same threads, and a resumed run equals an uninterrupted
one (``tests/test_faults.py``).
"""

from __future__ import annotations

import builtins
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import h5_arrays, history_rows, wait_for_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ARM_MODELS = {"A": "resnet34v2", "SE": "se_net"}
TIMEOUT = 900  # seconds for the whole Ray sweep on a slow machine
SCORES = ("best_epoch", "epochs_run", "train_loss", "val_loss", "val_accuracy", "test_loss",
          "test_accuracy")


@pytest.fixture(scope="module")
def two_epoch_profile(tmp_path_factory):
    """The smoke profile with two stage-4 epochs, so that a trial can die between them."""
    from lhc.training import load_profile

    path = tmp_path_factory.mktemp("sweep-profile") / "smoke-two-epochs.yaml"
    path.write_text(load_profile("smoke").replace_stage("stage4", max_epochs=2,
                                                        patience=2).to_yaml())
    return path


@pytest.fixture(scope="module")
def local_sweep(smoke_training, two_epoch_profile, tmp_path_factory):
    """The in-process engine's sweep: ``(folder, summary)``."""
    from lhc.training import sweep

    base, _ = smoke_training
    out = tmp_path_factory.mktemp("local-sweep") / "sweep"
    return out, sweep(two_epoch_profile, seeds="1", arms=["A", "SE"], base=base, out=out,
                      verbose=0)


def stage4(run_dir: Path, arm: str) -> Path:
    return run_dir / "stages" / "stage4" / ARM_MODELS[arm]


def test_sweep_writes_a_metrics_file_per_run(smoke_training, local_sweep):
    base, _ = smoke_training
    out, summary = local_sweep
    records = {arm: json.loads((out / "metrics" / f"{arm}_seed1.json").read_text())
               for arm in ARM_MODELS}
    for arm, model in ARM_MODELS.items():
        record = records[arm]
        assert (record["arm"], record["seed"], record["status"]) == (arm, 1, "complete")
        assert list(record["stages"]["stage4"]) == [model]
        assert record["stages"]["stage4"][model]["epochs_run"] == 2
        assert record["stages"]["stage3"]["resnet34v2"]["folder"].startswith(str(base))
        assert "kept" in record["acceptance"]
        assert summary["runs"][f"{arm}_seed1"]["status"] == "complete"
    assert json.loads((out / "sweep.json").read_text()) == summary
    assert summary["folder"] == str(out.resolve())

    # The peer table reads both arms back: the SE arm against A on seed 1.
    from lhc.evaluation import peer_table

    table = peer_table(out)
    accuracy = {arm: records[arm]["stages"]["stage4"][model]["test_accuracy"]
                for arm, model in ARM_MODELS.items()}
    assert table["accuracies"] == {"A": {1: accuracy["A"]}, "SE": {1: accuracy["SE"]}}
    (row_a, row_se) = table["rows"]
    assert (row_a["arm"], row_se["arm"]) == ("A", "SE")
    assert row_se["comparison"]["mean_difference"] == pytest.approx(accuracy["SE"] - accuracy["A"])
    # SE adds 2C^2/16 + C/16 + C + 1 per position over the backbone (C of the five maps).
    channels = (64, 64, 128, 256, 512)
    assert row_se["parameters"] - row_a["parameters"] == sum(
        2 * c * (c // 16) + c // 16 + c + 1 for c in channels)


def test_ray_sweep_equals_the_local_one_and_a_killed_trial_resumes(smoke_training,
                                                                   two_epoch_profile,
                                                                   local_sweep, tmp_path):
    pytest.importorskip("ray.tune", reason="the ray extra is not installed "
                                           "(pip install -e '.[ray]')")
    base, _ = smoke_training
    local, local_summary = local_sweep
    out = tmp_path / "ray"
    process = subprocess.Popen(
        [sys.executable, "-m", "lhc.cli", "sweep", "--profile", str(two_epoch_profile),
         "--seeds", "1", "--arms", "A,SE", "--base", str(base), "--out", str(out),
         "--engine", "ray", "--ray-num-cpus", "2", "--cpus-per-trial", "2",
         "--max-failures", "1", "--verbose", "0"],
        cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killed = kill_after_first_checkpoint(process, out / "runs" / "SE_seed1", "SE")
    output, _ = process.communicate(timeout=TIMEOUT)

    assert process.returncode == 0, output[-3000:]
    # The retry took over the killed worker's lock and continued from epoch 1's checkpoint.
    assert f"taking over the lock left by lhc train (process {killed}" in output, output[-3000:]
    assert "stage4 se_net: resuming after epoch 1 from " in output, output[-3000:]

    summary = json.loads((out / "sweep.json").read_text())
    assert summary == {**local_summary, "folder": str(out.resolve())}
    for arm, model in ARM_MODELS.items():
        key = f"{arm}_seed1"
        ray_metrics = json.loads((out / "metrics" / f"{key}.json").read_text())
        local_metrics = json.loads((local / "metrics" / f"{key}.json").read_text())
        assert ray_metrics["status"] == "complete"
        for field in SCORES:
            assert (ray_metrics["stages"]["stage4"][model][field] ==
                    local_metrics["stages"]["stage4"][model][field]), (key, field)
        assert history_rows(stage4(out / "runs" / key, arm)) == \
            history_rows(stage4(local / "runs" / key, arm))
        ray_weights = h5_arrays(stage4(out / "runs" / key, arm) / "final.weights.h5")
        local_weights = h5_arrays(stage4(local / "runs" / key, arm) / "final.weights.h5")
        assert ray_weights.keys() == local_weights.keys()
        for name, array in local_weights.items():
            np.testing.assert_array_equal(ray_weights[name], array, err_msg=f"{key}: {name}")

    from lhc.evaluation import peer_table

    assert peer_table(out)["table"] == peer_table(local)["table"]


def kill_after_first_checkpoint(process: subprocess.Popen, run_dir: Path, arm: str) -> int:
    """SIGKILL the Ray worker training ``run_dir`` once its stage 4's epoch 1 is published;
    the worker is the process its run lock names."""
    wait_for_checkpoint(process, stage4(run_dir, arm) / "checkpoints", epoch=1, timeout=TIMEOUT)
    pid = json.loads((run_dir / ".lock").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    return pid


def test_ray_engine_without_ray_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    from lhc.cli import main

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    monkeypatch.delitem(sys.modules, "ray.tune", raising=False)
    status = main(["sweep", "--profile", "smoke", "--seeds", "1", "--arms", "A",
                   "--out", str(tmp_path / "sweep"), "--engine", "ray"])
    assert status == 2
    assert capsys.readouterr().err.strip() == (
        "lhc sweep: error: the ray engine needs Ray Tune, which is not installed here: "
        "pip install -e '.[ray]'")
    assert not (tmp_path / "sweep").exists()  # nothing trained, not even the base


def test_ray_flags_need_the_ray_engine(capsys):
    from lhc.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["sweep", "--profile", "smoke", "--seeds", "1", "--gpus-per-trial", "1"])
    assert stop.value.code == 2
    assert "--gpus-per-trial: only with --engine ray" in capsys.readouterr().err
