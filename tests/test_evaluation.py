"""lhc.evaluation and ``lhc evaluate``: metrics on hand-computed cases, the seed table on hand
numbers (and the paper's own row), the literature table, and the command on a run directory
and on a .keras file.
"""

from __future__ import annotations

import argparse
import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from lhc import evaluation  # noqa: E402
from lhc.cli.evaluate import add_cli  # noqa: E402
from lhc.data import FER2013_CLASSES  # noqa: E402
from lhc.evaluation import TTA_CHOICES, run_evaluation  # noqa: E402

# --- metrics from probabilities --------------------------------------------------------------

# Six images, three classes. Predictions (first arg-max): 0, 1, 0 (a tie of 0.5 and 0.5), 2, 0,
# 1 (0.3 twice is not the top score: no tie).
PROBABILITIES = np.array([
    [0.7, 0.2, 0.1],
    [0.1, 0.8, 0.1],
    [0.5, 0.5, 0.0],
    [0.2, 0.3, 0.5],
    [0.6, 0.3, 0.1],
    [0.3, 0.4, 0.3],
])
LABELS = np.array([0, 1, 1, 2, 2, 0])


def test_metrics_on_a_hand_computed_case():
    metrics = evaluation.metrics_from_probabilities(PROBABILITIES, LABELS, ["a", "b", "c"])
    assert metrics["num_images"] == 6
    assert metrics["accuracy"] == pytest.approx(3 / 6)
    assert metrics["tied_top_scores"] == 1
    expected_loss = -(math.log(0.7) + math.log(0.8) + math.log(0.5) + math.log(0.5)
                      + math.log(0.1) + math.log(0.3)) / 6
    assert metrics["loss"] == pytest.approx(expected_loss)
    # Rows true, columns predicted: a -> a, b; b -> b, a; c -> c, a.
    assert metrics["confusion_matrix"] == [[1, 1, 0], [1, 1, 0], [1, 0, 1]]
    np.testing.assert_allclose(metrics["confusion_matrix_normalised"],
                               [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5]])
    per_class = {row["class"]: row for row in metrics["per_class"]}
    # a: predicted 3 times, 1 right; b: predicted twice, 1 right; c: predicted once, right.
    assert per_class["a"]["precision"] == pytest.approx(1 / 3)
    assert per_class["b"]["precision"] == pytest.approx(1 / 2)
    assert per_class["c"]["precision"] == pytest.approx(1.0)
    assert [per_class[name]["recall"] for name in "abc"] == pytest.approx([0.5, 0.5, 0.5])
    # F1 = 2PR / (P + R): a (1/3, 1/2) -> 2/5; b -> 1/2; c (1, 1/2) -> 2/3.
    assert [per_class[name]["f1"] for name in "abc"] == pytest.approx([0.4, 0.5, 2 / 3])
    assert metrics["macro_f1"] == pytest.approx((0.4 + 0.5 + 2 / 3) / 3)
    assert [per_class[name]["support"] for name in "abc"] == [2, 2, 2]
    assert [per_class[name]["predicted"] for name in "abc"] == [3, 2, 1]
    json.dumps(metrics)  # JSON-ready


def test_absent_and_never_predicted_classes_score_zero():
    # Labels 0, 0, 1 predicted as 0, 1, 1: class c has no image and is never predicted. The
    # true class of the last row has probability 0: clipped to 1e-7 in the loss.
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [1.0, 0.0, 0.0]])[[0, 1, 1]]
    probabilities[2] = [0.0, 1.0, 0.0]
    labels = np.array([0, 0, 1])
    metrics = evaluation.metrics_from_probabilities(probabilities, labels, ["a", "b", "c"])
    per_class = {row["class"]: row for row in metrics["per_class"]}
    assert (per_class["a"]["precision"], per_class["a"]["recall"]) == (1.0, 0.5)
    assert (per_class["b"]["precision"], per_class["b"]["recall"]) == (0.5, 1.0)
    assert (per_class["c"]["precision"], per_class["c"]["recall"], per_class["c"]["f1"]) \
        == (0.0, 0.0, 0.0)
    assert metrics["confusion_matrix_normalised"][2] == [0.0, 0.0, 0.0]
    expected_loss = -(math.log(0.9) + math.log(0.2) + math.log(1 - 1e-7)) / 3
    assert metrics["loss"] == pytest.approx(expected_loss)
    clipped = evaluation.metrics_from_probabilities([[1.0, 0.0]], [1], ["a", "b"])
    assert clipped["loss"] == pytest.approx(-math.log(1e-7))


