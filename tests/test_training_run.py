"""End-to-end tests of lhc.training on the smoke profile (synthetic data, 48x48).

One full smoke run (stages 1-4 and LHC-NetC, ``conftest.smoke_training``) is shared by the
module; the other tests train
one stage each against it. Expected values come from the run's own files read back with
``csv``/``h5py`` and from the rules restated here, never from the runner's functions.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from conftest import h5_arrays, kill_after_first_checkpoint, tiny_profile

from lhc.cli.train import add_cli
from lhc.training import learning_curves, load_profile, resume, train

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
STAGE_MODELS = {"stage1": "resnet34v2", "stage2": "resnet34v2", "stage3": "resnet34v2",
                "stage4": "lhc_net", "lhcc": "lhc_netc"}
LHCC_GATE_INIT = [0.0, 0.0, 0.0, -1.0, -0.5]  # REFERENCE.md, LHC-NetC
# Per-replica BatchNorm statistics (Keras' BatchNormalization is not synchronised across
# replicas) make a mirrored run differ slightly from a one-device run on the same batches.
MIRRORED_LOSS_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def smoke_run(smoke_training):
    return smoke_training  # conftest.py: trained once per session, shared with test_workbench


def csv_history(run_dir: Path, stage: str, model: str) -> list[dict[str, float]]:
    """The history file's rows without the timing column (which differs run to run)."""
    with open(run_dir / "stages" / stage / model / "history.csv", newline="") as handle:
        return [{key: float(value) for key, value in row.items() if key != "seconds"}
                for row in csv.DictReader(handle)]


def best_row(rows: list[dict]) -> dict:
    """Keras' EarlyStopping on val_accuracy: the first epoch with the highest value."""
    return max(rows, key=lambda row: (row["val_accuracy"], -row["epoch"]))


def assert_same_weights(path_a: Path, path_b: Path) -> None:
    arrays_a, arrays_b = h5_arrays(path_a), h5_arrays(path_b)
    assert arrays_a.keys() == arrays_b.keys()
    for name, array in arrays_a.items():
        np.testing.assert_array_equal(array, arrays_b[name], err_msg=name)


def test_smoke_run_end_to_end(smoke_run):
    run_dir, metrics = smoke_run
    profile = load_profile("smoke")
    assert metrics["status"] == "complete"
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert load_profile(run_dir / "profile.yaml").to_dict() == profile.to_dict()
    assert metrics["data"]["counts"] == {"train": 240, "val": 30, "test": 30}
    for stage, model in STAGE_MODELS.items():
        folder = run_dir / "stages" / stage / model
        summary = metrics["stages"][stage][model]
        rows = csv_history(run_dir, stage, model)
        assert len(rows) == summary["epochs_run"] <= profile.stages[stage].max_epochs
        best = best_row(rows)
        assert summary["best_epoch"] == best["epoch"]
        assert summary["val_accuracy"] == pytest.approx(best["val_accuracy"], rel=1e-12)
        assert summary["train_loss"] == pytest.approx(best["loss"], rel=1e-12)
        assert 0.0 <= summary["test_accuracy"] <= 1.0
        assert (folder / "final.weights.h5").is_file()
        assert not (folder / "checkpoints").exists()  # per-epoch checkpoints end with the stage
        assert list((run_dir / "tensorboard" / f"{stage}_{model}").rglob("events.out.tfevents*"))
    backbone = h5_arrays(run_dir / "stages/stage3/resnet34v2/final.weights.h5")
    lhc_net = h5_arrays(run_dir / "stages/stage4/lhc_net/final.weights.h5")
    assert not any("lhc" in name for name in backbone)
    assert sum(name.startswith("layers/lhc") for name in lhc_net) > 0


def test_lhcc_trains_only_the_five_gates(smoke_run):
    run_dir, _ = smoke_run
    lhc_net = h5_arrays(run_dir / "stages/stage4/lhc_net/final.weights.h5")
    lhc_netc = h5_arrays(run_dir / "stages/lhcc/lhc_netc/final.weights.h5")
    for name, array in lhc_net.items():  # every LHC-Net weight, BatchNorm statistics included
        np.testing.assert_array_equal(array, lhc_netc[name], err_msg=name)
    gates = sorted((name for name in lhc_netc if name not in lhc_net), key=lambda name: (
        len(name), name))  # layers/lhc/..., layers/lhc_1/..., ... in module order
    values = [float(lhc_netc[name]) for name in gates]
    assert len(values) == 5
    assert not np.allclose(values, LHCC_GATE_INIT, rtol=0, atol=1e-9)
    np.testing.assert_allclose(values, LHCC_GATE_INIT, atol=0.05)  # a few Adam 1e-4 steps


