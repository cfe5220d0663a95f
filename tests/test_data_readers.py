"""Readers of lhc.data on small files written here: each layout, FER+, carving, the cache."""

from __future__ import annotations

import dataclasses
import gzip
import shutil

import numpy as np
import pytest
from PIL import Image

from lhc.data import (
    FER2013_CLASSES,
    FERPLUS_CLASSES,
    FER2013Data,
    Provenance,
    Split,
    carve_test_split,
    fer_csv,
    load_fer2013,
    load_ferplus,
)


def random_images(count, seed):
    images = np.random.default_rng(seed).integers(0, 256, size=(count, 48, 48), dtype=np.uint8)
    images[:, 0, 0], images[:, 47, 47] = 0, 255  # both ends of the range in every image
    return images


def pixels_text(image):
    return " ".join(str(value) for value in image.ravel())  # row-major, as Kaggle's file


def write_text(path, lines, *, gz=False, newline="\n"):
    data = (newline.join(lines) + newline).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


USAGES = ["Training", "Training", "PublicTest", "PrivateTest", "Training"]
LABELS = [3, 0, 6, 1, 5]


@pytest.fixture
def kaggle_rows():
    images = random_images(len(USAGES), seed=1)
    rows = zip(LABELS, images, USAGES, strict=True)
    lines = ["emotion,pixels,Usage"] + [f"{label},{pixels_text(image)},{usage}"
                                        for label, image, usage in rows]
    return images, lines


@pytest.mark.parametrize("gz", [False, True])
def test_kaggle_csv_maps_usages_to_splits_with_provenance(tmp_path, kaggle_rows, gz):
    images, lines = kaggle_rows
    path = write_text(tmp_path / ("fer2013.csv.gz" if gz else "fer2013.csv"), lines, gz=gz)

    data = load_fer2013(path)

    # Rows 0, 1, 4 are Training (file lines 2, 3, 6), row 2 PublicTest, row 3 PrivateTest.
    expected = {"train": [0, 1, 4], "val": [2], "test": [3]}
    assert list(data.splits) == ["train", "val", "test"]
    for name, rows in expected.items():
        split = data.splits[name]
        assert split.images.dtype == np.uint8 and split.images.shape == (len(rows), 48, 48)
        assert split.labels.dtype == np.int64
        np.testing.assert_array_equal(split.images, images[rows])
        np.testing.assert_array_equal(split.labels, np.asarray(LABELS)[rows])
        np.testing.assert_array_equal(split.provenance.lines, np.asarray(rows) + 2)
        assert split.provenance[0] == f"{path}, line {rows[0] + 2}"
    assert data.class_names == FER2013_CLASSES
    assert data.split_convention.startswith(
        "Training -> train, PublicTest -> val, PrivateTest -> test")
    assert data.rows_read == 5 and data.skipped == [] and data.notes == []
    assert not data.test_is_carved


def test_kaggle_csv_tolerates_common_variations(tmp_path):
    # BOM, CRLF, columns in another order plus an extra one, quoted fields, lower-case Usage,
    # a blank line (noted; it shifts later rows to their true line numbers).
    images = random_images(2, seed=2)
    lines = ["\ufeffUsage,emotion,\"pixels\",source",
             f"training,4,\"{pixels_text(images[0])}\",a",
             "",
             f"PUBLICTEST, 2 ,{pixels_text(images[1])},b"]
    path = write_text(tmp_path / "fer2013.csv", lines, newline="\r\n")

    data = load_fer2013(path)

    np.testing.assert_array_equal(data.splits["train"].images, images[:1])
    np.testing.assert_array_equal(data.splits["val"].labels, [2])
    np.testing.assert_array_equal(data.splits["val"].provenance.lines, [4])
    assert any("1 blank lines" in note for note in data.notes)
    assert any("PrivateTest absent" in note for note in data.notes)
    assert "test" not in data.splits


def test_parse_in_several_chunks_matches_single_chunk(tmp_path, kaggle_rows, monkeypatch):
    images, lines = kaggle_rows
    path = write_text(tmp_path / "fer2013.csv", lines)
    whole = load_fer2013(path)
    monkeypatch.setattr(fer_csv, "_CHUNK_ROWS", 2)
    chunked = load_fer2013(path)
    for name, split in whole.splits.items():
        np.testing.assert_array_equal(chunked.splits[name].images, split.images)
        np.testing.assert_array_equal(chunked.splits[name].provenance.lines, split.provenance.lines)


