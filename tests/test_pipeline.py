"""Tests of the tf.data input pipeline against hand-derived values (lhc.data.pipeline)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from lhc.data.pipeline import (  # noqa: E402
    STAGE_AUGMENTATION,
    Augmentation,
    augmentation_from_dict,
    make_dataset,
)

SIZE = 48


def _collect(dataset, epochs=1):
    """All (images, labels) of ``epochs`` passes over ``dataset``, as numpy, pass by pass."""
    passes = []
    for _ in range(epochs):
        batches = list(dataset.as_numpy_iterator())
        passes.append((np.concatenate([b[0] for b in batches]),
                       np.concatenate([b[1] for b in batches])))
    return passes


def _smooth_images(count, seed):
    """Face-like smooth grey images: a few random low-frequency waves plus a tilt."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    images = []
    for _ in range(count):
        freq_r, freq_c, phase = rng.uniform(0.5, 2.5), rng.uniform(0.5, 2.5), rng.uniform(0, 6)
        wave = np.sin(2 * np.pi * (freq_r * rows + freq_c * cols) + phase)
        images.append(128 + 80 * wave + 40 * (cols - 0.5))
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def _reference_resize(images, size):
    """One image at a time, through TF's bilinear resize: (N, size, size) float32."""
    return np.stack([tf.image.resize(image[:, :, None].astype(np.float32), (size, size),
                                     method="bilinear").numpy()[:, :, 0] for image in images])


def test_shapes_dtype_range_and_equal_channels():
    images = np.random.default_rng(0).integers(0, 256, (10, SIZE, SIZE), dtype=np.uint8)
    labels = np.arange(10) % 7
    dataset = make_dataset(images, labels, image_size=40, batch_size=4,
                           augmentation=STAGE_AUGMENTATION[2])
    batches = list(dataset.as_numpy_iterator())
    assert [b[0].shape for b in batches] == [(4, 40, 40, 3), (4, 40, 40, 3), (2, 40, 40, 3)]
    for batch, label in batches:
        assert batch.dtype == np.float32 and label.dtype == np.int32 and label.shape == (len(batch),)
        assert batch.min() >= 0.0 and batch.max() <= 255.0
        np.testing.assert_array_equal(batch[..., 0], batch[..., 1])
        np.testing.assert_array_equal(batch[..., 0], batch[..., 2])
    # The random pixels span the whole range, so the output really is on the 0-255 scale.
    assert max(b[0].max() for b in batches) > 200

    dropped = make_dataset(images, labels, image_size=40, batch_size=4, drop_remainder=True)
    assert [b[0].shape[0] for b in dropped.as_numpy_iterator()] == [4, 4]


def test_constant_image_resizes_to_constant():
    images = np.full((2, SIZE, SIZE), 137, dtype=np.uint8)
    [(out, _)] = _collect(make_dataset(images, np.zeros(2, int), image_size=224, batch_size=2))
    np.testing.assert_allclose(out, 137.0, atol=1e-4)


@pytest.mark.parametrize("size", [100, 224])
def test_ramp_matches_half_pixel_bilinear_formula(size):
    # A horizontal ramp 5 * column: bilinear interpolation of a linear function is exact, so
    # output column j holds 5 * u with u = (j + 0.5) * 48 / size - 0.5 (half-pixel centres),
    # clamped to the first and last source columns at the borders.
    ramp = np.tile(5 * np.arange(SIZE, dtype=np.uint8), (SIZE, 1))
    [(out, _)] = _collect(make_dataset(ramp[None], np.zeros(1, int), image_size=size,
                                       batch_size=1, shuffle=False))
    source_column = np.clip((np.arange(size) + 0.5) * SIZE / size - 0.5, 0, SIZE - 1)
    expected = np.broadcast_to(5 * source_column, (size, size))
    for channel in range(3):
        np.testing.assert_allclose(out[0, :, :, channel], expected, atol=1e-3)