def test_every_tied_row_is_counted():
    probabilities = [[0.25, 0.25, 0.25, 0.25], [0.4, 0.4, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4],
                     [0.1, 0.45, 0.0, 0.45]]
    metrics = evaluation.metrics_from_probabilities(probabilities, [3, 1, 3, 3], list("abcd"))
    assert metrics["tied_top_scores"] == 3
    # Ties go to the first arg-max: predictions 0, 0, 3, 1 -> only the third is right.
    assert metrics["accuracy"] == pytest.approx(1 / 4)


@pytest.mark.parametrize(("probabilities", "labels", "message"), [
    (np.ones((2, 3)) / 3, [0, 1, 2], "labels: expected shape"),
    (np.ones((2, 2)) / 2, [0, 1], "probabilities: expected shape"),
    (np.ones((2, 3)) / 3, [0, 3], "labels: expected integers in"),
    (np.ones((2, 3)) / 3, [0.0, 1.0], "labels: expected integers in"),
])
def test_metrics_reject_mismatched_input(probabilities, labels, message):
    with pytest.raises(ValueError, match=message):
        evaluation.metrics_from_probabilities(probabilities, np.asarray(labels), ["a", "b", "c"])


# --- the seed table ---------------------------------------------------------------------------

def test_top_share_means_on_hand_numbers():
    accuracies = [0.70, 0.74, 0.71, 0.73, 0.69, 0.72, 0.68, 0.75, 0.66, 0.67]  # N = 10
    # Top 40%: ceil(4) = 4 best: .75 .74 .73 .72; Top 25%: ceil(2.5) = 3 best: .75 .74 .73.
    assert evaluation.top_share_mean(accuracies, 40) == pytest.approx(0.735)
    assert evaluation.top_share_mean(accuracies, 40, without_best=True) == pytest.approx(0.73)
    assert evaluation.top_share_mean(accuracies, 25) == pytest.approx(0.74)
    assert evaluation.top_share_mean(accuracies, 25, without_best=True) == pytest.approx(0.735)
    assert evaluation.top_share_mean([0.6], 25) == pytest.approx(0.6)
    assert evaluation.top_share_mean([0.6], 25, without_best=True) is None
    assert evaluation.top_share_mean([], 40) is None
    with pytest.raises(ValueError, match="percent"):
        evaluation.top_share_mean(accuracies, 0)


def test_eight_runs_give_the_papers_resnet_row():
    # Eight runs consistent with the paper's ResNet34v2 row (module docstring): the best four
    # are 72.81, 72.69, 72.64, 72.62; four more below them.
    accuracies = [72.81, 72.69, 72.64, 72.62, 72.40, 72.31, 72.20, 71.95]
    row = [evaluation.top_share_mean(accuracies, percent, without_best)
           for _, percent, without_best in evaluation.SEED_COLUMNS]
    assert [round(value, 2) for value in row] == [72.69, 72.65, 72.75, 72.69]


def write_run_metrics(sweep_dir, arm, seed, status="complete", kept=True, **accuracies):
    stages = {}
    for key, accuracy in accuracies.items():
        stage, model = key.split("__")
        stages.setdefault(stage, {})[model] = {"test_accuracy": accuracy, "val_accuracy": 0.5}
    metrics = {"arm": arm, "seed": seed, "status": status, "stages": stages,
               "acceptance": {"kept": kept, "reason": "kept" if kept else "loss too high"}}
    path = sweep_dir / "metrics" / f"{arm}_seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2))


