"""Tests of lhc.analysis.ablation: switch-off and de-train ablations (paper section 2.2)."""

from __future__ import annotations

import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from lhc.analysis import ablation  # noqa: E402
from lhc.data.pipeline import preprocess  # noqa: E402
from lhc.layers import LHC  # noqa: E402
from lhc.models import (  # noqa: E402
    build_lhc_net,
    build_resnet34v2,
    derive_block_settings,
    transfer_backbone_weights,
)

SHAPE = (48, 48, 3)
NAMES = ("lhc1", "lhc2", "lhc3", "lhc4", "lhc5")


@pytest.fixture(scope="module")
def models():
    """A ResNet34v2 and the LHC-Net built on its weights, as stage 4 starts."""
    keras.utils.set_random_seed(1)
    backbone = build_resnet34v2(SHAPE)
    model = build_lhc_net(SHAPE)
    transfer_backbone_weights(backbone, model)
    return backbone, model


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).uniform(0, 255, (6, *SHAPE)).astype("float32")


def outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def features(model, x):
    """The pooled backbone features: an untrained net's softmax saturates, these do not."""
    return outputs(keras.Model(model.input, model.get_layer("pool1").output), x)


def hand_initial_weights(model, seed=5):
    """Initial weights drawn here, of each module's weight shapes, independent of the layer."""
    rng = np.random.default_rng(seed)
    return {name: [rng.normal(size=weight.shape).astype("float32")
                   for weight in model.get_layer(name).weights] for name in NAMES}


def test_switching_every_module_off_gives_the_backbone_exactly(models, pixels):
    backbone, model = models
    assert not np.allclose(features(model, pixels), features(backbone, pixels))  # modules matter
    ablated = ablation.ablated_copy(model, NAMES, "switch_off")
    np.testing.assert_array_equal(features(ablated, pixels), features(backbone, pixels))
    np.testing.assert_array_equal(outputs(ablated, pixels), outputs(backbone, pixels))


def test_switching_none_off_reproduces_the_model_and_leaves_it_unchanged(models, pixels):
    _, model = models
    expected = features(model, pixels)
    copy = ablation.ablated_copy(model, (), "switch_off")
    np.testing.assert_array_equal(features(copy, pixels), expected)
    ablation.ablated_copy(model, NAMES[:3], "switch_off")
    assert all(model.get_layer(name).enabled for name in NAMES)
    np.testing.assert_array_equal(features(model, pixels), expected)


def test_detrain_restores_the_given_initial_weights_exactly(models):
    _, model = models
    initial = hand_initial_weights(model)
    trained = {name: model.get_layer(name).get_weights() for name in NAMES}
    copy = ablation.ablated_copy(model, ("lhc2", "lhc4"), "detrain", initial_weights=initial)
    for name in NAMES:
        expected = initial[name] if name in ("lhc2", "lhc4") else trained[name]
        for got, want in zip(copy.get_layer(name).get_weights(), expected, strict=True):
            np.testing.assert_array_equal(got, want)
        assert copy.get_layer(name).enabled
    for got, want in zip(model.get_layer("lhc2").get_weights(), trained["lhc2"], strict=True):
        np.testing.assert_array_equal(got, want)


def test_initial_weights_from_a_seed_are_reproducible_and_fresh(models):
    _, model = models
    first = ablation.initial_lhc_weights(model, seed=3)
    again = ablation.initial_lhc_weights(model, seed=3)
    other = ablation.initial_lhc_weights(model, seed=4)
    layer = model.get_layer("lhc1")
    for got, same, different, weight in zip(first["lhc1"], again["lhc1"], other["lhc1"],
                                            layer.weights, strict=True):
        assert got.shape == tuple(weight.shape)
        np.testing.assert_array_equal(got, same)
        if weight.name.endswith("bias"):
            np.testing.assert_array_equal(got, 0.0)  # biases start at zero
        else:
            assert not np.array_equal(got, different)
    assert sorted(first) == sorted(NAMES)


def test_table_has_every_subset_with_heads_counted_from_the_block_settings(models):
    _, model = models
    images = np.random.default_rng(2).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    rows = ablation.ablate(model, images, np.zeros(2, np.int64), initial_weights=7)
    heads = {name: block.num_heads for name, block in
             zip(NAMES, derive_block_settings(SHAPE)[0], strict=True)}
    all_subsets = {frozenset(s) for size in range(6) for s in itertools.combinations(NAMES, size)}
    assert len(rows) == 64
    assert {row["num_images"] for row in rows} == {2}
    for mode in ("switch_off", "detrain"):
        mode_rows = [row for row in rows if row["mode"] == mode]
        assert len(mode_rows) == 32
        assert {frozenset(row["modules_off"]) for row in mode_rows} == all_subsets
        for row in mode_rows:
            assert row["heads_off"] == sum(heads[name] for name in row["modules_off"])
            assert row["heads_total"] == sum(heads.values())
            assert 0.0 <= row["accuracy"] <= 1.0