def test_per_split_csvs_comma_and_semicolon(tmp_path):
    images = random_images(3, seed=3)
    write_text(tmp_path / "train.csv", ["emotion,pixels", f"0,{pixels_text(images[0])}",
                                        f"5,{pixels_text(images[1])}"])
    write_text(tmp_path / "VAL.csv.gz", ["emotion;pixels", f"2;{pixels_text(images[2])}"], gz=True)

    data = load_fer2013(tmp_path)

    assert list(data.splits) == ["train", "val"]
    np.testing.assert_array_equal(data.splits["train"].images, images[:2])
    np.testing.assert_array_equal(data.splits["train"].labels, [0, 5])
    np.testing.assert_array_equal(data.splits["val"].images, images[2:])
    assert data.splits["val"].provenance[0] == f"{tmp_path / 'VAL.csv.gz'}, line 2"
    assert any("no test split" in note for note in data.notes)
    assert "val.csv -> val" in data.split_convention


def save_image(path, array, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).convert(mode).save(path)


def test_image_folders_split_rule_synonyms_and_case(tmp_path):
    images = random_images(6, seed=4)
    save_image(tmp_path / "train" / "Happy" / "Training_1.png", images[0])
    save_image(tmp_path / "train" / "ANGER" / "Training_2.png", images[1])
    save_image(tmp_path / "Test" / "surprised" / "PublicTest_3.png", images[2])
    save_image(tmp_path / "test" / "sadness" / "PrivateTest_4.png", images[3])
    save_image(tmp_path / "test" / "Neutral" / "face.png", images[4])
    save_image(tmp_path / "train" / "fearful" / "Training_5.png", images[5], mode="RGB")
    save_image(tmp_path / "train" / "Disgusted" / "Training_6.JPG", np.full((48, 48), 90, np.uint8))
    (tmp_path / "train" / "fearful" / "notes.txt").write_text("not an image")

    data = load_fer2013(tmp_path)

    train, val, test = (data.splits[name] for name in ("train", "val", "test"))
    # Sorted by path: ANGER, Disgusted, Happy, fearful (upper case sorts first).
    np.testing.assert_array_equal(train.labels, [0, 1, 3, 2])
    np.testing.assert_array_equal(train.images[[0, 2, 3]], images[[1, 0, 5]])  # RGB grey exact
    assert np.abs(train.images[1].astype(int) - 90).max() <= 1  # a flat JPEG, lossy by 1 at most
    np.testing.assert_array_equal(val.labels, [5])
    np.testing.assert_array_equal(val.images, images[2:3])
    np.testing.assert_array_equal(test.labels, [6, 4])  # unprefixed and PrivateTest_*
    np.testing.assert_array_equal(test.images, images[[4, 3]])
    assert test.provenance[0] == str(tmp_path / "test" / "Neutral" / "face.png")
    assert any("1 entries outside the layout" in note for note in data.notes)
    assert data.rows_read == 7


def test_image_folders_resize_when_allowed(tmp_path):
    save_image(tmp_path / "train" / "happy" / "a.png", np.full((96, 64), 200, np.uint8))
    save_image(tmp_path / "train" / "sad" / "b.png", np.full((48, 48), 10, np.uint8))

    data = load_fer2013(tmp_path, allow_resize=True)

    train = data.splits["train"]
    assert train.images.shape == (2, 48, 48)
    np.testing.assert_array_equal(train.images[0], 200)  # a flat image stays flat
    assert data.num_resized == 1
    assert any("1 images resized" in note for note in data.notes)


# FER+ votes, hand-labelled per the FER+ majority protocol (single votes dropped, then a
# class needs more than half of the remaining votes; unknown/NF majorities and rows without
# an image name are excluded). Columns: neutral happiness surprise sadness anger disgust fear
# contempt unknown NF.
FERPLUS_ROWS = [
    # usage, name, votes, majority label or exclusion reason
    ("Training", "a.png", (4, 0, 0, 1, 3, 2, 0, 0, 0, 0), "without a majority"),  # 4 of 9
    ("Training", "b.png", (0, 6, 2, 1, 0, 0, 0, 0, 1, 0), 3),  # 6 of 8 -> Happy
    ("Training", "c.png", (2, 0, 0, 0, 0, 0, 2, 6, 0, 0), 7),  # 6 of 10 -> Contempt
    ("Training", "d.png", (3, 0, 0, 0, 0, 0, 0, 0, 7, 0), "with majority 'unknown'"),
    ("Training", "", (0, 0, 0, 0, 0, 0, 0, 0, 0, 10), "without an image name (not a face)"),
    ("Training", "f.png", (0, 0, 0, 0, 4, 0, 0, 0, 0, 6), "with majority 'NF' (not a face)"),
    ("PublicTest", "g.png", (0, 0, 9, 0, 0, 0, 1, 0, 0, 0), 5),  # 9 of 9 -> Surprise
    ("PublicTest", "h.png", (0, 0, 0, 0, 0, 0, 0, 0, 10, 0), "with majority 'unknown'"),
]
FERPLUS_HEADER = ("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,"
                  "contempt,unknown,NF")