def test_same_seed_gives_same_batches_and_epochs_differ():
    images = _smooth_images(20, seed=1)
    labels = np.arange(20) % 7

    def two_epochs(seed):
        return _collect(make_dataset(images, labels, image_size=32, batch_size=8, seed=seed,
                                     augmentation=STAGE_AUGMENTATION[2]), epochs=2)

    first, again, other = two_epochs(3), two_epochs(3), two_epochs(4)
    for (images_a, labels_a), (images_b, labels_b) in zip(first, again, strict=True):
        np.testing.assert_array_equal(images_a, images_b)
        np.testing.assert_array_equal(labels_a, labels_b)
    assert not np.array_equal(first[0][0], other[0][0])
    assert not np.array_equal(first[0][1], first[1][1]), "the second epoch was not reshuffled"
    assert not np.array_equal(first[0][0], first[1][0])


@pytest.mark.parametrize("stage", [3, 4])
def test_no_augmentation_in_stages_3_and_4(stage):
    images = _smooth_images(6, seed=2)
    [(out, _)] = _collect(make_dataset(images, np.zeros(6, int), image_size=64, batch_size=4,
                                       shuffle=False, augmentation=STAGE_AUGMENTATION[stage]))
    np.testing.assert_array_equal(out[..., 0], _reference_resize(images, 64))


@pytest.mark.parametrize("stage", [1, 2])
def test_augmentation_changes_images_in_stages_1_and_2(stage):
    images = _smooth_images(8, seed=3)
    [(out, _)] = _collect(make_dataset(images, np.zeros(8, int), image_size=64, batch_size=4,
                                       shuffle=False, augmentation=STAGE_AUGMENTATION[stage]))
    plain = _reference_resize(images, 64)
    mean_change = np.abs(out[..., 0] - plain).mean(axis=(1, 2))
    assert np.all(mean_change > 1.0), mean_change


def test_flip_alone_mirrors_left_right():
    images = _smooth_images(32, seed=4)
    [(out, _)] = _collect(make_dataset(images, np.zeros(32, int), image_size=48, batch_size=16,
                                       shuffle=False,
                                       augmentation=Augmentation(horizontal_flip=True)))
    mirrored = 0
    for image, result in zip(images.astype(np.float32), out[..., 0], strict=True):
        if np.array_equal(result, image[:, ::-1]):
            mirrored += 1
        else:
            np.testing.assert_array_equal(result, image)
    assert 0 < mirrored < 32


def test_labels_stay_with_their_images_through_shuffle_and_augmentation():
    # Image i is constant with value i and label i % 7: rotation, shift and zoom with nearest
    # fill keep a constant image constant, so the value identifies the image after any of them.
    count = 200
    images = np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None],
                             (count, SIZE, SIZE)).copy()
    labels = np.arange(count) % 7
    dataset = make_dataset(images, labels, image_size=32, batch_size=64, seed=5, one_hot=True,
                           augmentation=STAGE_AUGMENTATION[2])
    for out, one_hot in (_collect(dataset, epochs=2)):
        values = out[:, 0, 0, 0]
        np.testing.assert_allclose(out, np.broadcast_to(values[:, None, None, None], out.shape),
                                   atol=1e-3)
        image_ids = np.round(values).astype(int)
        assert sorted(image_ids) == list(range(count)), "not every image once per epoch"
        assert not np.array_equal(image_ids, np.arange(count)), "not shuffled"
        assert one_hot.shape == (count, 7) and one_hot.dtype == np.float32
        np.testing.assert_array_equal(one_hot, np.eye(7, dtype=np.float32)[image_ids % 7])


