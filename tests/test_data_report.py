"""The data report: counts, pixel statistics, blanks and exact duplicates, and its figures."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from lhc.data.report import (  # noqa: E402
    class_distribution_figure,
    data_report,
    duplicates_figure,
    pixel_statistics_figure,
    sample_grid,
)

CLASS_NAMES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
SHARED_CSV = Path(__file__).resolve().parents[2] / "shared" / "fer2013" / "fer2013.csv.gz"


def make_data(splits: dict[str, tuple[list[np.ndarray], list[int]]]):
    """A reader-like result from hand-made images and labels."""
    return SimpleNamespace(
        splits={name: SimpleNamespace(images=np.stack(images).astype(np.uint8),
                                      labels=np.array(labels, dtype=np.int64))
                for name, (images, labels) in splits.items()},
        class_names=CLASS_NAMES, split_convention="hand-made", test_is_carved=False,
        notes=["a note"])


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    a, b, c, d, e = (rng.integers(1, 256, (48, 48)) for _ in range(5))
    blank = np.zeros((48, 48))
    near_a = a.copy()
    near_a[10, 20] = a[10, 20] - 1  # one grey level off: not an exact duplicate
    return make_data({
        "train": ([a, b, a, blank, c, b], [0, 1, 0, 3, 2, 1]),
        "val": ([a, d, blank], [0, 4, 5]),
        "test": ([e, d, d, near_a], [6, 4, 4, 0]),
    })


def test_counts_and_blanks(tiny):
    report = data_report(tiny)
    assert {name: stats["rows"] for name, stats in report["splits"].items()} == {
        "train": 6, "val": 3, "test": 4}
    assert report["splits"]["train"]["class_counts"] == {
        "Angry": 2, "Disgust": 2, "Fear": 1, "Happy": 1, "Sad": 0, "Surprise": 0, "Neutral": 0}
    assert report["splits"]["test"]["class_counts"]["Sad"] == 2
    assert [report["splits"][name]["blank_images"] for name in ("train", "val", "test")] == [
        1, 1, 0]
    assert report["class_names"] == list(CLASS_NAMES)
    assert report["split_convention"] == "hand-made" and report["notes"] == ["a note"]
    assert report["test_is_carved"] is False
    json.dumps(report)  # plain JSON types only


def test_duplicates_counted_by_hand(tiny):
    # Rows in split order: train a b a 0 c b | val a d 0 | test e d d a'.
    # 13 rows, 7 distinct images (a b 0 c d e a') -> 6 rows repeat an earlier image.
    # Groups of >1 row: a (train x2, val), b (train x2), 0 (train, val: labels 3 and 5),
    # d (val, test x2) -> 4 groups; 3 cross splits (a, 0: train+val; d: val+test);
    # only the blank group carries two labels.
    duplicates = data_report(tiny)["duplicates"]
    assert duplicates["repeated_rows"] == 6
    assert duplicates["groups"] == 4
    assert duplicates["groups_across_splits"] == 3
    assert duplicates["groups_by_splits"] == {"train+val": 2, "val+test": 1}
    assert duplicates["groups_with_conflicting_labels"] == 1
    assert duplicates["within_split"] == {
        "train": {"repeated_rows": 2, "groups": 2},
        "val": {"repeated_rows": 0, "groups": 0},
        "test": {"repeated_rows": 1, "groups": 1},
    }
    # train: a, a, 0; val: a, d, 0; test: d, d.
    assert duplicates["rows_also_in_other_splits"] == {"train": 3, "val": 3, "test": 2}


def test_no_duplicates_in_distinct_images():
    rng = np.random.default_rng(1)
    images = list(rng.integers(0, 256, (20, 48, 48)))
    duplicates = data_report(make_data({"train": (images, [0] * 20)}))["duplicates"]
    assert duplicates["repeated_rows"] == duplicates["groups"] == 0
    assert duplicates["groups_across_splits"] == 0 and duplicates["groups_by_splits"] == {}


def test_pixel_statistics_match_numpy():
    rng = np.random.default_rng(2)
    train, val = rng.integers(0, 256, (30, 48, 48)), rng.integers(60, 200, (7, 48, 48))
    report = data_report(make_data({"train": (list(train), [0] * 30),
                                    "val": (list(val), [1] * 7)}))
    for name, images in (("train", train), ("val", val)):
        stats = report["splits"][name]
        assert stats["pixel_mean"] == pytest.approx(np.mean(images, dtype=np.float64), rel=1e-12)
        assert stats["pixel_std"] == pytest.approx(np.std(images, dtype=np.float64), rel=1e-12)


def test_class_distribution_figure_has_one_bar_per_class_and_split(tiny):
    report = data_report(tiny)
    fig = class_distribution_figure(report)
    axes = fig.get_axes()
    assert len(axes) == 3
    heights = [[patch.get_height() for patch in ax.patches] for ax in axes]
    assert heights[0] == [2, 2, 1, 1, 0, 0, 0]
    assert heights[2] == [1, 0, 0, 0, 2, 0, 1]  # test: e (6), d d (4), a' (0)
    plt.close(fig)


def test_pixel_statistics_figure_outlines_one_histogram_per_split(tiny):
    fig = pixel_statistics_figure(tiny)
    (ax,) = fig.get_axes()
    assert len(ax.patches) == 3  # a step histogram is one outline per split
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    assert [label.split(":")[0] for label in labels] == ["train", "val", "test"]
    plt.close(fig)


def test_sample_grid_shows_up_to_per_class_images_of_each_class():
    rng = np.random.default_rng(3)
    labels = np.array([0] * 5 + [1] * 2 + [3] * 9)  # classes 2, 4, 5, 6 are empty
    images = np.zeros((len(labels), 48, 48), dtype=np.uint8)
    images[:, 0, 0] = np.arange(len(labels))  # each image carries its row index
    images[:, 1:] = rng.integers(0, 256, (len(labels), 47, 48))
    fig = sample_grid(images, labels, CLASS_NAMES, per_class=4, seed=0)
    axes = np.array(fig.get_axes()).reshape(7, 4)
    shown = [[ax.get_images()[0].get_array()[0, 0] for ax in row if ax.get_images()]
             for row in axes]
    assert [len(row) for row in shown] == [4, 2, 0, 4, 0, 0, 0]
    for label, rows in enumerate(shown):
        assert all(labels[row] == label for row in rows)  # each row shows its own class
        assert len(set(rows)) == len(rows)
    images_drawn = [child for ax in axes.flat for child in ax.get_children()]
    assert sum(isinstance(child, AxesImage) for child in images_drawn) == 10
    again = sample_grid(images, labels, CLASS_NAMES, per_class=4, seed=0)
    assert [ax.get_images()[0].get_array()[0, 0] for ax in again.get_axes()
            if ax.get_images()] == [row for rows in shown for row in rows]
    plt.close(fig)
    plt.close(again)


def test_duplicates_figure_bars_carry_the_report_numbers(tiny):
    report = data_report(tiny)
    fig = duplicates_figure(report)
    left, right = fig.get_axes()
    # Horizontal bars, drawn bottom to top: conflicting, across, groups, repeated rows.
    assert [patch.get_width() for patch in left.patches] == [1, 3, 4, 6]
    bars = [patch for patch in right.patches if isinstance(patch, Rectangle)]
    # Three kinds per split (train, val, test): blanks, repeated within, also elsewhere.
    assert [bar.get_height() for bar in bars] == [1, 1, 0, 2, 0, 1, 3, 3, 2]
    assert left.get_xlim()[0] == 0 and right.get_ylim()[0] == 0
    assert not [text for ax in (left, right) for text in ax.texts if "no " in text.get_text()]
    plt.close(fig)


def test_duplicates_figure_says_so_when_there_are_none():
    rng = np.random.default_rng(1)
    distinct = make_data({name: (list(rng.integers(1, 256, (rows, 48, 48))), [0] * rows)
                          for name, rows in (("train", 6), ("val", 2), ("test", 2))})
    fig = duplicates_figure(data_report(distinct))
    fig.canvas.draw()
    left, right = fig.get_axes()
    assert all(patch.get_width() == 0 for patch in left.patches)
    assert any("no duplicates" in text.get_text() for text in left.texts)
    assert any("no blank images" in text.get_text() for text in right.texts)
    assert right.get_legend() is None  # no bar to name
    # Axes from 0 with integer ticks, not matplotlib's -0.06..0.06 around zero-length bars.
    assert left.get_xlim()[0] == 0 and right.get_ylim()[0] == 0
    for ticks in (left.get_xticks(), right.get_yticks()):
        np.testing.assert_array_equal(ticks, np.round(ticks))
    plt.close(fig)


@pytest.mark.realdata
def test_shared_fer2013_duplicates_and_blanks():
    if not SHARED_CSV.exists():
        pytest.skip(f"real data absent: {SHARED_CSV}")
    from lhc.data import load_fer2013

    report = data_report(load_fer2013(SHARED_CSV))
    # Values from the shared copy's README.
    duplicates = report["duplicates"]
    assert duplicates["repeated_rows"] == 1532
    assert duplicates["groups"] == 1273
    assert duplicates["groups_by_splits"] == {"train+val": 270}
    assert duplicates["groups_with_conflicting_labels"] == 47
    assert report["splits"]["train"]["blank_images"] == 11
    assert report["splits"]["val"]["blank_images"] == 1
    assert report["splits"]["train"]["rows"] == 28709 and report["splits"]["val"]["rows"] == 3589
    assert report["splits"]["train"]["class_counts"]["Disgust"] == 436


def test_report_counts_rows_the_reader_skipped(tmp_path):
    from lhc.data import load_fer2013

    good = " ".join(["7"] * 2304)
    path = tmp_path / "fer2013.csv"
    path.write_text("emotion,pixels,Usage\n"
                    f"3,{good},Training\n"
                    f"9,{good},Training\n"  # line 3: unknown label
                    f"1,{good},PublicTest\n")
    report = data_report(load_fer2013(path, on_error="skip"))
    assert [(row["line"], "label" in row["reason"]) for row in report["skipped_rows"]] == [(3, True)]
    assert report["splits"]["train"]["rows"] == 1