def write_ferplus_pair(tmp_path, rows=FERPLUS_ROWS):
    images = random_images(len(rows), seed=5)
    fer = write_text(tmp_path / "fer2013.csv", ["emotion,pixels,Usage"] + [
        f"0,{pixels_text(image)},{usage}" for image, (usage, *_) in zip(images, rows, strict=True)])
    ferplus = write_text(tmp_path / "fer2013new.csv", [FERPLUS_HEADER] + [
        f"{usage},{name},{','.join(map(str, votes))}" for usage, name, votes, _ in rows])
    return fer, ferplus, images


def test_ferplus_majority_follows_the_protocol(tmp_path):
    fer, ferplus, images = write_ferplus_pair(tmp_path)

    data = load_ferplus(fer, ferplus)

    assert data.class_names == FERPLUS_CLASSES and FERPLUS_CLASSES[7] == "Contempt"
    np.testing.assert_array_equal(data.splits["train"].labels, [3, 7])
    np.testing.assert_array_equal(data.splits["train"].images, images[[1, 2]])
    np.testing.assert_array_equal(data.splits["train"].provenance.lines, [3, 4])
    np.testing.assert_array_equal(data.splits["val"].labels, [5])
    expected_excluded = {}
    for *_, outcome in FERPLUS_ROWS:
        if isinstance(outcome, str):
            expected_excluded[outcome] = expected_excluded.get(outcome, 0) + 1
    assert data.excluded == expected_excluded
    assert any("3 rows kept" in note for note in data.notes)


def test_ferplus_distribution_mode(tmp_path):
    fer, ferplus, _ = write_ferplus_pair(tmp_path)

    data = load_ferplus(fer, ferplus, mode="distribution")

    train = data.splits["train"]
    # Every Training row with an image name has emotion votes: a, b, c, d, f.
    np.testing.assert_array_equal(train.provenance.lines, [2, 3, 4, 5, 7])
    # Row a: neutral 4, sadness 1, anger 3, disgust 2 of 10, in FER2013 class order + Contempt.
    np.testing.assert_allclose(train.distributions[0], [0.3, 0.2, 0, 0, 0.1, 0, 0.4, 0])
    # Row b: happiness 6, surprise 2, sadness 1 of 9 emotion votes (unknown is not an emotion).
    np.testing.assert_allclose(train.distributions[1], np.array([0, 0, 0, 6, 1, 2, 0, 0]) / 9,
                               rtol=1e-6)
    np.testing.assert_array_equal(train.labels, [6, 3, 7, 6, 0])
    assert data.excluded == {"without an image name (not a face)": 1, "without emotion votes": 1}


def in_memory_data(counts):
    labels = np.repeat(np.arange(len(counts)), counts)
    rows = len(labels)
    provenance = Provenance(("mem",), np.zeros(rows, np.int32), np.arange(2, rows + 2))
    split = Split(np.zeros((rows, 48, 48), np.uint8), labels, provenance)
    return FER2013Data(splits={"train": split}, class_names=FER2013_CLASSES,
                       split_convention="Training -> train", source="mem", rows_read=rows)


def test_carve_is_stratified_deterministic_and_disjoint():
    counts = [40, 20, 10, 5, 30, 15, 60]
    data = in_memory_data(counts)

    carved = carve_test_split(data, 0.2, seed=3)

    test, train = carved.splits["test"], carved.splits["train"]
    # round(0.2 * n) per class: 8, 4, 2, 1, 6, 3, 12.
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=7), [8, 4, 2, 1, 6, 3, 12])
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=7),
                                  [32, 16, 8, 4, 24, 12, 48])
    all_lines = np.sort(np.concatenate([train.provenance.lines, test.provenance.lines]))
    np.testing.assert_array_equal(all_lines, np.arange(2, sum(counts) + 2))
    assert np.all(np.diff(test.provenance.lines) > 0)  # source order kept
    assert carved.test_is_carved and "carved" in carved.split_convention
    assert any("not PrivateTest" in note for note in carved.notes)

    again = carve_test_split(data, 0.2, seed=3)
    other = carve_test_split(data, 0.2, seed=4)
    np.testing.assert_array_equal(again.splits["test"].provenance.lines, test.provenance.lines)
    assert not np.array_equal(other.splits["test"].provenance.lines, test.provenance.lines)


