"""Attention maps and dynamic scaling (lhc.analysis.attention) on small hand-made models.

Expected values are derived here independently: band positions from the row-major SplitHeads
rule of eqs. 4-6, the head contribution from the layer's own residual (output - input = y,
eq. 17), temperatures from hand-set dynamic-scaling weights (eqs. 13-14), entropies of
hand-written rows, and the softmax limits of eqs. 18-19.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

matplotlib.use("Agg")

from lhc.analysis import attention  # noqa: E402
from lhc.layers import LHC  # noqa: E402

CLASS_NAMES = ("a", "b", "c")


def banded_model(num_heads=4, head_dim=3, scale_exponent=1.0, head_layout="bands"):
    """16x12 image -> stride-2 conv -> 8x6x4 map -> LHC -> 3 classes."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 12, 3))
    features = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv")(inputs)
    attended = LHC(num_heads, head_dim, scale_exponent=scale_exponent, head_layout=head_layout,
                   name="lhc")(features)
    pooled = keras.layers.GlobalAveragePooling2D()(attended)
    outputs = keras.layers.Dense(len(CLASS_NAMES), activation="softmax")(pooled)
    return keras.Model(inputs, outputs)


def direct_model(shape, num_heads, head_dim, scale_exponent=1.0):
    """An LHC layer straight on the input, so its input is known exactly."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input(shape)
    attended = LHC(num_heads, head_dim, scale_exponent=scale_exponent, name="lhc")(inputs)
    outputs = keras.layers.Dense(len(CLASS_NAMES), activation="softmax")(
        keras.layers.Flatten()(attended))
    return keras.Model(inputs, outputs)


def random_images(count, shape=(16, 12, 3), seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, *shape)).astype(np.float32)


def test_shapes_metadata_and_rows_sum_to_one():
    model = banded_model()
    analysis = attention.collect_attention(model, random_images(5), batch_size=2)
    module = analysis["lhc"]
    assert list(analysis.modules) == ["lhc"]
    assert analysis.image_size == (16, 12)
    assert analysis.probabilities.shape == (5, 3)
    assert (module.height, module.width, module.channels) == (8, 6, 4)
    assert (module.num_heads, module.head_dim, module.scale_exponent) == (4, 3, 1.0)
    assert module.weights.shape == (5, 4, 4, 4)
    assert module.scales.shape == (5, 4, 4)
    assert module.head_outputs.shape == (5, 4, 4, 12)  # L = 8*6/4
    # n = 4 divides H = 8: head h owns rows 2h, 2h+1.
    assert module.band_rows == [(0, 2), (2, 4), (4, 6), (6, 8)]
    # The bands are the layer's own (lhc.layers.head_band), not re-derived here.
    assert [module.band(h) for h in range(4)] == [model.get_layer("lhc").band(h) for h in range(4)]
    np.testing.assert_allclose(module.weights.sum(axis=-1), 1.0, atol=1e-5)
    assert np.all(module.weights >= 0)
    np.testing.assert_allclose(analysis.probabilities, model.predict(random_images(5), verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_unknown_layer_is_named():
    with pytest.raises(ValueError, match=r"\['nope'\].*\['lhc'\]"):
        attention.collect_attention(banded_model(), random_images(1), layer_names=["nope"])


def test_grey_uint8_images_are_resized_for_the_model():
    model = direct_model((24, 24, 3), num_heads=4, head_dim=2)
    grey = np.full((2, 48, 48), 7, dtype=np.uint8)
    inputs = attention.model_inputs(model, grey)
    assert inputs.shape == (2, 24, 24, 3) and inputs.dtype == np.float32
    np.testing.assert_allclose(inputs, 7.0)
    with pytest.raises(ValueError, match="do not fit"):
        attention.model_inputs(model, random_images(1))


@pytest.mark.parametrize("head", [0, 2, 3])
def test_contribution_map_is_the_heads_share_of_the_residual(head):
    model = banded_model()
    images = random_images(3, seed=4)
    analysis = attention.collect_attention(model, images)
    contribution = attention.head_contribution_map(analysis, "lhc", head, image_index=1)

    lhc = model.get_layer("lhc")
    taps = keras.Model(model.inputs, [lhc.input, lhc.output])
    layer_input, layer_output = (np.asarray(t, np.float64) for t in taps.predict(images, verbose=0))
    residual_norm = np.linalg.norm(layer_output[1] - layer_input[1], axis=-1)  # (8, 6): |y| eq. 17

    rows = slice(2 * head, 2 * head + 2)  # h*H/n .. (h+1)*H/n with H = 8, n = 4
    expected_mask = np.zeros((8, 6), bool)
    expected_mask[rows] = True
    np.testing.assert_array_equal(contribution.band_mask, expected_mask)
    assert contribution.band_rows == (2 * head, 2 * head + 2)
    np.testing.assert_array_equal(contribution.grid[~expected_mask], 0.0)
    np.testing.assert_allclose(contribution.grid[rows], residual_norm[rows], rtol=1e-4, atol=1e-3)
    assert np.all(contribution.grid[rows] > 0)
    # The 16x12 image: every feature row covers two pixel rows.
    assert contribution.upsampled.shape == (16, 12)
    nonzero_rows = np.flatnonzero(contribution.upsampled.any(axis=1))
    np.testing.assert_array_equal(nonzero_rows, np.arange(4 * head, 4 * head + 4))
    np.testing.assert_array_equal(contribution.upsampled[::2, ::2], contribution.grid)


def test_band_cut_part_way_through_a_row():
    # 4x3 map, 6 heads: L = 2, head 1 sees flat positions 2 and 3 = (0, 2) and (1, 0).
    model = direct_model((4, 3, 5), num_heads=6, head_dim=2)
    analysis = attention.collect_attention(model, random_images(1, (4, 3, 5)))
    contribution = attention.head_contribution_map(analysis, "lhc", 1, 0, reduce="sum")
    expected = np.zeros((4, 3), bool)
    expected[0, 2] = expected[1, 0] = True
    np.testing.assert_array_equal(contribution.band_mask, expected)
    assert contribution.band_rows == (0, 2)
    np.testing.assert_array_equal(contribution.grid[~expected], 0.0)
    head_outputs = analysis["lhc"].head_outputs[0, 1]  # (C, 2)
    np.testing.assert_allclose(contribution.grid[expected], np.abs(head_outputs).sum(axis=0),
                               rtol=1e-6)


def test_global_heads_cover_the_whole_map():
    analysis = attention.collect_attention(banded_model(head_layout="global"), random_images(2))
    contribution = attention.head_contribution_map(analysis, "lhc", 3, 0)
    assert contribution.band_mask.all()
    assert contribution.band_rows == (0, 8)
    assert np.all(contribution.grid > 0)


def test_temperature_is_d_to_the_g_plus_t():
    model = banded_model(head_dim=4, scale_exponent=1.0)
    lhc = model.get_layer("lhc")
    # T = sigmoid(bias) with a zero kernel: 1/2, 3/4, 1/4, 1/2 for the four channels.
    lhc.scale_kernel.assign(np.zeros((4, 4), np.float32))
    lhc.scale_bias.assign(np.array([0.0, math.log(3), -math.log(3), 0.0], np.float32))
    analysis = attention.collect_attention(model, random_images(3))
    module = analysis["lhc"]
    np.testing.assert_allclose(module.scales, np.broadcast_to([0.5, 0.75, 0.25, 0.5], (3, 4, 4)),
                               rtol=1e-6)
    # 4^(1 + T): 4^1.5 = 8, 4^1.75 = 8 sqrt 2, 4^1.25 = 4 sqrt 2.
    expected = np.broadcast_to([8.0, 8 * math.sqrt(2), 4 * math.sqrt(2), 8.0], (3, 4, 4))
    np.testing.assert_allclose(module.temperature(), expected, rtol=1e-5)

    stats = attention.dynamic_scaling_summary(analysis)["lhc"]
    assert stats["rows"] == 3 * 4 * 4
    assert stats["temperature_min"] == pytest.approx(4 * math.sqrt(2), rel=1e-5)
    assert stats["temperature_max"] == pytest.approx(8 * math.sqrt(2), rel=1e-5)
    assert stats["temperature_mean"] == pytest.approx((16 + 12 * math.sqrt(2)) / 4, rel=1e-5)
    assert stats["temperature_median"] == pytest.approx(8.0, rel=1e-5)
    assert stats["temperature_bounds"] == [4.0, 16.0]
    assert stats["transformer_temperature"] == 2.0


def test_normalised_entropy_hand_cases():
    uniform = np.full((2, 5), 0.2)
    one_hot = np.eye(4)
    two_hot = np.array([0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(attention.normalised_row_entropy(uniform), 1.0)
    np.testing.assert_array_equal(attention.normalised_row_entropy(one_hot), 0.0)
    assert attention.normalised_row_entropy(two_hot) == pytest.approx(math.log(2) / math.log(4))
    with pytest.raises(ValueError, match="at least 2"):
        attention.normalised_row_entropy(np.ones((3, 1)))


def test_large_scale_exponent_gives_uniform_rows_eq19():
    # g = 8, d = 4: every temperature exceeds 4^8 = 65536, alpha -> 0.
    model = direct_model((4, 4, 6), num_heads=2, head_dim=4, scale_exponent=8.0)
    images = np.random.default_rng(2).normal(size=(4, 4, 4, 6)).astype(np.float32)
    stats = attention.dynamic_scaling_summary(attention.collect_attention(model, images))["lhc"]
    assert stats["temperature_min"] > 4.0 ** 8
    assert stats["entropy_min"] > 0.999


def test_large_scores_give_one_hot_rows_eq18():
    # g = 0, d = 4 keeps the temperature at most 4; scores of order 1e6 make alpha * S huge.
    model = direct_model((4, 4, 6), num_heads=2, head_dim=4, scale_exponent=0.0)
    images = 1e3 * np.random.default_rng(3).normal(size=(4, 4, 4, 6)).astype(np.float32)
    stats = attention.dynamic_scaling_summary(attention.collect_attention(model, images))["lhc"]
    assert stats["temperature_max"] <= 4.0  # the sigmoid saturates to 1 in float32
    assert stats["entropy_median"] < 0.01


@pytest.mark.parametrize("head_layout", ["bands", "global"])
def test_attention_term_map_is_the_residual_of_eq17(head_layout):
    model = banded_model(head_layout=head_layout)
    images = random_images(2, seed=5)
    analysis = attention.collect_attention(model, images)
    lhc = model.get_layer("lhc")
    taps = keras.Model(model.inputs, [lhc.input, lhc.output])
    layer_input, layer_output = (np.asarray(t, np.float64) for t in taps.predict(images, verbose=0))
    for index in range(2):
        term = attention.attention_term_map(analysis, "lhc", index)
        assert term.shape == (8, 6)
        # The layer returns x + y: the residual is y itself, computed here without the analysis.
        expected = np.linalg.norm(layer_output[index] - layer_input[index], axis=-1)
        np.testing.assert_allclose(term, expected, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="outside the 2 analysed"):
        attention.attention_term_map(analysis, "lhc", 2)


def test_prediction_overlays_figure_names_true_and_predicted_classes():
    model = banded_model()
    images = random_images(3, seed=6)
    analysis = attention.collect_attention(model, images)
    labels = [0, 1, 2]
    fig = attention.prediction_overlays_figure(analysis, images, labels, CLASS_NAMES)
    fig.canvas.draw()
    axes = np.array(fig.axes).reshape(3, 2)  # images x (face, lhc)
    for row in range(3):
        predicted = int(np.argmax(analysis.probabilities[row]))
        title = axes[row, 0].get_title()
        assert f"true {CLASS_NAMES[labels[row]]}" in title
        assert f"predicted {CLASS_NAMES[predicted]}" in title
        shown_map = axes[row, 1].get_images()[-1].get_array()
        np.testing.assert_allclose(shown_map, attention.attention_term_map(analysis, "lhc", row))
    with pytest.raises(ValueError, match="expected the 3 analysed images"):
        attention.prediction_overlays_figure(analysis, images[:2], labels[:2], CLASS_NAMES)


def test_figures_render_headless():
    analysis = attention.collect_attention(banded_model(), random_images(2))
    contribution = attention.head_contribution_map(analysis, "lhc", 1, 0)
    figures = [
        attention.attention_weights_figure(analysis, "lhc", 1, 0),
        attention.scales_figure(analysis, "lhc", 0, head=1),
        attention.overlay_figure(random_images(1)[0], contribution.upsampled,
                                 contribution.band_mask),
        attention.temperature_figure(analysis),
        attention.entropy_figure(analysis),
    ]
    for fig in figures:
        fig.canvas.draw()
    weights_image = figures[0].axes[0].get_images()[0].get_array()
    np.testing.assert_array_equal(weights_image, analysis["lhc"].weights[0, 1])


def hand_analysis(weights, scales):
    """An analysis of one global-head module from hand-written W_h ``(1, n, C, C)``, T_h."""
    _, num_heads, channels, _ = weights.shape
    module = attention.ModuleAttention(
        name="deep", height=2, width=2, channels=channels, num_heads=num_heads, head_dim=8,
        scale_exponent=1.0, head_layout="global", weights=weights.astype(np.float32),
        scales=scales.astype(np.float32),
        head_outputs=np.zeros((1, num_heads, channels, 4), np.float32))
    return attention.AttentionAnalysis(modules={"deep": module}, image_size=(4, 4),
                                       probabilities=np.full((1, 3), 1 / 3, np.float32))


def near_uniform_weights(channels=512, num_heads=2, one_hot_rows=4, seed=0):
    """Rows near 1/C, as in the deepest module, and a few one-hot rows that reach 1."""
    rng = np.random.default_rng(seed)
    weights = np.exp(rng.normal(0, 0.3, (1, num_heads, channels, channels)))
    weights /= weights.sum(axis=-1, keepdims=True)
    for row in range(one_hot_rows):
        weights[0, 0, row] = 0.0
        weights[0, 0, row, row] = 1.0
    return weights


def test_weights_colours_scale_to_the_modules_99th_percentile():
    import matplotlib.pyplot as plt

    weights = near_uniform_weights()
    analysis = hand_analysis(weights, np.full((1, 2, 512), 0.5))
    fig = attention.attention_weights_figure(analysis, "deep", 1, 0)
    image = fig.axes[0].get_images()[0]
    expected = np.quantile(weights[0].astype(np.float32), 0.99)  # over both heads
    assert image.norm.vmin == 0
    assert image.norm.vmax == pytest.approx(expected, rel=1e-6)
    assert 1 / 512 < image.norm.vmax < 0.01  # not the 1.0 of the one-hot rows
    label = fig.axes[1].get_ylabel()
    assert "99th percentile" in label and f"{expected:.2g}" in label and "1/512" in label
    plt.close(fig)


def test_weights_colours_of_one_hot_rows_scale_to_the_maximum():
    import matplotlib.pyplot as plt

    # Every row one-hot: over 99% of the weights are 0, so the percentile would show nothing.
    weights = np.zeros((1, 1, 128, 128))
    weights[0, 0, np.arange(128), (np.arange(128) * 7) % 128] = 1.0
    assert np.quantile(weights, 0.99) == 0
    analysis = hand_analysis(weights, np.full((1, 1, 128), 0.5))
    fig = attention.attention_weights_figure(analysis, "deep", 0, 0)
    assert fig.axes[0].get_images()[0].norm.vmax == 1.0
    assert "maximum" in fig.axes[1].get_ylabel()
    plt.close(fig)


def test_scales_figure_draws_every_heads_values_sorted():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(3)
    scales = rng.uniform(0, 1, (1, 3, 128))
    scales[0, 1, :40] = 1.0  # saturated channels, as trained scales often are
    scales[0, 1, 40:] = 0.0
    analysis = hand_analysis(near_uniform_weights(128, 3), scales)
    fig = attention.scales_figure(analysis, "deep", 0, head=1)
    ax = fig.axes[0]
    drawn = [line for line in ax.lines if len(line.get_ydata())]
    assert len(drawn) == 3
    others = [np.sort(scales[0, head])[::-1] for head in (0, 2)]
    for line, expected in zip(drawn, [*others, np.sort(scales[0, 1])[::-1]], strict=True):
        np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-6)
    # x: the share of channels, 0..1, so 128 and 512 channels read on one axis.
    np.testing.assert_allclose(drawn[-1].get_xdata(), (np.arange(128) + 0.5) / 128)
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend[0] == f"head 1: {40 / 128:.0%} of channels above 0.5"
    plt.close(fig)


class CountingCollector:
    """Wraps an AttentionCollector's collect to count forward passes."""

    def __init__(self, collector):
        self.collect_calls = 0
        self._collect = collector.collect
        collector.collect = self

    def __call__(self, *args, **kwargs):
        self.collect_calls += 1
        return self._collect(*args, **kwargs)


