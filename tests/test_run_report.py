"""The HTML report of a run (lhc.run_report, ``lhc report``), on a run directory written here by hand."""

from __future__ import annotations

import argparse
import base64
import html as html_module
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from lhc.cli.report import add_cli
from lhc.run_report import FACE_FIGURES, build_report, shows_faces

PROFILE_YAML = "name: smoke\ninput_size: 48\nseed: 3\n"
# name -> PNG size; three of them show faces
FIGURES = {"data_class_distribution": (300, 200), "data_samples_per_class": (240, 400),
           "data_augmentation_stage1": (200, 120), "learning_curves_stage1": (450, 150),
           "attention_overlay_lhc1_head0": (210, 210), "ablation_heads_kept": (330, 180),
           "mystery_plot": (150, 150)}
FACES = {"data_samples_per_class", "data_augmentation_stage1", "attention_overlay_lhc1_head0"}


def make_run(run_dir: Path) -> Path:
    """A run directory as the notebook sequence leaves it, with known values."""
    (run_dir / "figures").mkdir(parents=True)
    for index, (name, size) in enumerate(FIGURES.items()):
        Image.new("RGB", size, (index * 30, 100, 200)).save(run_dir / "figures" / f"{name}.png")
        (run_dir / "figures" / f"{name}.svg").write_text(f"<svg><title>{name}</title></svg>")
    (run_dir / "profile.yaml").write_text(PROFILE_YAML)
    stage = {"epochs_run": 2, "stopped_by": "max_epochs", "best_epoch": 1, "train_loss": 1.93771,
             "val_accuracy": 0.2333333, "test_accuracy": 0.2666667, "params": 27606224,
             "trainable_params": 27590858, "wall_seconds": 14.8}
    metrics = {"profile": "smoke", "input_size": 48, "mode": "modular", "precision": "float32",
               "seed": 3, "status": "complete",
               "data": {"source": "runs/x/data/synthetic_n300_seed0.csv.gz",
                        "split_convention": "Training -> train, PublicTest -> val, test carved",
                        "test_is_carved": True, "counts": {"test": 30, "train": 240, "val": 30},
                        "notes": ["test split carved from Training (10%)"]},
               "stages": {"lhcc": {"lhc_netc": {**stage, "val_accuracy": 0.1}},
                          "stage1": {"resnet34v2": stage}},
               "acceptance": {"rule": "final training loss <= 1.1 x backbone's", "kept": True,
                              "reason": "1.8688 <= 2.0057"}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    report = {"split_convention": "Training -> train", "test_is_carved": True, "notes": [],
              "skipped_rows": [{"line": 7, "reason": "bad pixels"}],
              "splits": {"test": {"rows": 5, "class_counts": {"Angry": 2, "Happy": 3},
                                  "pixel_mean": 121.4, "pixel_std": 53.1, "blank_images": 0},
                         "train": {"rows": 11, "class_counts": {"Angry": 4, "Happy": 7},
                                   "pixel_mean": 120.5, "pixel_std": 55.5, "blank_images": 1}},
              "duplicates": {"repeated_rows": 1532, "groups": 1273, "groups_across_splits": 270,
                             "groups_with_conflicting_labels": 47}}
    (run_dir / "data_report.json").write_text(json.dumps(report))
    # as notebook 04 writes it (lhc.evaluation), with values chosen here
    without = {"accuracy": 0.7339, "loss": 0.81, "macro_f1": 0.7, "tied_top_scores": 0,
               "confusion_matrix": [[3, 1], [0, 4]],
               "per_class": [{"class": "Angry", "precision": 0.75, "recall": 1.0}]}
    evaluation = {"split": "test", "test_split": "carved from train", "input_size": 48,
                  "tta": {"name": "flip", "divisor": "weight_sum", "divisor_value": 2.0,
                          "views": [{"flip": False, "weight": 1}, {"flip": True, "weight": 1}]},
                  "models": {"stage4/lhc_net": {"without_tta": without, "with_tta": {
                      "accuracy": 0.7442, "loss": 0.79, "macro_f1": 0.71, "tied_top_scores": 2}},
                      "stage3/resnet34v2": {"without_tta": {"accuracy": 0.7281}, "with_tta": None}},
                  "seed_table": None,
                  "literature_table": [{"accuracy": 73.39, "attention_percent": 14.8,
                                        "model": "LHC-Net", "params_millions": 32.4,
                                        "reference": "paper", "source": "quoted",
                                        "test_split": "PrivateTest", "tta": "no"}]}
    (run_dir / "evaluation.json").write_text(json.dumps(evaluation))
    return run_dir


def embedded_images(html: str) -> dict[str, bytes]:
    return {alt: base64.b64decode(data) for alt, data in
            re.findall(r"<img alt='([^']+)' width='\d+' src='data:image/png;base64,([^']+)'", html)}


def text_of(html: str) -> str:
    return html_module.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def test_report_embeds_every_figure_and_copies_png_and_svg(tmp_path):
    run_dir = make_run(tmp_path / "runs" / "my-run")
    report = build_report(run_dir, tmp_path / "report")

    html = report.html_path.read_text()
    assert report.html_path == tmp_path / "report" / "report.html"
    assert report.size_bytes == len(html.encode())
    images = embedded_images(html)
    assert set(images) == set(FIGURES) == set(report.figures)
    for name in FIGURES:
        png = run_dir / "figures" / f"{name}.png"
        assert images[name] == png.read_bytes()
        for suffix in (".png", ".svg"):
            copied = tmp_path / "report" / "figures" / f"{name}{suffix}"
            assert copied.read_bytes() == (run_dir / "figures" / f"{name}{suffix}").read_bytes()
    # shown at the size it was saved at 150 dpi, in CSS pixels (96 per inch)
    assert "<img alt='learning_curves_stage1' width='288'" in html
    assert report.left_out == ()
    # every figure in a section named for what it shows; unknown prefixes last
    sections = report.sections
    assert sections.index("Data") < sections.index("Training") < sections.index("Ablations") \
        < sections.index("Attention maps") < sections.index("Other figures")


def test_no_images_leaves_out_every_face_even_from_an_earlier_build(tmp_path):
    run_dir = make_run(tmp_path / "run")
    out = tmp_path / "report"
    build_report(run_dir, out, images=True)
    assert (out / "figures" / "data_samples_per_class.png").exists()

    report = build_report(run_dir, out, images=False)

    html = report.html_path.read_text()
    assert set(report.left_out) == FACES
    assert set(embedded_images(html)) == set(FIGURES) - FACES
    assert {path.name for path in (out / "figures").iterdir()} == {
        f"{name}{suffix}" for name in set(FIGURES) - FACES for suffix in (".png", ".svg")}
    assert sorted(path.name for path in out.iterdir()) == ["figures", "report.html"]
    assert "--no-images" in html


def test_faces_are_named_in_one_list():
    assert FACE_FIGURES == ("data_samples_per_class", "data_augmentation_", "attention_overlay_",
                            "evaluate_sample_predictions_attention")
    assert shows_faces("evaluate_sample_predictions_attention")
    assert shows_faces("attention_overlay_lhc3_head2")
    assert not shows_faces("attention_weights_lhc1_head0")
    assert not shows_faces("data_class_distribution")


def test_report_states_profile_data_training_evaluation(tmp_path):
    run_dir = make_run(tmp_path / "run")
    html = build_report(run_dir, tmp_path / "report").html_path.read_text()
    text = text_of(html)

    assert PROFILE_YAML.replace("\n", " ").strip() in text
    assert "source runs/x/data/synthetic_n300_seed0.csv.gz" in text
    assert "split convention Training -> train, PublicTest -> val, test carved" in text
    assert "test split carved from train yes" in text
    assert "rows per split train 240, val 30, test 30" in text
    assert "test split carved from Training (10%)" in text
    # data report: splits in train/val/test order, class counts, duplicates, skipped rows
    assert "train 11 4 7 120.5000 55.5000 1" in text
    assert text.index("train 11") < text.index("test 5")
    assert "groups across splits 270" in text and "rows skipped as invalid 1" in text
    # training table in the protocol's order, rounded to 4 decimals
    assert "stage1 resnet34v2 2 max_epochs 1 1.9377 0.2333 0.2667 27,606,224 27,590,858 14.8" in text
    assert text.index("stage1 resnet34v2") < text.index("lhcc lhc_netc")
    assert "kept ; 1.8688 <= 2.0057" in text
    # evaluation.json: split and protocol, accuracy without and with TTA per model in the
    # protocol's order, the literature table in the paper's column order, matrices as tables
    assert "test split carved from train" in text and "TTA protocol flip: 2 views, divisor 2.0" in text
    assert "stage3/resnet34v2 0.7281 – – – – – – –" in text
    assert "stage4/lhc_net 0.7339 0.7442 0.8100 0.7900 0.7000 0.7100 0 2" in text
    assert text.index("stage3/resnet34v2 0.7281") < text.index("stage4/lhc_net 0.7339")
    assert ("Model Ref. Accuracy (%) TTA Params (M) Att (%) Source Test split "
            "LHC-Net paper 73.3900 no 32.4000 14.8000 quoted PrivateTest") in text
    assert "Seed table" not in text
    assert "confusion matrix 3 1 0 4" in text and "Angry 0.7500 1.0000" in text

def test_attention_peers_table_of_notebook_09(tmp_path):
    run_dir = make_run(tmp_path / "run")
    table = ("| Arm | Seeds | Mean [95% CI] | Diff. vs A [95% CI] | p |\n|---|---|---|---|---|\n"
             "| A | 8 | 66.10 [65.80, 66.40] | - | - |\n"
             "| B | 8 | 66.50 [66.20, 66.80] | +0.40 [+0.10, +0.70] | 0.016 (exact) |")
    (run_dir / "attention_peers.json").write_text(json.dumps({"sweep_dir": "runs/sweep-cpu",
                                                              "table": table, "rows": []}))
    report = build_report(run_dir, tmp_path / "report")
    text = text_of(report.html_path.read_text())

    assert "Attention peers under one protocol" in report.sections
    assert "Sweep runs/sweep-cpu : every arm is stage 4 from one backbone on the same seeds" in text
    assert ("Arm Seeds Mean [95% CI] Diff. vs A [95% CI] p A 8 66.10 [65.80, 66.40] - - "
            "B 8 66.50 [66.20, 66.80] +0.40 [+0.10, +0.70] 0.016 (exact)") in text


def test_environment_is_the_recorded_one_when_lhc_run_recorded_it(tmp_path):
    run_dir = make_run(tmp_path / "run")
    environment = {"python": "3.11.0", "packages": {"tensorflow": "9.9.9"}, "platform": "TestOS",
                   "cpu": "Imaginary CPU 9000", "cpu_cores": 64, "memory_gib": 512.0,
                   "gpus": ["Some GPU"]}
    (run_dir / "workbench.json").write_text(json.dumps({
        "started": "2026-01-01T00:00:00+00:00", "environment": environment,
        "notebooks": [{"notebook": "01_data", "status": "done", "seconds": 11.46},
                      {"notebook": "09_report", "status": "running"}]}))

    text = text_of(build_report(run_dir, tmp_path / "report").html_path.read_text())

    assert "recorded by lhc run when the run started (2026-01-01T00:00:00+00:00)" in text
    assert "tensorflow 9.9.9" in text and "CPU Imaginary CPU 9000" in text
    assert "CPU cores 64" in text and "memory 512.0 GiB" in text and "GPUs Some GPU" in text
    assert "01_data done 11.5" in text and "09_report" not in text


def test_environment_falls_back_to_this_machine(tmp_path):
    run_dir = make_run(tmp_path / "run")
    text = text_of(build_report(run_dir, tmp_path / "report").html_path.read_text())
    assert "of the machine that built this report" in text
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next(line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                     if line.startswith("model name"))
        assert f"CPU {model}" in text


def test_notebook_outputs_text_and_tables_never_their_images(tmp_path):
    run_dir = make_run(tmp_path / "run")
    notebook = {"cells": [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]},
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "parameters\n"}]},
        {"cell_type": "code", "metadata": {}, "outputs": [
            {"output_type": "stream", "name": "stdout", "text": ["mean |r| 0.28 < 1\n"]},
            {"output_type": "stream", "name": "stderr", "text": "a warning\n"},
            {"output_type": "stream", "name": "stdout", "text": "5/5 - 2s/step\n"},
            {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo=",
                                                     "text/plain": "<Figure>"}},
            {"output_type": "execute_result", "data": {
                "text/html": "<table><tr><td>lhc1</td><td>0.324</td></tr></table>"}}]},
        {"cell_type": "markdown", "metadata": {}, "source": "# words"}]}
    (run_dir / "notebooks").mkdir()
    (run_dir / "notebooks" / "05b_heads.ipynb").write_text(json.dumps(notebook))
    (run_dir / "notebooks" / "09_report.ipynb").write_text(json.dumps(notebook))

    html = build_report(run_dir, tmp_path / "report").html_path.read_text()

    assert html.count("<summary>05b_heads</summary>") == 1
    assert "09_report" not in html
    assert "<pre>mean |r| 0.28 &lt; 1\n5/5 - 2s/step\n</pre>" in html  # one block per cell
    assert "<td>lhc1</td><td>0.324</td>" in html
    assert "a warning" not in html and "parameters\n" not in html
    assert "iVBORw0KGgo=" not in html


