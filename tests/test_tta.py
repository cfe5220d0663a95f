"""lhc.tta: the protocols' view lists, each transform on a one-pixel dot, batched = looped.

Expected dot positions are derived by hand in the comments from the conventions in the
module docstring (pixel centres at integer indices, row i down, column j right).
"""

from __future__ import annotations

import itertools
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from lhc import tta  # noqa: E402
from lhc.tta import View  # noqa: E402


def dot_image(size: int, row: int, column: int) -> np.ndarray:
    image = np.zeros((1, size, size, 1), dtype="float32")
    image[0, row, column, 0] = 1.0
    return image


def transformed(image: np.ndarray, view: View) -> np.ndarray:
    return np.asarray(tta.apply_views(image, [view]))[0, ..., 0]


def lit_pixels(image: np.ndarray, threshold: float = 1e-4) -> dict[tuple[int, int], float]:
    return {(int(i), int(j)): float(image[i, j]) for i, j in np.argwhere(image > threshold)}


# --- the protocols as data -------------------------------------------------------------------

def batch1_expected() -> list[tuple]:
    # The original's loop nest: rotation, horizontal shift, vertical shift, flip (innermost).
    return [(flip, shift_x, shift_y, rotation)
            for rotation, shift_x, shift_y, flip in itertools.product(
                (0.0, 0.4, -0.4), (0.0, 10.0, -10.0), (0.0, 10.0, -10.0), (False, True))
            if (flip, shift_x, shift_y, rotation) != (False, 0.0, 0.0, 0.0)]


@pytest.mark.parametrize(("name", "batch2_rotation"), [("reference", 0.15), ("paper", 0.4)])
def test_paper_family_view_lists(name, batch2_rotation):
    protocol = tta.PROTOCOLS[name]
    views = protocol.views
    assert len(views) == 1 + 53 + 6 == 60
    assert views[0] == View(weight=3.0)
    assert [view.weight for view in views[1:]] == [1.0] * 59
    assert protocol.divisor_value == 62.0  # (3 * base + 59 views) / 62

    batch1 = views[1:54]
    assert [(v.flip, v.shift_x, v.shift_y, v.rotation) for v in batch1] == batch1_expected()
    assert all(view.zoom == 1.0 for view in batch1)
    # First few by hand: mirror only; then down 10; down 10 and mirrored; up 10; ...
    assert views[1] == View(flip=True)
    assert views[2] == View(shift_y=10.0)
    assert views[3] == View(flip=True, shift_y=10.0)
    assert views[4] == View(shift_y=-10.0)

    batch2 = views[54:]
    assert [(v.zoom, v.rotation, v.flip) for v in batch2] == [
        (0.9, 0.0, False), (0.9, 0.0, True),
        (0.9, batch2_rotation, False), (0.9, batch2_rotation, True),
        (0.9, -batch2_rotation, False), (0.9, -batch2_rotation, True)]
    assert all(v.shift_x == 0 and v.shift_y == 0 for v in batch2)


def test_flip_and_none_protocols():
    assert tta.PROTOCOLS["flip"].views == (View(), View(flip=True))
    assert tta.PROTOCOLS["flip"].divisor_value == 2.0
    assert tta.PROTOCOLS["none"].views == (View(),)
    assert tta.PROTOCOLS["none"].divisor_value == 1.0


def test_custom_protocol_from_dicts():
    protocol = tta.protocol_from_dicts(
        [{"weight": 2}, {"flip": True, "rotation": 0.1}, {"zoom": 0.8, "shift_x": -5}],
        name="mine", divisor=5)
    assert protocol.views == (View(weight=2), View(flip=True, rotation=0.1),
                              View(zoom=0.8, shift_x=-5))
    assert protocol.divisor_value == 5.0
    assert tta.get_protocol([{"flip": True}]).views == (View(flip=True),)


@pytest.mark.parametrize(("views", "message"), [
    ([{"flip": True}, {"shfit_x": 3}], "view 2: unknown key 'shfit_x'"),
    ([{"zoom": 1.5}], "view 1: zoom: expected a central crop fraction in (0, 1]"),
    ([{"zoom": 0}], "view 1: zoom"),
    ([{"flip": "yes"}], "view 1: flip: expected true or false"),
    ([{"weight": 0}], "view 1: weight: expected a positive number"),
    ([{"rotation": float("nan")}], "view 1: rotation: expected a finite number"),
    ([{"shift_y": "10"}], "view 1: shift_y: expected a finite number"),
    (["flip"], "view 1: expected a mapping"),
    ([], "views: expected at least one view"),
])
def test_custom_protocol_errors_name_the_bad_key(views, message):
    with pytest.raises(ValueError, match="'custom'") as error:
        tta.protocol_from_dicts(views)
    assert message in str(error.value)