def test_seed_table_from_a_sweep_folder(tmp_path):
    write_run_metrics(tmp_path, "A", 1, stage4__resnet34v2=0.70)
    write_run_metrics(tmp_path, "A", 2, stage4__resnet34v2=0.72)
    write_run_metrics(tmp_path, "A", 3, kept=False, stage4__resnet34v2=0.80)  # rejected
    write_run_metrics(tmp_path, "B", 1, stage4__lhc_net=0.73)
    write_run_metrics(tmp_path, "B", 2, status="diverged")
    write_run_metrics(tmp_path, "B", 3, stage4__lhc_net=0.71)
    write_run_metrics(tmp_path, "B", 4, stage4__lhc_net=0.75)
    # Arm C reads LHC-NetC's accuracy, not the LHC-Net it started from.
    write_run_metrics(tmp_path, "C", 1, stage4__lhc_net=0.70, lhcc__lhc_netc=0.74)

    runs = evaluation.read_sweep_runs(tmp_path)
    assert [(run["arm"], run["seed"], run["kept"]) for run in runs] == [
        ("A", 1, True), ("A", 2, True), ("A", 3, False), ("B", 1, True), ("B", 2, False),
        ("B", 3, True), ("B", 4, True), ("C", 1, True)]
    assert runs[4]["reason"] == "run diverged"

    rows = {row["arm"]: row for row in evaluation.seed_table(tmp_path)}
    assert [rows[arm]["model"] for arm in "ABC"] == ["ResNet34v2", "LHC-Net", "LHC-NetC"]
    # A: kept .72, .70 (the rejected .80 is out): top 40% = ceil(0.8) = 1 run, top 25% = 1.
    assert (rows["A"]["runs"], rows["A"]["kept"]) == (3, 2)
    assert rows["A"]["top40"] == pytest.approx(0.72)
    assert rows["A"]["top40_without_best"] is None
    assert rows["A"]["top25"] == pytest.approx(0.72)
    assert (rows["A"]["best"], rows["A"]["best_seed"]) == (0.72, 2)
    # B: kept .75, .73, .71: top 40% = ceil(1.2) = 2 runs, top 25% = ceil(0.75) = 1.
    assert (rows["B"]["runs"], rows["B"]["kept"]) == (4, 3)
    assert rows["B"]["top40"] == pytest.approx(0.74)
    assert rows["B"]["top40_without_best"] == pytest.approx(0.73)
    assert (rows["B"]["top40_runs"], rows["B"]["top40_without_best_runs"]) == (2, 1)
    assert rows["B"]["top25"] == pytest.approx(0.75)
    assert rows["B"]["top25_without_best"] is None
    assert (rows["B"]["best"], rows["B"]["best_seed"]) == (0.75, 4)
    assert rows["C"]["best"] == pytest.approx(0.74)


def test_sweep_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="lhc sweep"):
        evaluation.read_sweep_runs(tmp_path)
    (tmp_path / "metrics").mkdir()
    broken = tmp_path / "metrics" / "A_seed1.json"
    broken.write_text('{\n  "arm": "A",\n  "seed": 1,\n}\n')
    with pytest.raises(ValueError, match=r"A_seed1.json, line 4: expected a JSON metrics file"):
        evaluation.read_sweep_runs(tmp_path)
    broken.write_text(json.dumps({"arm": "D", "seed": 1, "status": "complete", "stages": {}}))
    with pytest.raises(ValueError, match=r"A_seed1.json: arm: expected one of A, B, C"):
        evaluation.read_sweep_runs(tmp_path)
    broken.write_text(json.dumps({"arm": "A", "seed": 1, "stages": {}}))
    with pytest.raises(ValueError, match=r"A_seed1.json: missing key 'status'"):
        evaluation.read_sweep_runs(tmp_path)


# --- the literature table ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_lhc_model():
    from lhc.layers import LHC

    inputs = keras.Input((8, 8, 4))
    x = LHC(num_heads=2, head_dim=5, pool_size=3, kernel_size=3, name="lhc1")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def test_measured_rows_are_counted_and_inserted_in_order(one_lhc_model):
    # REFERENCE.md: n (H W / n d + d) + (C C + C) + (s s C C + C)
    #   = 2 (32 * 5 + 5) + (16 + 4) + (9 * 16 + 4) = 498; the Dense adds 4 * 3 + 3 = 15.
    assert evaluation.parameter_counts(one_lhc_model) == (513, 498)
    row = evaluation.measured_row("tiny", one_lhc_model, 0.73, tta="flip",
                                  test_split="carved from train")
    assert row["params_millions"] == pytest.approx(513e-6)
    assert row["attention_percent"] == pytest.approx(100 * 498 / 513)
    assert (row["tta"], row["source"], row["test_split"]) == \
        ("yes (flip)", "measured here", "carved from train")

    tie = evaluation.measured_row("tie", one_lhc_model, 0.7339, tta="none", test_split="x")
    table = evaluation.literature_table([tie, row])
    assert len(table) == len(evaluation.PAPER_LITERATURE) + 2 == 28
    accuracies = [entry["accuracy"] for entry in table]
    assert accuracies == sorted(accuracies)
    names = [entry["model"] for entry in table]
    # 73.00 sits between the paper's ResNet34v2 (72.81) and BAMRN50 (73.14).
    assert names[names.index("tiny") - 1: names.index("tiny") + 2] == \
        ["ResNet34v2", "tiny", "BAMRN50"]
    assert table[names.index("tie")]["tta"] == "no"
    quoted = [entry for entry in table if entry["source"] == "quoted"]
    assert all(entry["test_split"] == "PrivateTest" for entry in quoted)
    assert [entry["accuracy"] for entry in quoted][-1] == 74.42  # the paper's LHC-Net with TTA
    markdown = evaluation.format_table(table, {"model": "Model", "accuracy": "Accuracy",
                                               "params_millions": "Params (M)"})
    assert markdown.splitlines()[0] == "| Model | Accuracy | Params (M) |"
    assert "| BoW Repr. | 67.48 | - |" in markdown


