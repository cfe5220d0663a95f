"""Tests of the input pipeline (lhc.data.pipeline) against hand-derived values, any backend.

Host side: :class:`EpochBatches` (the order of each epoch, process shares). Device side:
:func:`input_model` (resize, augmentation, three channels), :func:`preprocess` for inference.
Nothing here imports TensorFlow: the same tests pass with ``KERAS_BACKEND=jax``.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lhc.data import pipeline  # noqa: E402
from lhc.data.pipeline import (  # noqa: E402
    STAGE_AUGMENTATION,
    Augmentation,
    EpochBatches,
    augmentation_from_dict,
    epoch_order,
    input_model,
    paper_jpeg_cache,
    preprocess,
    read_jpeg_cache,
)

SIZE = 48


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


def _bilinear(images, size):
    """Half-pixel-centre bilinear resize transcribed per axis: (N, size, size) float64."""
    source = images.shape[1]
    position = np.clip((np.arange(size) + 0.5) * source / size - 0.5, 0, source - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, source - 1)
    weight = position - low
    rows = images[:, low] * (1 - weight)[None, :, None] + images[:, high] * weight[None, :, None]
    return rows[:, :, low] * (1 - weight) + rows[:, :, high] * weight


def _device(model, images, training):
    """``model`` on grey uint8 (N, H, W) images as the training loop feeds them."""
    grey = images[..., None].astype(np.float32)  # (N, H, W) -> (N, H, W, 1)
    return keras.ops.convert_to_numpy(model(grey, training=training))


def _epoch(batches):
    """All (images, labels) of one pass over ``batches``."""
    parts = [batches[index] for index in range(len(batches))]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def test_batches_shapes_dtype_and_last_short_batch():
    images = np.random.default_rng(0).integers(0, 256, (10, SIZE, SIZE), dtype=np.uint8)
    batches = EpochBatches(images, np.arange(10) % 7, 4, seed=1)
    shapes = [batches[index][0].shape for index in range(len(batches))]
    assert shapes == [(4, SIZE, SIZE, 1), (4, SIZE, SIZE, 1), (2, SIZE, SIZE, 1)]
    batch, labels = batches[0]
    assert batch.dtype == np.float32 and labels.dtype == np.int32
    with pytest.raises(IndexError):
        batches[3]


def test_epoch_order_is_a_permutation_of_seed_and_epoch():
    # NumPy's PCG64 seeded by SeedSequence([seed, epoch]): the same on every machine.
    expected = np.random.Generator(np.random.PCG64(np.random.SeedSequence([5, 2]))).permutation(20)
    np.testing.assert_array_equal(epoch_order(20, 5, 2), expected)
    assert sorted(epoch_order(20, 5, 2)) == list(range(20))
    assert not np.array_equal(epoch_order(20, 5, 2), epoch_order(20, 5, 3))


def test_batches_follow_the_epoch_they_are_given():
    # Image i is constant with value i: the batch pixels name the images and their order.
    count = 30
    images = np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None],
                             (count, SIZE, SIZE)).copy()
    labels = np.arange(count) % 7
    batches = EpochBatches(images, labels, 8, seed=3)
    for epoch in (0, 1, 4):
        batches.set_epoch(epoch)
        pixels, seen_labels = _epoch(batches)
        ids = pixels[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(ids, epoch_order(count, 3, epoch))
        np.testing.assert_array_equal(seen_labels, ids % 7)
    fixed = EpochBatches(images, labels, 8, shuffle=False)
    fixed.set_epoch(2)
    np.testing.assert_array_equal(_epoch(fixed)[0][:, 0, 0, 0], np.arange(count))


def test_process_shares_make_up_the_global_batch():
    images = np.broadcast_to(np.arange(24, dtype=np.uint8)[:, None, None], (24, 4, 4)).copy()
    labels = np.zeros(24, int)
    whole = EpochBatches(images, labels, 8, seed=0)
    shares = [EpochBatches(images, labels, 8, seed=0, process_index=index, process_count=2)
              for index in range(2)]
    for index in range(len(whole)):
        joined = np.concatenate([share[index][0] for share in shares])
        np.testing.assert_array_equal(joined, whole[index][0])
    with pytest.raises(ValueError, match="does not divide"):
        EpochBatches(images, labels, 7, process_count=2)
    # 25 images in batches of 8: the last global batch of 1 cannot be split in two.
    odd = np.zeros((25, 4, 4), np.uint8)
    assert EpochBatches(odd, np.zeros(25, int), 8, process_count=2).dropped == 1
    assert len(EpochBatches(odd, np.zeros(25, int), 8, process_count=2)) == 3


@pytest.mark.parametrize(("count", "left_out", "last_rows"), [(26, 0, 2), (27, 1, 2), (29, 1, 4)])
def test_the_last_batch_leaves_out_what_does_not_split_over_the_replicas(count, left_out,
                                                                         last_rows):
    # Batches of 8 over 2 devices: a last batch of 3 or 5 rows keeps 2 or 4 (count mod 8 mod 2
    # rows go), one of 2 keeps both; the rows kept are the first of the epoch's order.
    images = np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None],
                             (count, 4, 4)).copy()
    batches = EpochBatches(images, np.zeros(count, int), 8, shuffle=False, replicas=2)
    assert batches.dropped == left_out and len(batches) == 4
    last = batches[3][0][:, 0, 0, 0]
    np.testing.assert_array_equal(last, np.arange(24, 24 + last_rows))
    with pytest.raises(ValueError, match="does not divide among 4 replicas"):
        EpochBatches(images, np.zeros(count, int), 6, replicas=4)
    with pytest.raises(ValueError, match="3 replicas do not divide among 2 processes"):
        EpochBatches(images, np.zeros(count, int), 6, replicas=3, process_count=2)


def test_augmentation_compiles_into_the_training_step_on_jax():
    """Keras marks rotation, translation and zoom unfit for XLA (a TensorFlow limit); on JAX a
    stage must still compile its step, which one such layer would switch off altogether."""
    from lhc.data.pipeline import STAGE_AUGMENTATION, augmentation_layers, with_inputs
    from lhc.training.distribute import jit_compile

    layers = augmentation_layers(STAGE_AUGMENTATION[2], seed=0)
    assert len(layers) == 4
    trainer = with_inputs(keras.Sequential([keras.Input((SIZE, SIZE, 3)),
                                            keras.layers.GlobalAveragePooling2D(),
                                            keras.layers.Dense(7)]),
                          augmentation=STAGE_AUGMENTATION[2])
    trainer.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                    jit_compile=jit_compile())
    if keras.backend.backend() == "jax":
        assert all(layer.supports_jit for layer in layers)
        assert trainer.jit_compile is True
    else:  # TensorFlow: graph mode without XLA on this CPU, as before
        assert trainer.jit_compile is False


def test_constant_image_resizes_to_constant():
    images = np.full((2, SIZE, SIZE), 137, dtype=np.uint8)
    np.testing.assert_allclose(preprocess(images, 224), 137.0, atol=1e-4)


@pytest.mark.parametrize("size", [100, 224])
def test_ramp_matches_half_pixel_bilinear_formula(size):
    # A horizontal ramp 5 * column: bilinear interpolation of a linear function is exact, so
    # output column j holds 5 * u with u = (j + 0.5) * 48 / size - 0.5 (half-pixel centres),
    # clamped to the first and last source columns at the borders.
    ramp = np.tile(5 * np.arange(SIZE, dtype=np.uint8), (SIZE, 1))
    out = preprocess(ramp[None], size)
    source_column = np.clip((np.arange(size) + 0.5) * SIZE / size - 0.5, 0, SIZE - 1)
    expected = np.broadcast_to(5 * source_column, (size, size))
    assert out.shape == (1, size, size, 3) and out.dtype == np.float32
    for channel in range(3):
        np.testing.assert_allclose(out[0, :, :, channel], expected, atol=1e-3)


def test_preprocess_is_the_training_inputs_without_augmentation():
    images = _smooth_images(5, seed=7)
    model = input_model(64, augmentation=STAGE_AUGMENTATION[2], seed=1)
    out = preprocess(images, 64)
    np.testing.assert_allclose(_device(model, images, training=False), out, atol=1e-4)
    np.testing.assert_allclose(out[..., 0], _bilinear(images.astype(np.float64), 64), atol=1e-3)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_same_seed_gives_same_augmentation_and_calls_differ():
    images = _smooth_images(6, seed=1)

    def two_calls(seed):
        model = input_model(32, augmentation=STAGE_AUGMENTATION[2], seed=seed)
        return [_device(model, images, training=True) for _ in range(2)]

    first, again, other = two_calls(3), two_calls(3), two_calls(4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], first[1]), "the second call drew the same transformations"


def test_augmentation_state_is_a_variable_that_restores_the_draws():
    # A checkpoint stores the seed-generator states (lhc.training.checkpoints); putting them
    # back repeats the draws that followed.
    images = _smooth_images(4, seed=2)
    model = input_model(32, augmentation=STAGE_AUGMENTATION[1], seed=5)
    _device(model, images, training=True)
    states = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_variables]
    assert states, "the augmentation layers carry no seed state"
    following = _device(model, images, training=True)
    for variable, state in zip(model.non_trainable_variables, states, strict=True):
        variable.assign(state)
    np.testing.assert_array_equal(_device(model, images, training=True), following)


@pytest.mark.parametrize("stage", [3, 4])
def test_no_augmentation_in_stages_3_and_4(stage):
    images = _smooth_images(6, seed=2)
    model = input_model(64, augmentation=STAGE_AUGMENTATION[stage], seed=0)
    assert not model.non_trainable_variables
    np.testing.assert_allclose(_device(model, images, training=True), preprocess(images, 64),
                               atol=1e-4)


@pytest.mark.parametrize("stage", [1, 2])
def test_augmentation_changes_images_in_stages_1_and_2(stage):
    images = _smooth_images(8, seed=3)
    model = input_model(64, augmentation=STAGE_AUGMENTATION[stage], seed=0)
    out = _device(model, images, training=True)
    mean_change = np.abs(out[..., 0] - preprocess(images, 64)[..., 0]).mean(axis=(1, 2))
    assert np.all(mean_change > 1.0), mean_change
    assert out.min() >= 0.0 and out.max() <= 255.0 + 1e-3


def test_flip_alone_mirrors_left_right():
    images = _smooth_images(32, seed=4)
    out = _device(input_model(SIZE, augmentation=Augmentation(horizontal_flip=True), seed=0),
                  images, training=True)
    mirrored = 0
    for image, result in zip(images.astype(np.float32), out[..., 0], strict=True):
        if np.array_equal(result, image[:, ::-1]):
            mirrored += 1
        else:
            np.testing.assert_array_equal(result, image)
    assert 0 < mirrored < 32


def test_constant_images_stay_constant_through_stage2_augmentation():
    # Rotation, shift and zoom with nearest fill keep a constant image constant, so the value
    # still names the image after them: the labels travel with their images.
    count = 40
    images = np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None],
                             (count, SIZE, SIZE)).copy()
    batches = EpochBatches(images, np.arange(count) % 7, 16, seed=5)
    model = input_model(32, augmentation=STAGE_AUGMENTATION[2], seed=5)
    for index in range(len(batches)):
        pixels, labels = batches[index]
        out = keras.ops.convert_to_numpy(model(pixels, training=True))
        values = out[:, 0, 0, 0]
        np.testing.assert_allclose(out, np.broadcast_to(values[:, None, None, None], out.shape),
                                   atol=1e-3)
        np.testing.assert_array_equal(np.round(values).astype(int) % 7, labels)


def test_paper_jpeg_round_trip_is_close_to_floored_resize_and_cached(tmp_path, monkeypatch):
    images = _smooth_images(10, seed=6)
    labels = np.arange(10) % 7
    cache = paper_jpeg_cache(images, 96, tmp_path)
    batches = EpochBatches(images, labels, 4, shuffle=False, jpeg=read_jpeg_cache(cache))
    out, out_labels = _epoch(batches)
    floored = np.floor(_bilinear(images.astype(np.float64), 96))
    assert out.shape == (10, 96, 96, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out_labels, labels)
    for channel in range(3):
        assert np.abs(out[..., channel] - floored).mean() < 0.2
        assert np.abs(out[..., channel] - floored).max() <= 2
    # Floor, not round: rounding would sit about 0.5 away on average.
    rounded = np.round(_bilinear(images.astype(np.float64), 96))
    assert np.abs(out[..., 0] - rounded).mean() > 0.3

    written = cache.stat().st_mtime_ns

    def no_encoding(*args, **kwargs):
        raise AssertionError("the JPEG cache was encoded a second time")

    monkeypatch.setattr(pipeline, "preprocessed_batches", no_encoding)
    assert paper_jpeg_cache(images, 96, tmp_path) == cache
    assert list(tmp_path.iterdir()) == [cache] and cache.stat().st_mtime_ns == written
    monkeypatch.undo()

    paper_jpeg_cache(images[:5], 96, tmp_path)
    assert len(list(tmp_path.iterdir())) == 2, "different images must get their own cache file"


def test_host_size_gives_the_other_splits_the_jpeg_batches_size():
    images = _smooth_images(3, seed=8)
    batches = EpochBatches(images, np.zeros(3, int), 3, shuffle=False, host_size=96)
    np.testing.assert_allclose(batches[0][0], preprocess(images, 96), atol=1e-5)


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
        EpochBatches(images, labels, batch_size=1)