def tiny_model(enabled=(True, True)):
    """Two LHC modules in a small CNN whose untrained predictions vary from image to image
    (an untrained LHC-Net's softmax saturates on one class)."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv_a")(x)
    x = LHC(4, 4, enabled=enabled[0], name="lhc_a")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv_b")(x)
    x = LHC(2, 4, enabled=enabled[1], name="lhc_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(7, activation="softmax", name="out")(x))


def test_accuracies_match_models_built_by_hand():
    keras.utils.set_random_seed(3)
    model = tiny_model()
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (40, 48, 48), dtype=np.uint8)
    labels = rng.integers(0, 7, 40)
    x = preprocess(images, 16)
    initial = {name: [rng.normal(size=w.shape).astype("float32")
                      for w in model.get_layer(name).weights] for name in ("lhc_a", "lhc_b")}
    rows = ablation.ablate(model, images, labels, initial_weights=initial, batch_size=16)

    expected = {}
    for off in itertools.product((False, True), repeat=2):
        subset = frozenset(name for name, o in zip(("lhc_a", "lhc_b"), off, strict=True) if o)
        switched = tiny_model(enabled=tuple(not o for o in off))
        switched.set_weights(model.get_weights())
        detrained = tiny_model()
        detrained.set_weights(model.get_weights())
        for name in subset:
            detrained.get_layer(name).set_weights(initial[name])
        for mode, hand_built in (("switch_off", switched), ("detrain", detrained)):
            predicted = np.argmax(outputs(hand_built, x), axis=-1)
            expected[(mode, subset)] = np.mean(predicted == labels)
    assert len(set(expected.values())) > 2  # the ablations change predictions
    assert len(rows) == 8
    for row in rows:
        assert row["accuracy"] == pytest.approx(expected[(row["mode"], frozenset(row["modules_off"]))])
        assert row["heads_off"] == {(): 0, ("lhc_a",): 4, ("lhc_b",): 2}.get(row["modules_off"], 6)


def paper_like_rows(tolerance_gap):
    """Rows for the paper's five modules (8, 8, 7, 7, 1 heads): only lhc1 and lhc2 matter."""
    heads = dict(zip(NAMES, (8, 8, 7, 7, 1), strict=True))
    rows = []
    for subset in ablation.module_subsets(NAMES):
        needed_kept = "lhc1" not in subset and "lhc2" not in subset
        rows.append({"mode": "switch_off", "modules_off": subset,
                     "heads_off": sum(heads[name] for name in subset), "heads_total": 31,
                     "accuracy": 0.7339 - (0 if needed_kept else tolerance_gap)})
    return rows


def test_smallest_sufficient_subset_finds_the_papers_first_two_modules():
    result = ablation.smallest_sufficient_subset(paper_like_rows(0.02), "switch_off", 0.005)
    assert result["modules_kept"] == ("lhc1", "lhc2")
    assert result["heads_kept"] == 16 and result["heads_total"] == 31
    # With a tolerance wider than every drop, no module is needed.
    loose = ablation.smallest_sufficient_subset(paper_like_rows(0.02), "switch_off", 0.05)
    assert loose["modules_kept"] == () and loose["heads_kept"] == 0


def test_module_subsets_are_all_subsets_in_size_order():
    subsets = ablation.module_subsets(("a", "b", "c"))
    assert subsets == [(), ("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"),
                       ("a", "b", "c")]


def test_bad_requests_fail_clearly(models):
    backbone, model = models
    images = np.zeros((2, 48, 48), np.uint8)
    labels = np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="has no LHC layers"):
        ablation.ablate(backbone, images, labels, modes=("switch_off",))
    with pytest.raises(ValueError, match="needs initial_weights"):
        ablation.ablate(model, images, labels, modes=("detrain",))
    with pytest.raises(ValueError, match="no LHC module"):
        ablation.ablated_copy(model, ("lhc9",))
    with pytest.raises(ValueError, match="modes must be"):
        ablation.ablate(model, images, labels, modes=("prune",))
    bad = hand_initial_weights(model)
    bad["lhc3"] = bad["lhc3"][:-1]
    with pytest.raises(ValueError, match=r"initial_weights\['lhc3'\]"):
        ablation.ablated_copy(model, ("lhc3",), "detrain", initial_weights=bad)
    del bad["lhc3"]
    with pytest.raises(ValueError, match=r"missing \['lhc3'\]"):
        ablation.ablated_copy(model, ("lhc3",), "detrain", initial_weights=bad)