def test_paper_literature_is_in_the_papers_ascending_order():
    accuracies = [row[2] for row in evaluation.PAPER_LITERATURE]
    assert accuracies == sorted(accuracies)
    assert len(accuracies) == 26


# --- evaluate() and the command ---------------------------------------------------------------

def brightness_model(image_size: int, num_classes: int = 2) -> keras.Model:
    """Class 0 for images brighter than 128, class 1 for darker: logits +-0.02 (mean - 128);
    any further classes get logit -100."""
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(num_classes, activation="softmax")
    outputs = dense(x)
    kernel = np.zeros((3, num_classes))
    kernel[:, :2] = np.array([0.02, -0.02]) / 3
    bias = np.full(num_classes, -100.0)
    bias[:2] = [-2.56, 2.56]
    dense.set_weights([kernel, bias])
    return keras.Model(inputs, outputs)


def test_evaluate_with_and_without_tta():
    levels = np.array([200, 220, 40, 60], dtype=np.uint8)
    images = np.broadcast_to(levels[:, None, None], (4, 48, 48)).copy()
    labels = np.array([0, 1, 1, 1])  # the second is wrong: 3 of 4 right
    model = brightness_model(32)
    plain = evaluation.evaluate(model, images, labels, ["bright", "dark"], image_size=32)
    assert plain["accuracy"] == pytest.approx(0.75)
    assert plain["with_tta"] is None and plain["tta"]["name"] == "none"
    flipped = evaluation.evaluate(model, images, labels, ["bright", "dark"], image_size=32,
                                  tta="reference", batch_size=3, max_batch=100)
    # Uniform images look the same in every view: the same scores, with 60 views.
    assert flipped["accuracy"] == pytest.approx(0.75)
    assert len(flipped["tta"]["views"]) == 60
    assert flipped["with_tta"]["loss"] == pytest.approx(flipped["without_tta"]["loss"], abs=1e-5)
    assert flipped["without_tta"]["confusion_matrix"] == [[1, 0], [1, 2]]
    # Logits +-0.02 (level - 128): the true class's -log p is log(1 + e^(-0.04 |level - 128|))
    # when right, log(1 + e^(0.04 |level - 128|)) when wrong (220, labelled dark).
    expected_loss = np.mean([math.log1p(math.exp(-0.04 * abs(level - 128.0)))
                             for level in (200, 40, 60)] + [math.log1p(math.exp(0.04 * 92))])
    assert plain["without_tta"]["loss"] == pytest.approx(expected_loss, rel=1e-4)


def test_tta_choices_are_the_named_protocols():
    from lhc.tta import PROTOCOLS

    assert TTA_CHOICES == tuple(PROTOCOLS)


