"""The readers on the shared real FER2013 copy (skipped when it is absent).

Expected counts come from the shared copy's README table; FER+ majority counts from a plain
per-row transcription of the FER+ protocol written here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from lhc.data import FERPLUS_CLASSES, carve_test_split, load_fer2013, load_ferplus

DATA = Path(__file__).resolve().parents[2] / "shared" / "fer2013"
FER_CSV = DATA / "fer2013.csv.gz"
FERPLUS_CSV = DATA / "fer2013new.csv"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (FER_CSV.is_file() and FERPLUS_CSV.is_file()),
                       reason=f"real FER2013 data not found in {DATA}"),
]

# README of the shared copy: rows and Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral.
README_COUNTS = {
    "train": (28709, [3995, 436, 4097, 7215, 4830, 3171, 4965]),
    "val": (3589, [467, 56, 496, 895, 653, 415, 607]),
}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    data = load_fer2013(FER_CSV)
    cache_dir = tmp_path_factory.mktemp("fer_cache")
    ferplus = load_ferplus(FER_CSV, FERPLUS_CSV, cache_dir=cache_dir)  # writes the image cache
    return data, ferplus, cache_dir


def test_rows_and_classes_match_the_readme(loaded):
    data, *_ = loaded
    assert list(data.splits) == ["train", "val"]
    for name, (rows, per_class) in README_COUNTS.items():
        split = data.splits[name]
        assert split.images.shape == (rows, 48, 48) and split.images.dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(split.labels, minlength=7), per_class)
    # The file holds Training rows, then PublicTest rows, in order, after the header.
    np.testing.assert_array_equal(data.splits["train"].provenance.lines, np.arange(2, 28711))
    np.testing.assert_array_equal(data.splits["val"].provenance.lines, np.arange(28711, 32300))
    assert data.rows_read == 32298 and data.skipped == []
    assert any(note.startswith("PrivateTest absent") for note in data.notes)
    assert not data.test_is_carved


def test_carved_test_split_is_stratified(loaded):
    data, *_ = loaded
    carved = carve_test_split(data, 0.1, seed=0)
    expected = [round(0.1 * count) for count in README_COUNTS["train"][1]]
    np.testing.assert_array_equal(np.bincount(carved.splits["test"].labels, minlength=7), expected)
    assert len(carved.splits["train"]) == 28709 - sum(expected)
    assert carved.test_is_carved


def ferplus_majority_by_hand(path):
    """Per-usage class counts under the FER+ majority protocol, one row at a time."""
    classes = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral",
               "contempt"]
    columns = [*classes, "unknown", "NF"]
    counts = {"Training": [0] * 8, "PublicTest": [0] * 8}
    rows = 0
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            rows += 1
            if not row["Image name"].strip():
                continue
            votes = {name: int(row[name]) for name in columns if int(row[name]) > 1}
            best = max(votes, key=votes.get) if votes else None
            if best is None or 2 * votes[best] <= sum(votes.values()) or best in ("unknown", "NF"):
                continue
            counts[row["Usage"]][classes.index(best)] += 1
    return rows, counts


def test_ferplus_is_aligned_and_majority_counts_agree(loaded):
    data, ferplus, _ = loaded
    rows, counts = ferplus_majority_by_hand(FERPLUS_CSV)
    assert rows == data.rows_read == 32298
    assert ferplus.class_names == FERPLUS_CLASSES
    for name, usage in (("train", "Training"), ("val", "PublicTest")):
        np.testing.assert_array_equal(np.bincount(ferplus.splits[name].labels, minlength=8),
                                      counts[usage])
    kept = sum(len(split) for split in ferplus.splits.values())
    assert kept + sum(ferplus.excluded.values()) == rows
    assert ferplus.skipped == []
    # Rows keep their own image: the first kept FER+ training row is the same FER2013 row.
    first = ferplus.splits["train"]
    line = first.provenance.lines[0]
    np.testing.assert_array_equal(first.images[0], data.splits["train"].images[line - 2])


def test_cache_round_trip(loaded):
    data, _, cache_dir = loaded
    cached = load_fer2013(FER_CSV, cache_dir=cache_dir)
    assert cached.cache_hit
    for name, split in data.splits.items():
        np.testing.assert_array_equal(cached.splits[name].images, split.images)
        np.testing.assert_array_equal(cached.splits[name].labels, split.labels)
        np.testing.assert_array_equal(cached.splits[name].provenance.lines, split.provenance.lines)