def test_bad_divisor_and_unknown_name():
    with pytest.raises(ValueError, match="divisor"):
        tta.protocol_from_dicts([{}], divisor=0)
    with pytest.raises(ValueError, match="divisor"):
        tta.protocol_from_dicts([{}], divisor="count")
    with pytest.raises(ValueError, match="unknown TTA protocol 'papr'"):
        tta.get_protocol("papr")


# --- each transform on a one-pixel dot -------------------------------------------------------

def test_flip_mirrors_columns():
    # Column j -> S - 1 - j: at 48, column 20 -> 27; the row stays.
    assert lit_pixels(transformed(dot_image(48, 10, 20), View(flip=True))) == {(10, 27): 1.0}


@pytest.mark.parametrize(("view", "expected"), [
    (View(shift_x=10), (100, 110)),    # right
    (View(shift_x=-10), (100, 90)),    # left
    (View(shift_y=10), (110, 100)),    # down
    (View(shift_y=-10), (90, 100)),    # up
])
def test_shift_at_224_moves_ten_pixels(view, expected):
    assert lit_pixels(transformed(dot_image(224, 100, 100), view)) == pytest.approx({expected: 1.0})


def test_shift_scales_with_input_size_as_an_exact_fraction():
    # 10 px at 224 is 10 * 48 / 224 = 15/7 = 2 + 1/7 px at 48: bilinear sampling puts 6/7 of the
    # dot at column 20 + 2 and 1/7 at 20 + 3. Up by as much: row 10 - 15/7 = 7.857, so 6/7 on
    # row 8 and 1/7 on row 7.
    out = lit_pixels(transformed(dot_image(48, 10, 20), View(shift_x=10)))
    assert out == pytest.approx({(10, 22): 6 / 7, (10, 23): 1 / 7}, abs=1e-5)
    out = lit_pixels(transformed(dot_image(48, 10, 20), View(shift_y=-10)))
    assert out == pytest.approx({(8, 20): 6 / 7, (7, 20): 1 / 7}, abs=1e-5)


def test_quarter_turn_about_the_centre():
    # About c = 23.5 at 48, counter-clockwise on screen: a point right of the centre goes above
    # it. Relative to c, (di, dj) -> (-dj, di), i.e. (i, j) -> (S - 1 - j, i): (10, 20) -> (27, 10);
    # clockwise (i, j) -> (j, S - 1 - i) = (20, 37).
    assert lit_pixels(transformed(dot_image(48, 10, 20), View(rotation=math.pi / 2))) \
        == pytest.approx({(27, 10): 1.0}, abs=1e-4)
    assert lit_pixels(transformed(dot_image(48, 10, 20), View(rotation=-math.pi / 2))) \
        == pytest.approx({(20, 37): 1.0}, abs=1e-4)


def test_small_rotation_moves_the_dot_along_its_circle():
    # Dot 20 px right of the centre (111.5, 111.5) at 224, turned by 0.4 rad counter-clockwise:
    # lands at column 111.5 + 20 cos 0.4 = 129.92, row 111.5 - 20 sin 0.4 = 103.71; the
    # brightest output pixel is the nearest one, (104, 130).
    image = np.zeros((1, 224, 224, 1), dtype="float32")
    image[0, 111:113, 131:133, 0] = 1.0  # a 2x2 dot centred on (111.5, 131.5)
    out = transformed(image, View(rotation=0.4))
    centre_row, centre_col = np.unravel_index(np.argmax(out), out.shape)
    assert abs(centre_row - 103.71) < 1 and abs(centre_col - 129.92) < 1
    rows, cols = np.nonzero(out > 1e-6)
    weights = out[rows, cols]
    assert np.average(rows, weights=weights) == pytest.approx(103.71, abs=0.1)
    assert np.average(cols, weights=weights) == pytest.approx(129.92, abs=0.1)