def test_paper_jpeg_round_trip_is_close_to_floored_resize_and_cached(tmp_path, monkeypatch):
    images = _smooth_images(10, seed=6)
    labels = np.arange(10) % 7
    options = dict(image_size=96, batch_size=4, shuffle=False, paper_jpeg=True,
                   jpeg_cache_dir=tmp_path)
    [(out, out_labels)] = _collect(make_dataset(images, labels, **options))
    floored = np.floor(_reference_resize(images, 96))
    assert out.shape == (10, 96, 96, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out_labels, labels)
    for channel in range(3):
        assert np.abs(out[..., channel] - floored).mean() < 0.2
        assert np.abs(out[..., channel] - floored).max() <= 2
    # Floor, not round: rounding would sit about 0.5 away on average.
    rounded = np.round(_reference_resize(images, 96))
    assert np.abs(out[..., 0] - rounded).mean() > 0.3

    [cache_file] = tmp_path.iterdir()
    written = cache_file.stat().st_mtime_ns

    def no_encoding(*args, **kwargs):
        raise AssertionError("the JPEG cache was encoded a second time")

    monkeypatch.setattr(tf.io, "encode_jpeg", no_encoding)
    [(again, _)] = _collect(make_dataset(images, labels, **options))
    np.testing.assert_array_equal(again, out)
    assert list(tmp_path.iterdir()) == [cache_file]
    assert cache_file.stat().st_mtime_ns == written
    monkeypatch.undo()

    make_dataset(images[:5], labels[:5], **options)
    assert len(list(tmp_path.iterdir())) == 2, "different images must get their own cache file"


def test_paper_jpeg_needs_a_cache_dir():
    with pytest.raises(ValueError, match="jpeg_cache_dir"):
        make_dataset(np.zeros((1, SIZE, SIZE), np.uint8), np.zeros(1, int), image_size=8,
                     batch_size=1, paper_jpeg=True)


def test_stage_augmentation_follows_the_reference():
    assert STAGE_AUGMENTATION[1] == Augmentation(rotation_degrees=30, horizontal_flip=True)
    assert STAGE_AUGMENTATION[2] == Augmentation(rotation_degrees=10, width_shift=0.1,
                                                 height_shift=0.1, zoom=0.1,
                                                 horizontal_flip=True)
    assert STAGE_AUGMENTATION[3].is_identity and STAGE_AUGMENTATION[4].is_identity
    assert all(a.fill_mode == "nearest" for a in STAGE_AUGMENTATION.values())


def test_augmentation_from_dict_validates_keys_and_values():
    settings = {"rotation_degrees": 10, "width_shift": 0.1, "height_shift": 0.1, "zoom": 0.1,
                "horizontal_flip": True}
    assert augmentation_from_dict(settings) == STAGE_AUGMENTATION[2]
    with pytest.raises(ValueError, match="'rotaton_degrees'"):
        augmentation_from_dict({"rotaton_degrees": 10})
    with pytest.raises(ValueError, match="zoom"):
        augmentation_from_dict({"zoom": 1.5})
    with pytest.raises(ValueError, match="fill_mode"):
        augmentation_from_dict({"fill_mode": "mirror"})
    with pytest.raises(ValueError, match="horizontal_flip"):
        augmentation_from_dict({"horizontal_flip": "yes"})


@pytest.mark.parametrize(("images", "labels", "message"), [
    (np.zeros((2, SIZE, SIZE), np.float32), np.zeros(2, int), "uint8"),
    (np.zeros((2, SIZE, SIZE, 1), np.uint8), np.zeros(2, int), r"\(N, H, W\)"),
    (np.zeros((0, SIZE, SIZE), np.uint8), np.zeros(0, int), "empty"),
    (np.zeros((2, SIZE, SIZE), np.uint8), np.zeros(3, int), r"shape \(2,\)"),
    (np.zeros((2, SIZE, SIZE), np.uint8), np.array([0.0, 1.0]), "integer"),
    (np.zeros((2, SIZE, SIZE), np.uint8), np.array([0, 7]), "label 7 at index 1"),
])
def test_bad_arrays_are_rejected_with_a_clear_error(images, labels, message):
    with pytest.raises(ValueError, match=message):
        make_dataset(images, labels, image_size=8, batch_size=1)