def parse(*argv):
    parser = argparse.ArgumentParser(prog="lhc")
    add_cli(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A smoke-profile run directory with a seeded stage-4 LHC-Net (no training: the command
    reads the run's profile, data and weights, which is what is tested here)."""
    from lhc.models import build_lhc_net
    from lhc.training import load_profile, runner

    profile = load_profile("smoke")
    run = tmp_path_factory.mktemp("evaluate") / "run"
    folder = run / "stages" / "stage4" / "lhc_net"
    folder.mkdir(parents=True)
    (run / runner.PROFILE_FILE).write_text(profile.to_yaml())
    (run / runner.RUN_STATE).write_text(json.dumps(
        {"data_path": None, "stages": ["stage4"], "start_from": None, "diverged": None}))
    (folder / runner.SUMMARY_FILE).write_text("{}")
    keras.utils.set_random_seed(5)
    model = build_lhc_net(profile.input_size_shape, len(FER2013_CLASSES),
                          blocks=profile.resolved_blocks())
    model.save_weights(folder / runner.FINAL_WEIGHTS)
    return run


def test_command_on_a_run_directory(run_dir, tmp_path, capsys):
    import matplotlib.pyplot as plt

    from lhc.training import load_run_data, load_trained_model

    open_figures = set(plt.get_fignums())
    args = parse("evaluate", str(run_dir), "--tta", "flip", "--out", str(tmp_path / "out"))
    assert args.func(args) == 0
    assert set(plt.get_fignums()) == open_figures, "the saved figures stay open"
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["accuracy"] == metrics["with_tta"]["accuracy"]
    assert metrics["input_size"] == 48  # from the smoke profile, not typed
    assert (metrics["split"], metrics["test_split"]) == ("test", "PrivateTest")
    assert metrics["tta"]["name"] == "flip"
    assert metrics["without_tta"]["num_images"] == 30  # the smoke data's PrivateTest rows
    for name in ("evaluate_confusion_matrix", "evaluate_per_class"):
        for suffix in (".png", ".svg"):
            assert (tmp_path / "out" / "figures" / f"{name}{suffix}").is_file()
    assert "with TTA (flip, 2 views)" in capsys.readouterr().out

    # The plain accuracy and the flip scores, recomputed here from the images directly.
    test = load_run_data(run_dir).splits["test"]
    model = load_trained_model(run_dir)
    images = tf.image.resize(test.images[..., None].astype("float32"), (48, 48))
    images = np.repeat(images.numpy(), 3, axis=-1)
    plain = model.predict(images, verbose=0)
    flip = (plain + model.predict(images[:, :, ::-1].copy(), verbose=0)) / 2
    assert metrics["without_tta"]["accuracy"] == pytest.approx(
        np.mean(plain.argmax(1) == test.labels))
    assert metrics["with_tta"]["accuracy"] == pytest.approx(np.mean(flip.argmax(1) == test.labels))
    assert metrics["model"]["lhc_params"] == sum(
        layer.count_params() for layer in model.layers if "lhc" in layer.name)


def test_command_default_out_and_val_split(run_dir):
    metrics = run_evaluation(run_dir, split="val")
    assert metrics["out"] == str(run_dir / "evaluation" / "stage4-lhc_net-val-tta_none")
    assert (run_dir / "evaluation" / "stage4-lhc_net-val-tta_none" / "metrics.json").is_file()
    assert metrics["test_split"] == "PublicTest"
    assert metrics["with_tta"] is None


def test_command_on_a_keras_file_and_its_errors(tmp_path):
    model_path = tmp_path / "bright.keras"
    brightness_model(40, len(FER2013_CLASSES)).save(model_path)
    # A Kaggle CSV without PrivateTest: three Training rows, two PublicTest rows (both Angry;
    # the darker one is predicted Disgust).
    rows = [(0, 210, "Training"), (1, 30, "Training"), (0, 230, "Training"),
            (0, 190, "PublicTest"), (0, 70, "PublicTest")]
    csv_path = tmp_path / "fer2013.csv"
    csv_path.write_text("emotion,pixels,Usage\n" + "".join(
        f"{label},{' '.join([str(level)] * 2304)},{usage}\n" for label, level, usage in rows))

    metrics = run_evaluation(model_path, data=csv_path, split="val", tta="paper")
    assert metrics["out"] == str(tmp_path / "bright-evaluation" / "val-tta_paper")
    assert metrics["input_size"] == 40  # the model's input shape
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["with_tta"]["confusion_matrix"][0][:2] == [1, 1]
    assert metrics["model"]["lhc_params"] == 0

    with pytest.raises(ValueError, match="pass --data"):
        run_evaluation(model_path)
    with pytest.raises(ValueError, match="no test split .*train, val"):
        run_evaluation(model_path, data=csv_path)
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        run_evaluation(tmp_path / "missing")


def test_lhc_command_line_runs_evaluate(run_dir, tmp_path, capsys):
    from lhc.cli import main

    assert main(["evaluate", str(run_dir), "--split", "val", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["split"] == "val"
    assert main(["evaluate", str(run_dir), "--stage", "lhcc"]) == 2  # not trained in this run
    assert "no finished lhcc/lhc_netc" in capsys.readouterr().err