def test_carve_refuses_to_replace_a_test_split():
    data = in_memory_data([5, 5])
    carved = carve_test_split(data, 0.2, seed=0)
    with pytest.raises(ValueError, match="has a test split"):
        carve_test_split(carved, 0.2, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        carve_test_split(data, 1.5, seed=0)


def test_load_with_carve_test(tmp_path, kaggle_rows):
    images, lines = kaggle_rows
    without_test = [line for line in lines if "PrivateTest" not in line]
    path = write_text(tmp_path / "fer2013.csv", without_test)
    data = load_fer2013(path, carve_test=0.5, seed=0)
    assert data.test_is_carved
    assert len(data.splits["train"]) + len(data.splits["test"]) == 3

    # With PrivateTest rows present the source's test split is kept, and the note says so.
    full = load_fer2013(write_text(tmp_path / "full.csv", lines), carve_test=0.5, seed=0)
    plain = load_fer2013(tmp_path / "full.csv")
    assert not full.test_is_carved
    np.testing.assert_array_equal(full.splits["test"].images, plain.splits["test"].images)
    assert any("carve_test ignored" in note for note in full.notes)


def test_cache_hit_then_invalidated_by_a_changed_source(tmp_path, kaggle_rows):
    images, lines = kaggle_rows
    path = write_text(tmp_path / "fer2013.csv", lines)
    cache_dir = tmp_path / "cache"

    first = load_fer2013(path, cache_dir=cache_dir)
    second = load_fer2013(path, cache_dir=cache_dir)

    assert not first.cache_hit and second.cache_hit
    assert second.cache_path == first.cache_path and len(list(cache_dir.glob("*.npz"))) == 1
    for name, split in first.splits.items():
        np.testing.assert_array_equal(second.splits[name].images, split.images)
        np.testing.assert_array_equal(second.splits[name].labels, split.labels)
        assert second.splits[name].provenance[0] == split.provenance[0]
    assert second.notes == first.notes and second.split_convention == first.split_convention

    # One pixel changes: the cache must not serve the old image.
    changed = images[0].copy()
    changed[10, 10] = (int(changed[10, 10]) + 1) % 256
    lines = [lines[0], f"{LABELS[0]},{pixels_text(changed)},{USAGES[0]}", *lines[2:]]
    write_text(path, lines)
    third = load_fer2013(path, cache_dir=cache_dir)
    assert not third.cache_hit
    np.testing.assert_array_equal(third.splits["train"].images[0], changed)
    # Other options parse afresh too.
    assert not load_fer2013(path, cache_dir=cache_dir, on_error="skip").cache_hit


def test_cache_follows_a_moved_source_and_survives_a_corrupt_entry(tmp_path, kaggle_rows):
    _, lines = kaggle_rows
    (tmp_path / "a").mkdir()
    original = write_text(tmp_path / "a" / "fer2013.csv", lines)
    cache_dir = tmp_path / "cache"
    first = load_fer2013(original, cache_dir=cache_dir)
    moved = tmp_path / "b" / "fer2013.csv"
    moved.parent.mkdir()
    shutil.copy(original, moved)

    from_moved = load_fer2013(moved, cache_dir=cache_dir)

    assert from_moved.cache_hit
    assert from_moved.splits["train"].provenance[0] == f"{moved}, line 2"

    with open(first.cache_path, "r+b") as entry:
        entry.truncate(100)
    reparsed = load_fer2013(original, cache_dir=cache_dir)
    assert not reparsed.cache_hit and len(reparsed.splits["train"]) == 3
    assert load_fer2013(original, cache_dir=cache_dir).cache_hit  # rewritten


def test_split_take_keeps_rows_together():
    data = in_memory_data([2, 3])
    split = data.splits["train"]
    taken = split.take(np.array([4, 0]))
    np.testing.assert_array_equal(taken.labels, [1, 0])
    np.testing.assert_array_equal(taken.provenance.lines, [6, 2])
    with pytest.raises(ValueError, match="disagree"):
        dataclasses.replace(split, labels=split.labels[:2])