def test_acceptance_is_recorded_from_the_losses(smoke_run):
    run_dir, metrics = smoke_run
    backbone_loss = best_row(csv_history(run_dir, "stage3", "resnet34v2"))["loss"]
    final_loss = best_row(csv_history(run_dir, "stage4", "lhc_net"))["loss"]
    record = metrics["acceptance"]
    assert record["backbone_train_loss"] == pytest.approx(backbone_loss, rel=1e-12)
    assert record["final_train_loss"] == pytest.approx(final_loss, rel=1e-12)
    assert record["kept"] == (final_loss <= 1.1 * backbone_loss)


def test_same_seed_gives_identical_metrics(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    again = tmp_path / "again"
    train("smoke", out=again, stages="1", verbose=0)
    assert csv_history(again, "stage1", "resnet34v2") == csv_history(run_dir, "stage1",
                                                                      "resnet34v2")
    assert_same_weights(again / "stages/stage1/resnet34v2/final.weights.h5",
                        run_dir / "stages/stage1/resnet34v2/final.weights.h5")


def test_resume_after_kill_reaches_the_same_weights(smoke_run, tmp_path):
    """kill -9 after stage 1's first epoch, resume, compare with the uninterrupted run.

    Stage 1 runs two epochs; the final weights are the best epoch's, which may be the first,
    so the resumed second epoch is also pinned by its losses, which depend on all its weights.
    """
    run_dir, _ = smoke_run
    killed = tmp_path / "killed"
    script = f"from lhc.training import train; train('smoke', out={str(killed)!r}, stages='1', " \
             "verbose=0)"
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_after_first_checkpoint(process, killed, timeout=180)

    metrics = resume(killed, verbose=0)
    assert metrics["status"] == "complete"
    assert csv_history(killed, "stage1", "resnet34v2") == csv_history(run_dir, "stage1",
                                                                       "resnet34v2")
    assert_same_weights(killed / "stages/stage1/resnet34v2/final.weights.h5",
                        run_dir / "stages/stage1/resnet34v2/final.weights.h5")


def test_divergence_guard_stops_and_records(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    # Stage 4 without LHC modules (the paper's set A) at an absurd learning rate.
    profile = load_profile("smoke").replace_stage("stage4", model="resnet34v2",
                                                  learning_rate=1e6)
    diverged = tmp_path / "diverged"
    metrics = train(profile, out=diverged, stages="4", start_from=run_dir, verbose=0)
    assert metrics["status"] == "diverged"
    assert (metrics["diverged"]["stage"], metrics["diverged"]["model"]) == ("stage4",
                                                                            "resnet34v2")
    assert metrics["acceptance"]["kept"] is False
    assert "diverged" in metrics["acceptance"]["reason"]
    assert json.loads((diverged / "metrics.json").read_text())["status"] == "diverged"
    stage_dir = diverged / "stages/stage4/resnet34v2"
    assert not (stage_dir / "summary.json").exists()
    assert not (stage_dir / "final.weights.h5").exists()
    # No checkpoint was written from the non-finite weights.
    assert not list(stage_dir.glob("checkpoints/epoch_*"))
    assert resume(diverged, verbose=0)["status"] == "diverged"  # nothing is retried


def test_peer_arms_start_at_the_backbones_predictions(smoke_run):
    """SE, CBAM and ECA start as the identity: stage 4 begins at the backbone's accuracy."""
    from lhc.data.pipeline import preprocess
    from lhc.training import load_run_data, load_trained_model
    from lhc.training.artifacts import load_run
    from lhc.training.stage import initialised_model

    run_dir, _ = smoke_run
    profile, state = load_run(run_dir)
    images = preprocess(load_run_data(run_dir).splits["val"].images[:16], profile.input_size)
    backbone = load_trained_model(run_dir, "stage3", "resnet34v2").predict(images, verbose=0)
    for model_name in ("se_net", "cbam_net", "eca_net"):
        model, origin = initialised_model(run_dir, profile, state, "stage4", model_name, 7)
        assert "copied by layer name" in origin
        np.testing.assert_allclose(model.predict(images, verbose=0), backbone, atol=1e-6,
                                   err_msg=model_name)


def test_standalone_trains_both_models_side_by_side(tmp_path):
    profile = tiny_profile().replace(mode="standalone").replace_stage("stage1", max_epochs=1)
    metrics = train(profile, out=tmp_path / "standalone", stages="1", verbose=0)
    assert metrics["status"] == "complete"
    assert set(metrics["comparison"]["stage1"]) == {"lhc_net", "resnet34v2"}
    for model in ("lhc_net", "resnet34v2"):
        assert len(csv_history(tmp_path / "standalone", "stage1", model)) == 1
        assert metrics["stages"]["stage1"][model]["initialised_from"].startswith("scratch")


def test_mirrored_strategy_on_two_cpu_devices(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    out = tmp_path / "mirrored"
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from lhc.training import load_profile, train
        import json
        metrics = train(load_profile("smoke").replace(strategy="mirrored"), out={str(out)!r},
                        stages="1", verbose=0)
        print("REPLICAS", len(tf.config.list_logical_devices("CPU")))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REPLICAS 2" in result.stdout
    assert json.loads((out / "metrics.json").read_text())["status"] == "complete"
    mirrored = csv_history(out, "stage1", "resnet34v2")
    single = csv_history(run_dir, "stage1", "resnet34v2")
    assert len(mirrored) == len(single)
    for row_mirrored, row_single in zip(mirrored, single, strict=True):
        assert row_mirrored["loss"] == pytest.approx(row_single["loss"],
                                                     rel=MIRRORED_LOSS_TOLERANCE)


def test_run_dir_of_another_profile_is_refused(smoke_run):
    run_dir, _ = smoke_run
    with pytest.raises(ValueError, match=r"another profile \(differs in \['seed'\]\)"):
        train("smoke", out=run_dir, seed=5)


def test_cli_resume_of_a_finished_run(smoke_run, capsys):
    run_dir, _ = smoke_run
    parser = argparse.ArgumentParser(prog="lhc")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", "--resume", str(run_dir), "--verbose", "0"])
    assert args.func(args) == 0
    output = capsys.readouterr().out
    assert "stage1 resnet34v2: already done" in output and "complete" in output


def test_learning_curves_figure(smoke_run, tmp_path):
    from lhc.plots import apply_style, save_figure

    run_dir, _ = smoke_run
    apply_style()
    fig = learning_curves(run_dir, "stage1")
    loss_axis, accuracy_axis = fig.axes[:2]
    rows = csv_history(run_dir, "stage1", "resnet34v2")
    training_loss = loss_axis.lines[0].get_ydata()
    np.testing.assert_allclose(training_loss, [row["loss"] for row in rows])
    validation_accuracy = accuracy_axis.lines[1].get_ydata()
    np.testing.assert_allclose(validation_accuracy, [row["val_accuracy"] for row in rows])
    written = save_figure(fig, tmp_path / "stage1")
    assert all(path.stat().st_size > 0 for path in written)


def test_trained_models_and_data_come_back_from_the_run(smoke_run, tmp_path):
    from lhc.training import (
        load_initial_lhc_weights,
        load_run_data,
        load_trained_model,
        train_global_arm,
    )

    run_dir, _ = smoke_run
    data = load_run_data(run_dir)
    assert len(data.splits["train"]) == 240  # the smoke profile's 300 rows, 80/10/10
    model = load_trained_model(run_dir, "4", "lhc_net")
    stored = h5_arrays(run_dir / "stages" / "stage4" / "lhc_net" / "final.weights.h5")
    loaded = {tuple(w.shape) for w in model.weights}
    assert {value.shape for value in stored.values()} <= loaded
    # The weights really are the stage's: the stored value kernel of lhc1 is among the model's.
    kernels = [np.asarray(w) for w in model.get_layer("lhc1").weights]
    assert any(any(np.array_equal(kernel, value) for value in stored.values()) for kernel in kernels)
    with pytest.raises(FileNotFoundError, match="finished here"):
        load_trained_model(run_dir, "stage4", "lhc_net_global")

    # Stage 4 kept its LHC modules' starting weights: one array per layer weight, and not the
    # trained values (an SGD epoch moved them).
    initial = load_initial_lhc_weights(run_dir)
    assert sorted(initial) == [f"lhc{index}" for index in range(1, 6)]
    assert all(not np.array_equal(a, b) for a, b in
               zip(initial["lhc1"][:1], model.get_layer("lhc1").get_weights()[:1], strict=True))
    assert [a.shape for a in initial["lhc3"]] == [tuple(w.shape) for w in
                                                  model.get_layer("lhc3").weights]

    # The global-heads comparison arm trains as stage 4 from the same backbone.
    arm_dir = train_global_arm(run_dir, verbose=0)
    assert arm_dir == run_dir / "global_arm"
    global_arm = load_trained_model(arm_dir, "stage4", "lhc_net_global")
    assert global_arm.get_layer("lhc1").head_layout == "global"
    summary = json.loads((arm_dir / "stages/stage4/lhc_net_global/summary.json").read_text())
    assert summary["initialised_from"].startswith(str(run_dir / "stages/stage3/resnet34v2"))


def test_stage_table_lists_each_stage_and_model(smoke_run):
    from lhc.training import stage_table

    _, metrics = smoke_run
    lines = stage_table(metrics, ("stage3", "stage4", "lhcc")).splitlines()
    assert lines[0].split()[:2] == ["stage", "model"]
    assert [line.split()[:2] for line in lines[1:]] == [["stage3", "resnet34v2"],
                                                        ["stage4", "lhc_net"], ["lhcc", "lhc_netc"]]
    row = metrics["stages"]["stage4"]["lhc_net"]
    assert lines[2].split()[5] == f"{row['train_loss']:.4f}"
