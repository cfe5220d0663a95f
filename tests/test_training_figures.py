"""Tests of lhc.training.figures.learning_curves on hand-written run folders (no training).

Each test writes a stage's ``history.csv`` and ``summary.json`` as the runner lays them out,
so the figures are checked against values written here, in seconds.
"""

from __future__ import annotations

import csv
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from lhc.training.figures import learning_curves  # noqa: E402
from lhc.training.runner import HISTORY_COLUMNS, SUMMARY_FILE  # noqa: E402


def write_stage(run_dir, stage, model, losses, val_losses, accuracies, val_accuracies,
                best_epoch=1):
    """A finished stage's folder: one history row per epoch, and the summary's best epoch."""
    folder = run_dir / "stages" / stage / model
    folder.mkdir(parents=True)
    with open(folder / "history.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        for epoch, values in enumerate(zip(losses, val_losses, accuracies, val_accuracies,
                                           strict=True), start=1):
            row = dict.fromkeys(HISTORY_COLUMNS, 0.0)
            row.update(epoch=epoch, loss=values[0], val_loss=values[1], accuracy=values[2],
                       val_accuracy=values[3])
            writer.writerow(row)
    (folder / SUMMARY_FILE).write_text(json.dumps({"best_epoch": best_epoch}))


def visible_ticks(axis) -> np.ndarray:
    low, high = axis.get_xlim()
    ticks = np.asarray(axis.get_xticks())
    return ticks[(ticks >= low) & (ticks <= high)]


def test_a_one_epoch_stage_is_drawn_as_labelled_points_on_an_integer_axis(tmp_path):
    write_stage(tmp_path, "stage2", "resnet34v2", [0.8612], [0.9876], [0.6834], [0.6612])
    fig = learning_curves(tmp_path, "stage2")
    fig.canvas.draw()
    for axis, values in zip(fig.axes[:2], ((0.8612, 0.9876), (0.6834, 0.6612)), strict=True):
        assert len(axis.lines) == 2  # training and validation, no best-epoch band
        for line, value in zip(axis.lines, values, strict=True):
            assert line.get_marker() == "o"
            assert line.get_linestyle() == "None"  # a point, not a curve
            assert list(line.get_xdata()) == [1]
            assert list(line.get_ydata()) == pytest.approx([value])
        labels = sorted(text.get_text() for text in axis.texts)
        assert labels == sorted(f"{value:.3f}" for value in values)
        np.testing.assert_array_equal(visible_ticks(axis), [1])
        assert axis.get_xlim() == pytest.approx((0.5, 1.5))
    plt.close(fig)


def test_many_epochs_are_curves_with_integer_epoch_ticks(tmp_path):
    epochs = np.arange(27)
    write_stage(tmp_path, "stage1", "resnet34v2", 1.8 * 0.975 ** epochs, 1.7 * 0.985 ** epochs,
                0.3 + 0.01 * epochs, 0.35 + 0.01 * epochs, best_epoch=27)
    fig = learning_curves(tmp_path, "stage1")
    fig.canvas.draw()
    for axis in fig.axes[:2]:
        ticks = visible_ticks(axis)
        assert len(ticks) >= 3
        np.testing.assert_array_equal(ticks, np.round(ticks))
        training, validation, band = axis.lines
        assert training.get_linestyle() == "--" and validation.get_linestyle() == "-"
        assert list(band.get_xdata()) == [27, 27]  # the restored best epoch
    assert not fig.axes[0].texts  # values are written only beside one-epoch points
    plt.close(fig)


def test_the_loss_axis_is_logarithmic_only_over_at_least_a_decade(tmp_path):
    # Stage 1 of a real run: 1.8 down to 0.9, half a decade.
    write_stage(tmp_path, "stage1", "resnet34v2", [1.8, 1.2, 0.9], [1.7, 1.3, 1.1],
                [0.3, 0.4, 0.5], [0.35, 0.45, 0.5])
    # The smoke profile's first validation loss is two decades above its training loss.
    write_stage(tmp_path, "stage3", "resnet34v2", [1.9, 1.7], [140.9, 12.0], [0.2, 0.3],
                [0.2, 0.25])
    narrow = learning_curves(tmp_path, "stage1")
    wide = learning_curves(tmp_path, "stage3")
    assert narrow.axes[0].get_yscale() == "linear"
    assert wide.axes[0].get_yscale() == "log"
    assert "log scale" in wide.axes[0].get_ylabel()
    wide.canvas.draw()
    labels = [label.get_text() for label in wide.axes[0].get_yticklabels() if label.get_text()]
    # Plain numbers (1, 2, 5, 10, ...), not powers of ten in mathtext.
    assert labels and all(label.replace(".", "").isdigit() for label in labels)
    assert {"2", "5", "10", "100"} <= set(labels)
    plt.close(narrow)
    plt.close(wide)


def test_two_one_epoch_models_write_their_values_apart(tmp_path):
    write_stage(tmp_path, "lhcc", "lhc_net", [0.72], [0.96], [0.70], [0.655])
    write_stage(tmp_path, "lhcc", "lhc_netc", [0.70], [0.95], [0.71], [0.66])
    fig = learning_curves(tmp_path, "lhcc")
    offsets = sorted({text.xyann[0] for text in fig.axes[0].texts})
    assert len(offsets) == 2  # one column of labels per model
    plt.close(fig)
