"""The synthetic FER-like generator: shapes, determinism, class balance, label noise, CSV format."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from lhc.data.synthetic import generate, write_fer2013_csv

# FER2013's Training class counts, from the shared copy's README (Angry .. Neutral).
FER2013_TRAIN = np.array([3995, 436, 4097, 7215, 4830, 3171, 4965])


def parse_kaggle_csv(text: str):
    """Independent reader of the Kaggle format for these tests: header, then label,pixels,usage."""
    lines = text.split("\n")
    assert lines[0] == "emotion,pixels,Usage"
    assert lines[-1] == "", "file must end with a newline"
    labels, images, usages = [], [], []
    for line in lines[1:-1]:
        label, pixels, usage = line.split(",")
        values = [int(value) for value in pixels.split(" ")]
        assert len(values) == 48 * 48
        labels.append(int(label))
        images.append(values)
        usages.append(usage)
    return np.array(images).reshape(-1, 48, 48), np.array(labels), np.array(usages)


def test_shapes_dtypes_and_ranges():
    data = generate(40, seed=3)
    assert data.images.shape == (40, 48, 48) and data.images.dtype == np.uint8
    assert data.labels.shape == (40,) and data.labels.dtype == np.int64
    assert set(data.labels.tolist()) <= set(range(7))
    assert data.usage.shape == (40,)
    # Faces, not flat fields: every image uses a good part of the grey range.
    spread = data.images.reshape(40, -1).astype(int)
    assert (spread.max(axis=1) - spread.min(axis=1) > 60).all()


def test_same_seed_same_arrays_other_seed_differs():
    first, second, other = generate(30, seed=5), generate(30, seed=5), generate(30, seed=6)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.images, other.images)


def test_usage_split_sizes_in_kaggle_order():
    data = generate(1000, seed=0)
    expected = ["Training"] * 800 + ["PublicTest"] * 100 + ["PrivateTest"] * 100
    assert data.usage.tolist() == expected
    no_private = generate(200, seed=0, usage_fractions=(0.9, 0.1, 0.0))
    assert no_private.usage.tolist() == ["Training"] * 180 + ["PublicTest"] * 20


def test_class_frequencies_follow_fer2013_in_every_split():
    data = generate(2000, seed=1)
    for usage in ("Training", "PublicTest", "PrivateTest"):
        labels = data.labels[data.usage == usage]
        exact_share = FER2013_TRAIN / FER2013_TRAIN.sum() * len(labels)
        counts = np.bincount(labels, minlength=7)
        assert np.abs(counts - exact_share).max() < 1.0, (usage, counts, exact_share)
    # Disgust is the rare class, Happy the frequent one, as in FER2013.
    counts = np.bincount(data.labels, minlength=7)
    assert counts.argmin() == 1 and counts.argmax() == 3


def test_label_noise_changes_exactly_that_fraction_of_labels_and_nothing_else():
    clean = generate(500, seed=2)
    noisy = generate(500, seed=2, label_noise=0.2)
    np.testing.assert_array_equal(clean.images, noisy.images)
    np.testing.assert_array_equal(clean.usage, noisy.usage)
    changed = clean.labels != noisy.labels
    assert changed.sum() == 100  # every replaced label is a different class
    # The replacement classes are spread over the classes, not one fixed class.
    assert len(np.unique(noisy.labels[changed])) == 7


@pytest.mark.parametrize("kwargs", [
    {"n": 0}, {"label_noise": 1.5}, {"label_noise": -0.1}, {"usage_fractions": (0.5, 0.2, 0.2)},
    {"usage_fractions": (1.1, -0.1, 0.0)}, {"usage_fractions": (0.5, 0.5)},
    {"min_intensity": 0.0}, {"pixel_noise": 2.0},
])
def test_bad_arguments_raise_naming_the_argument(kwargs):
    arguments = {"n": 10, "seed": 0, **kwargs}
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"^{name} must"):
        generate(arguments.pop("n"), **arguments)


@pytest.mark.parametrize("name", ["fer2013.csv", "fer2013.csv.gz"])
def test_csv_same_bytes_twice_other_seed_differs(tmp_path, name):
    first = write_fer2013_csv(tmp_path / "a" / name, 25, seed=4)
    write_fer2013_csv(tmp_path / "b" / name, 25, seed=4)
    write_fer2013_csv(tmp_path / "c" / name, 25, seed=9)
    bytes_a, bytes_b = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
    assert bytes_a == bytes_b
    assert bytes_a != (tmp_path / "c" / name).read_bytes()
    assert len(first.labels) == 25
    # Only the destination is left in the folder: the temporary file was renamed over it.
    assert [path.name for path in (tmp_path / "a").iterdir()] == [name]


def test_gzip_holds_the_plain_csv_with_a_fixed_header(tmp_path):
    write_fer2013_csv(tmp_path / "plain.csv", 12, seed=7, label_noise=0.25)
    write_fer2013_csv(tmp_path / "packed.csv.gz", 12, seed=7, label_noise=0.25)
    packed = (tmp_path / "packed.csv.gz").read_bytes()
    assert packed[:2] == b"\x1f\x8b"
    assert packed[4:8] == b"\x00\x00\x00\x00"  # mtime 0
    assert packed[3] & 0x08 == 0  # no file name stored
    assert gzip.decompress(packed) == (tmp_path / "plain.csv").read_bytes()


def test_csv_round_trip_with_plain_python(tmp_path):
    path = tmp_path / "fer2013.csv.gz"
    written = write_fer2013_csv(path, 60, seed=11, label_noise=0.1)
    images, labels, usages = parse_kaggle_csv(gzip.decompress(path.read_bytes()).decode("ascii"))
    np.testing.assert_array_equal(images, written.images)
    np.testing.assert_array_equal(labels, written.labels)
    np.testing.assert_array_equal(usages, written.usage)


def test_csv_round_trip_through_the_reader(tmp_path):
    from lhc.data import load_fer2013

    path = tmp_path / "fer2013.csv"
    written = write_fer2013_csv(path, 50, seed=12)
    data = load_fer2013(path)
    for split, usage in (("train", "Training"), ("val", "PublicTest"), ("test", "PrivateTest")):
        rows = written.usage == usage
        np.testing.assert_array_equal(data.splits[split].images, written.images[rows])
        np.testing.assert_array_equal(data.splits[split].labels, written.labels[rows])
    assert tuple(data.class_names) == ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise",
                                       "Neutral")
