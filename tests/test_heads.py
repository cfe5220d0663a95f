"""Tests of lhc.analysis.heads: correlation between the outputs of the heads (section 2.2)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from lhc.analysis import heads  # noqa: E402
from lhc.data.pipeline import preprocess  # noqa: E402
from lhc.models import build_lhc_net, derive_block_settings, lhc_feature_shapes  # noqa: E402

SHAPE = (48, 48, 3)
NAMES = ("lhc1", "lhc2", "lhc3", "lhc4", "lhc5")


@pytest.fixture(scope="module")
def local_model():
    keras.utils.set_random_seed(0)
    return build_lhc_net(SHAPE)


@pytest.fixture(scope="module")
def global_model():
    keras.utils.set_random_seed(0)
    return build_lhc_net(SHAPE, head_layout="global")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)


def expected_shapes(layout):
    """(n, C, L) per module from the derived block settings and the feature-map sizes."""
    blocks = derive_block_settings(SHAPE)[0]
    return {
        name: (block.num_heads, channels,
               height * width // block.num_heads if layout == "bands" else height * width)
        for name, block, (height, width, channels) in zip(NAMES, blocks, lhc_feature_shapes(SHAPE),
                                                          strict=True)
    }


def test_pearson_matrix_matches_numpy_corrcoef_on_hand_data():
    vectors = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 3.0], [4.0, 3.0, 2.0, 1.0]])
    np.testing.assert_allclose(heads.pearson_matrix(vectors), np.corrcoef(vectors), atol=1e-12)
    # By hand: r(row 0, row 2) = -1; r(row 0, row 1) = (sum of centred products 3) / 5 = 0.6.
    assert heads.pearson_matrix(vectors)[0, 2] == pytest.approx(-1.0)
    assert heads.pearson_matrix(vectors)[0, 1] == pytest.approx(0.6)
    batch = np.random.default_rng(1).normal(size=(3, 4, 10))
    got = heads.pearson_matrix(batch)
    assert got.shape == (3, 4, 4)
    for index in range(3):
        np.testing.assert_allclose(got[index], np.corrcoef(batch[index]), atol=1e-12)


def test_identical_and_affine_heads_correlate_one_and_minus_one():
    base = np.random.default_rng(2).normal(size=(4, 1, 3, 5))
    outputs = np.concatenate([base, base, 2 * base + 5, -base], axis=1)  # (4, 4 heads, 3, 5)
    per_image = heads.per_image_head_correlation(outputs)
    assert per_image.shape == (4, 4, 4)
    np.testing.assert_allclose(per_image[:, 0, 1], 1.0, atol=1e-12)
    np.testing.assert_allclose(per_image[:, 0, 2], 1.0, atol=1e-12)
    np.testing.assert_allclose(per_image[:, 0, 3], -1.0, atol=1e-12)


def test_independent_random_heads_correlate_near_zero():
    num_images, num_heads, channels, band = 20, 6, 8, 50
    outputs = np.random.default_rng(3).normal(size=(num_images, num_heads, channels, band))
    per_image = heads.per_image_head_correlation(outputs)
    off_diagonal = ~np.eye(num_heads, dtype=bool)
    # Under independence r has standard deviation about 1/sqrt(M), M = C*L values per head;
    # the mean over N images about 1/sqrt(N*M). Four standard deviations as the bound.
    values = channels * band
    assert np.abs(per_image[:, off_diagonal]).max() < 4 / np.sqrt(values)
    assert np.abs(per_image.mean(axis=0)[off_diagonal]).max() < 4 / np.sqrt(num_images * values)


def test_constant_head_is_an_error_naming_it():
    outputs = np.random.default_rng(4).normal(size=(3, 2, 2, 4))
    outputs[1, 0] = 0.5
    with pytest.raises(ValueError, match=r"index \(1, 0\).*constant"):
        heads.per_image_head_correlation(outputs)


def test_head_rms_by_hand():
    outputs = np.zeros((1, 2, 2, 2))
    outputs[0, 0] = [[3.0, 4.0], [0.0, 0.0]]  # sqrt((9 + 16) / 4) = 2.5
    outputs[0, 1] = 1.0
    np.testing.assert_allclose(heads.head_rms(outputs), [[2.5, 1.0]])


@pytest.mark.parametrize("layout", ["bands", "global"])
def test_head_outputs_have_the_modules_shapes(layout, local_model, global_model, images):
    model = local_model if layout == "bands" else global_model
    batches = list(heads.head_output_batches(model, images, batch_size=3))
    assert [len(next(iter(batch.values()))) for batch in batches] == [3, 2]
    for name, (num_heads, channels, band) in expected_shapes(layout).items():
        assert batches[0][name].shape == (3, num_heads, channels, band)


def test_band_head_outputs_put_back_are_the_modules_residual_branch(local_model, images):
    """Eq. 17: the heads' bands, put back in reading order, are the module's output minus its
    input (the residual sum), read here from the model's own graph."""
    outputs = heads.head_outputs(local_model, images, batch_size=5)
    x = preprocess(images, 48)
    for name in ("lhc1", "lhc3"):
        layer = local_model.get_layer(name)
        probe = keras.Model(local_model.input, [layer.input, layer.output])
        module_input, module_output = (keras.ops.convert_to_numpy(t) for t in probe(x))
        batch, height, width, channels = module_input.shape
        put_back = np.transpose(outputs[name], (0, 1, 3, 2))  # (B, n, L, C)
        put_back = put_back.reshape(batch, height, width, channels)  # (B, H, W, C)
        np.testing.assert_allclose(put_back, module_output - module_input, rtol=1e-4, atol=1e-3)