def test_figures_draw_one_bar_per_combination():
    import matplotlib.pyplot as plt

    rows = paper_like_rows(0.02)
    fig = ablation.ablation_figure(rows, "switch_off")
    assert len(fig.axes[0].patches) == 32
    assert "no error bars" in fig.axes[0].get_title()  # the rows give no num_images
    plt.close(fig)
    fig = ablation.ablation_heads_figure(rows)
    assert len(fig.axes[0].collections[0].get_offsets()) == 32
    plt.close(fig)


def measured_rows(num_images=800, seed=0):
    """Both modes of the paper's five modules, accuracies k/n within a point of each other."""
    heads = dict(zip(NAMES, (8, 8, 7, 7, 1), strict=True))
    rng = np.random.default_rng(seed)
    rows = []
    for mode in ablation.ABLATION_MODES:
        for subset in ablation.module_subsets(NAMES):
            correct = 520 if not subset else int(rng.integers(515, 528))
            rows.append({"mode": mode, "modules_off": subset,
                         "heads_off": sum(heads[name] for name in subset), "heads_total": 31,
                         "accuracy": correct / num_images, "num_images": num_images})
    return rows


def test_ablation_bars_are_differences_to_the_full_model_with_binomial_errors():
    import matplotlib.pyplot as plt
    from matplotlib.container import BarContainer

    rows = measured_rows()
    fig = ablation.ablation_figure(rows, "detrain")
    mode_rows = [row for row in rows if row["mode"] == "detrain"]
    full = mode_rows[0]["accuracy"]
    (bars,) = [item for item in fig.axes[0].containers if isinstance(item, BarContainer)]
    heights = [patch.get_height() for patch in bars.patches]
    np.testing.assert_allclose(heights, [100 * (row["accuracy"] - full) for row in mode_rows])
    # Half the length of each error bar: one standard error, sqrt(p (1 - p) / n), in points.
    segments = bars.errorbar.lines[2][0].get_segments()
    half_lengths = [(segment[1][1] - segment[0][1]) / 2 for segment in segments]
    expected = [100 * (row["accuracy"] * (1 - row["accuracy"]) / 800) ** 0.5
                for row in mode_rows]
    np.testing.assert_allclose(half_lengths, expected)
    centres = [(segment[1][1] + segment[0][1]) / 2 for segment in segments]
    np.testing.assert_allclose(centres, heights, atol=1e-12)
    # The differences span about two points: the axis is scaled to them, not to 0..1.
    low, high = fig.axes[0].get_ylim()
    assert -10 < low < min(heights) and max(heights) < high < 10
    assert "800 images" in " ".join(text.get_text() for text in
                                    fig.axes[0].get_legend().get_texts())
    plt.close(fig)
    assert ablation.accuracy_standard_error(0.5, 100) == pytest.approx(0.05)


def test_heads_figure_shows_both_modes_and_names_the_tolerance():
    import matplotlib.pyplot as plt

    rows = measured_rows()
    fig = ablation.ablation_heads_figure(rows, tolerance=0.005)
    switched_off, detrained = fig.axes[0].collections
    # Hollow de-trained squares under the filled switched-off dots: both stay visible.
    assert switched_off.get_zorder() > detrained.get_zorder()
    assert not np.any(detrained.get_facecolors()[:, 3:])  # no face: "none" or transparent
    assert switched_off.get_facecolors()[:, 3].min() > 0
    assert switched_off.get_sizes()[0] < detrained.get_sizes()[0]
    legend = " ".join(text.get_text() for text in fig.axes[0].get_legend().get_texts())
    assert "minus the 0.5-point tolerance" in legend and "full model's accuracy" in legend
    plt.close(fig)


def test_heatmap_places_each_accuracy_in_its_mode_and_combination():
    import matplotlib.pyplot as plt

    rows = paper_like_rows(0.02)
    rows += [{**row, "mode": "detrain", "accuracy": row["accuracy"] - 0.1} for row in rows]
    fig = ablation.ablation_heatmap(rows)
    matrix = fig.axes[0].images[0].get_array()
    assert matrix.shape == (2, 32)
    subsets = ablation.module_subsets(NAMES)
    for row in rows:
        mode_index = ablation.ABLATION_MODES.index(row["mode"])
        column = subsets.index(tuple(row["modules_off"]))
        assert matrix[mode_index, column] == pytest.approx(row["accuracy"])
    labels = [tick.get_text() for tick in fig.axes[0].get_xticklabels()]
    assert labels[0] == "-" and labels[-1] == "12345" and "12" in labels
    plt.close(fig)