def test_zoom_moves_the_dot_away_from_the_centre_by_one_over_zoom():
    # At 60, tf.image.central_crop(0.9) starts at int((60 - 54) / 2) = 3 and keeps 54 px; the
    # half-pixel resize back to 60 makes output o sample image coordinate
    # 3 + (o + 0.5) * 54 / 60 - 0.5 = 2.95 + 0.9 o. A dot at 47 (17.5 from the centre 29.5) is
    # hit by o = 48 (46.15: weight 0.15), 49 (47.05: 0.95) and 50 (47.95: 0.05); its centre lands
    # at 29.5 + 17.5 / 0.9 = 48.94. Rows and columns alike, so the weights multiply.
    out = lit_pixels(transformed(dot_image(60, 47, 47), View(zoom=0.9)))
    weights = {48: 0.15, 49: 0.95, 50: 0.05}
    expected = {(i, j): wi * wj for i, wi in weights.items() for j, wj in weights.items()}
    assert out == pytest.approx(expected, abs=1e-5)


def test_zoom_is_tf_central_crop_and_resize_at_224():
    # The original code's two calls, as an independent oracle (a 202-px crop at 224).
    images = np.random.default_rng(1).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    oracle = tf.image.resize(tf.image.central_crop(images, 0.9), (224, 224), method="bilinear")
    np.testing.assert_allclose(tta.apply_views(images, [View(zoom=0.9)]), oracle, atol=1e-4)


def test_order_flip_then_shift_then_rotation():
    # Flip before shift: column 50 -> 173 -> 183 (shift then flip would give 163).
    assert lit_pixels(transformed(dot_image(224, 100, 50), View(flip=True, shift_x=10))) \
        == pytest.approx({(100, 183): 1.0})
    # Shift before rotation: (100, 50) -> (100, 60) -> quarter turn (223 - 60, 100) = (163, 100)
    # (rotation first would give (173, 100) and then (173, 110)).
    assert lit_pixels(transformed(dot_image(224, 100, 50),
                                  View(shift_x=10, rotation=math.pi / 2))) \
        == pytest.approx({(163, 100): 1.0}, abs=1e-4)


def test_views_are_stacked_view_major():
    images = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 1)).astype("float32")
    out = np.asarray(tta.apply_views(images, [View(), View(flip=True)]))
    np.testing.assert_array_equal(out[:3], images)
    np.testing.assert_array_equal(out[3:], images[:, :, ::-1])


# --- batched against looped, weights and divisor, determinism --------------------------------

@pytest.fixture(scope="module")
def small_model():
    """A small classifier with spread-out (not saturated) scores on [0, 255] images."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, strides=2)(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).uniform(0, 255, (5, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize(("protocol", "max_batch"), [
    ("reference", 256),   # 4 images per step, all 60 views in one call
    ("paper", 7),         # one image per step, its views in calls of 7
    ("flip", 3),          # one image per step, 2 views per call
])
def test_batched_equals_looped(small_model, images, protocol, max_batch):
    looped = tta.predict_tta_looped(small_model, images, protocol)
    batched = tta.predict_tta(small_model, images, protocol, max_batch=max_batch)
    assert batched.shape == (5, 7)
    assert np.ptp(batched) > 0.01  # scores are spread, so the comparison means something
    np.testing.assert_allclose(batched, looped, atol=1e-5, rtol=0)
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-5)


def test_weights_and_divisor_applied(small_model, images):
    # (2 * f(x) + 1 * f(mirror x)) / 4, computed from plain predictions.
    protocol = tta.protocol_from_dicts([{"weight": 2}, {"flip": True}], divisor=4)
    expected = (2 * small_model.predict(images, verbose=0)
                + small_model.predict(images[:, :, ::-1].copy(), verbose=0)) / 4
    np.testing.assert_allclose(tta.predict_tta(small_model, images, protocol), expected, atol=1e-6)


def test_dataset_input_and_determinism(small_model, images):
    predictor = tta.TTAPredictor(small_model, "reference", max_batch=128)
    first = predictor(images)
    again = predictor(images)
    labels = np.zeros(len(images), dtype="int64")
    from_dataset = predictor(tf.data.Dataset.from_tensor_slices((images, labels)).batch(2))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(from_dataset, first, atol=1e-6)


def test_max_batch_must_be_positive(small_model):
    with pytest.raises(ValueError, match="max_batch"):
        tta.TTAPredictor(small_model, "flip", max_batch=0)