def test_missing_run_and_broken_json_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: no such run directory"):
        build_report(tmp_path / "nowhere", tmp_path / "report")
    run_dir = make_run(tmp_path / "run")
    with pytest.raises(ValueError, match="a folder of its own"):
        build_report(run_dir, run_dir)
    assert (run_dir / "figures" / "data_samples_per_class.png").exists()
    build_report(run_dir, tmp_path / "report")
    (run_dir / "metrics.json").write_text('{\n  "profile": "smoke",\n  oops\n}')
    with pytest.raises(ValueError, match=r"metrics.json, line 3: not valid JSON"):
        build_report(run_dir, tmp_path / "report", images=False)
    # the earlier report is left whole
    assert (tmp_path / "report" / "figures" / "data_samples_per_class.png").exists()
    assert "alt='data_samples_per_class'" in (tmp_path / "report" / "report.html").read_text()


def test_default_out_is_reports_run_name(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path / "runs" / "fer2013-cpu")
    monkeypatch.chdir(tmp_path)
    report = build_report("runs/fer2013-cpu")
    assert report.html_path == Path("reports") / "fer2013-cpu" / "report.html"
    assert (tmp_path / "reports" / "fer2013-cpu" / "report.html").is_file()
    assert run_dir.is_dir()


def test_lhc_report_command(tmp_path, capsys):
    run_dir = make_run(tmp_path / "run")
    parser = argparse.ArgumentParser(prog="lhc")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(run_dir), "--out", str(tmp_path / "r"), "--no-images"])

    assert args.func(args) == 0

    printed = capsys.readouterr().out
    assert f"report: {tmp_path / 'r' / 'report.html'} (" in printed
    assert f"figures: {len(FIGURES) - len(FACES)} (PNG and SVG in {tmp_path / 'r' / 'figures'})" \
        in printed
    assert "left out (they show faces): " in printed