def test_head_correlation_statistics(local_model, images):
    result = heads.head_correlation(local_model, images, batch_size=2)
    shapes = expected_shapes("bands")
    assert result.modules == NAMES and result.num_images == 5 and result.layout == "bands"
    total = sum(n for n, _, _ in shapes.values())
    assert result.across.shape == (total, total) and len(result.head_labels) == total
    for name, (num_heads, _, _) in shapes.items():
        matrix = result.within[name]
        assert matrix.shape == (num_heads, num_heads)
        np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-9)
        np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
    rows = {row["module"]: row for row in result.summary()}
    assert rows["lhc1"]["pairs"] == 8 * 7 // 2
    assert rows["all"]["pairs"] == sum(n * (n - 1) // 2 for n, _, _ in shapes.values())
    assert rows["lhc5"]["pairs"] == 0 and np.isnan(rows["lhc5"]["mean_abs_r"])
    upper = np.abs(result.within["lhc2"][np.triu_indices(8, k=1)])
    assert rows["lhc2"]["mean_abs_r"] == pytest.approx(upper.mean())
    assert rows["lhc2"]["max_abs_r"] == pytest.approx(upper.max())


def test_two_global_heads_with_the_same_weights_correlate_one(global_model, images):
    """Global heads all read the whole map: equal embeddings give equal outputs, r = 1."""
    layer = global_model.get_layer("lhc1")
    saved = layer.get_weights()
    try:
        weights = [w.copy() for w in saved]
        names = [w.name for w in layer.weights]
        for key in ("embed_kernel", "embed_bias"):
            weights[names.index(key)][1] = weights[names.index(key)][0]
        layer.set_weights(weights)
        result = heads.head_correlation(global_model, images)
    finally:
        layer.set_weights(saved)
    assert result.within["lhc1"][0, 1] == pytest.approx(1.0, abs=1e-6)
    assert abs(result.within["lhc1"][0, 2]) < 1 - 1e-3


def test_compare_local_global_side_by_side(local_model, global_model, images):
    comparison = heads.compare_local_global(local_model, global_model, images[:3])
    rows = {row["module"]: row for row in comparison["rows"]}
    assert list(rows) == [*NAMES, "all"]
    assert rows["lhc1"]["heads_local"] == rows["lhc1"]["heads_global"] == 8
    local = comparison["local"].module_statistics("lhc2")["mean_abs_r"]
    assert rows["lhc2"]["mean_abs_r_local"] == pytest.approx(local)
    with pytest.raises(ValueError, match="expected 'bands'"):
        heads.compare_local_global(global_model, global_model, images[:3])


def test_figures(local_model, global_model, images):
    import matplotlib.pyplot as plt

    comparison = heads.compare_local_global(local_model, global_model, images[:3])
    fig = heads.module_correlation_figure(comparison["local"], "lhc1")
    assert fig.axes[0].images[0].get_array().shape == (8, 8)
    plt.close(fig)
    fig = heads.all_heads_figure(comparison["local"])
    assert fig.axes[0].images[0].get_array().shape == (32, 32)
    plt.close(fig)
    fig = heads.local_global_figure(comparison)
    assert len(fig.axes[0].patches) == 2 * 6
    # The legend stands outside the axes: it covers neither the 93% line nor a marker.
    fig.canvas.draw()
    axes_box = fig.axes[0].get_window_extent()
    legend_box = fig.axes[0].get_legend().get_window_extent()
    assert legend_box.x0 >= axes_box.x1
    assert not fig.axes[0].texts  # the paper's values are named in the legend
    legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert "paper: Transformer (up to) 93%" in legend and "paper: LHC-Net 63%" in legend
    plt.close(fig)