@pytest.mark.parametrize("show_images", [True, False])
def test_explorer_figure_without_display(show_images):
    images = random_images(4)
    explorer = attention.AttentionExplorer(banded_model(), images, np.array([0, 1, 2, 1]),
                                           CLASS_NAMES, show_images=show_images)
    counter = CountingCollector(explorer.collector)
    fig = explorer.figure(2, "lhc", 3)
    fig.canvas.draw()
    assert "true c" in fig._suptitle.get_text()
    overlay_images = fig.axes[0].get_images()
    # With faces: the face and the map; without: the map alone, at feature-map size.
    assert len(overlay_images) == (2 if show_images else 1)
    assert overlay_images[-1].get_array().shape == ((16, 12) if show_images else (8, 6))
    explorer.figure(2, "lhc", 0)
    assert counter.collect_calls == 1  # the second view of image 2 came from the cache


def test_explorer_widget_builds_and_redraws_without_display():
    labels = np.array([0, 1, 0, 1])
    explorer = attention.AttentionExplorer(banded_model(), random_images(4), labels, CLASS_NAMES)
    box = explorer.widget()
    (class_filter, picker, caption), (module, head), picture = (
        box.children[0].children, box.children[1].children, box.children[2])
    assert picture.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert module.options == ("lhc",) and head.max == 3
    first = picture.value
    head.value = 2
    assert picture.value != first
    class_filter.value = 1  # class "b": images 1 and 3
    assert picker.max == 1 and caption.value.startswith("#1 (b)")
    picker.value = 1
    assert caption.value.startswith("#3 (b)")
    class_filter.value = 2  # class "c" has no image
    assert picker.disabled and caption.value == "no image of this class"
