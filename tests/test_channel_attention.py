"""Tests of lhc.channel_attention (SE, CBAM, ECA) and lhc.models.insert_attention (issue #18).

The references below transcribe each paper's equations in numpy, in the papers' own
orientation (``W z`` with ``W`` of shape (out, in), explicit window loops for the
convolutions), and share no code with the layers. Parameter counts are the closed forms,
written out here.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from conftest import randomise_batch_norms

from lhc import evaluation, models
from lhc.channel_attention import CBAM, ECA, SqueezeExcitation, eca_kernel_size
from lhc.layers import LHC

# Keras 3.15 on JAX computes float64 means in float32 (see tests/test_layers.py).
ON_JAX = keras.backend.backend() == "jax"
FLOAT64_ATOL = 1e-7 if ON_JAX else 1e-10

# ---------------------------------------------------------------- numpy transcriptions


def sigmoid(value):
    return 1.0 / (1.0 + np.exp(-value))


def np_se(x, w1, b1, w2, b2, scale):
    """Hu et al. 2018 for one map x (H, W, C); w1 (C/r, C), w2 (C, C/r) as in eq. 3."""
    height, width, _ = x.shape
    z = x.sum(axis=(0, 1)) / (height * width)  # eq. 2, squeeze
    s = sigmoid(w2 @ np.maximum(w1 @ z + b1, 0.0) + b2)  # eq. 3, excitation
    refined = x * s  # eq. 4, x~_c = s_c u_c
    return x + scale * (refined - x)


def np_conv_same(x, kernel, bias):
    """'same' zero-padded stride-1 cross-correlation of (H, W, C_in), kernel (s, s, C_in, C_out)."""
    height, width, _ = x.shape
    size = kernel.shape[0]
    half = size // 2  # odd kernels only: equal padding on both sides
    padded = np.pad(x, ((half, half), (half, half), (0, 0)))
    out = np.zeros((height, width, kernel.shape[3]))
    for i in range(height):
        for j in range(width):
            patch = padded[i : i + size, j : j + size]  # (s, s, C_in)
            out[i, j] = np.tensordot(patch, kernel, axes=([0, 1, 2], [0, 1, 2])) + bias
    return out


def np_cbam(x, w0, b0, w1, b1, spatial_kernel, spatial_bias, scale):
    """Woo et al. 2018 for one map F = x (H, W, C); w0 (C/r, C), w1 (C, C/r) as in eq. 2."""

    def mlp(descriptor):
        return w1 @ np.maximum(w0 @ descriptor + b0, 0.0) + b1

    channel = sigmoid(mlp(x.mean(axis=(0, 1))) + mlp(x.max(axis=(0, 1))))  # eq. 2, M_c
    f1 = channel * x  # eq. 1, F'
    pooled = np.stack([f1.mean(axis=2), f1.max(axis=2)], axis=2)  # [F_avg^s; F_max^s]
    spatial = sigmoid(np_conv_same(pooled, spatial_kernel, spatial_bias))  # eq. 3, (H, W, 1)
    f2 = spatial * f1  # eq. 1, F''
    return x + scale * (f2 - x)


def np_eca(x, taps, scale):
    """Wang et al. 2020 for one map x (H, W, C): w_i = sigmoid(sum_j w^j y_(i+j-half))."""
    y = x.mean(axis=(0, 1))  # GAP
    channels, size = y.size, taps.size
    half = (size - 1) // 2
    weights = np.empty(channels)
    for i in range(channels):
        total = 0.0
        for j in range(size):
            neighbour = i + j - half
            if 0 <= neighbour < channels:  # zero padding beyond the first and last channel
                total += taps[j] * y[neighbour]
        weights[i] = sigmoid(total)
    return x + scale * (weights * x - x)


# ---------------------------------------------------------------- closed forms


def se_params(channels, reduction):
    hidden = channels // reduction
    return 2 * channels * hidden + hidden + channels + 1


def cbam_params(channels, reduction, spatial=7):
    # Shared MLP once, spatial conv 2 maps -> 1 with one bias, residual scale.
    return se_params(channels, reduction) - 1 + 2 * spatial * spatial + 1 + 1


# Hand-computed ECA sizes, gamma = 2, b = 1: t = (log2 C + 1) / 2; truncate, even -> +1.
HAND_ECA_SIZES = {
    1: 1,  # t = 0.5 -> 0 -> 1
    2: 1,  # t = 1
    4: 1,  # t = 1.5 -> 1
    8: 3,  # t = 2 -> 3
    16: 3,  # t = 2.5 -> 2 -> 3
    32: 3,  # t = 3
    64: 3,  # t = 3.5 -> 3
    96: 3,  # log2 96 = 6.585, t = 3.79 -> 3
    128: 5,  # t = 4 -> 5
    192: 5,  # log2 192 = 7.585, t = 4.29 -> 4 -> 5
    256: 5,  # t = 4.5 -> 4 -> 5
    512: 5,  # t = 5
    1024: 5,  # t = 5.5 -> 5
    2048: 7,  # t = 6 -> 7
    4096: 7,  # t = 6.5 -> 6 -> 7
}


def eca_params(channels):
    return HAND_ECA_SIZES[channels] + 1


def lhc_params(height, width, channels, num_heads, head_dim, kernel_size=3, global_heads=False):
    """REFERENCE.md: n*(L*d + d) + (C*C + C) + (s*s*C*C + C), L = H*W/n (H*W if global)."""
    band = height * width if global_heads else height * width // num_heads
    return (num_heads * (band * head_dim + head_dim) + channels * channels + channels
            + kernel_size * kernel_size * channels * channels + channels)


# ---------------------------------------------------------------- helpers


def named_weights(layer):
    return {v.name: v for v in layer.weights}


def randomise(layer, rng, residual_scale=None):
    """Random weights, non-zero biases; ``residual_scale`` kept unless a value is given."""
    for variable in layer.weights:
        if variable.name == "residual_scale":
            if residual_scale is not None:
                variable.assign(residual_scale)
        else:
            variable.assign(rng.normal(0, 0.5, size=variable.shape))


def as_numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


SHAPE = (2, 7, 6, 32)  # B, H, W, C: small, H != W so that a transposed axis shows


@pytest.fixture
def inputs64():
    return np.random.default_rng(0).normal(size=SHAPE)


# ---------------------------------------------------------------- against the papers


@pytest.mark.parametrize("reduction", [4, 16])
@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_se_matches_paper(inputs64, reduction, scale):
    layer = SqueezeExcitation(reduction, identity_start=scale != 1.0, dtype="float64")
    layer.build(SHAPE)
    randomise(layer, np.random.default_rng(1), None if scale == 1.0 else scale)
    w = {name: as_numpy(v) for name, v in named_weights(layer).items()}
    assert float(w["residual_scale"]) == scale  # 1.0: identity_start=False alone sets it
    got = as_numpy(layer(inputs64))
    for b in range(SHAPE[0]):
        expected = np_se(inputs64[b], w["reduce_kernel"].T, w["reduce_bias"],
                         w["expand_kernel"].T, w["expand_bias"], scale)
        np.testing.assert_allclose(got[b], expected, rtol=0, atol=FLOAT64_ATOL)


@pytest.mark.parametrize("reduction,spatial", [(4, 7), (16, 3)])
@pytest.mark.parametrize("scale", [1.0, 0.61])
def test_cbam_matches_paper(inputs64, reduction, spatial, scale):
    layer = CBAM(reduction, spatial_kernel_size=spatial, identity_start=scale != 1.0,
                 dtype="float64")
    layer.build(SHAPE)
    randomise(layer, np.random.default_rng(2), None if scale == 1.0 else scale)
    w = {name: as_numpy(v) for name, v in named_weights(layer).items()}
    assert float(w["residual_scale"]) == scale
    got = as_numpy(layer(inputs64))
    for b in range(SHAPE[0]):
        expected = np_cbam(inputs64[b], w["reduce_kernel"].T, w["reduce_bias"],
                           w["expand_kernel"].T, w["expand_bias"], w["spatial_kernel"],
                           w["spatial_bias"], scale)
        np.testing.assert_allclose(got[b], expected, rtol=0, atol=FLOAT64_ATOL)


@pytest.mark.parametrize("kernel_size", [None, 1, 5])
@pytest.mark.parametrize("scale", [1.0, -0.45])
def test_eca_matches_paper(inputs64, kernel_size, scale):
    layer = ECA(kernel_size, identity_start=scale != 1.0, dtype="float64")
    layer.build(SHAPE)
    assert layer.channel_kernel_size == (kernel_size or HAND_ECA_SIZES[SHAPE[-1]])
    randomise(layer, np.random.default_rng(3), None if scale == 1.0 else scale)
    w = {name: as_numpy(v) for name, v in named_weights(layer).items()}
    assert float(w["residual_scale"]) == scale
    got = as_numpy(layer(inputs64))
    for b in range(SHAPE[0]):
        expected = np_eca(inputs64[b], w["interaction_kernel"].reshape(-1), scale)
        np.testing.assert_allclose(got[b], expected, rtol=0, atol=FLOAT64_ATOL)


def test_se_at_scale_one_is_the_published_block_bit_for_bit():
    # a = 1 must give M(x) bit for bit, not x + (M(x) - x) with its rounding: compare with the
    # same weights' unblended SE block, eqs. 2-4 in keras.ops.
    rng = np.random.default_rng(4)
    x = rng.normal(size=SHAPE).astype("float32")
    layer = SqueezeExcitation(4, identity_start=False)
    layer.build(SHAPE)
    randomise(layer, rng)
    w = {name: as_numpy(v) for name, v in named_weights(layer).items()}
    squeezed = keras.ops.mean(x, axis=(1, 2))
    hidden = keras.ops.relu(keras.ops.matmul(squeezed, w["reduce_kernel"]) + w["reduce_bias"])
    gate = keras.ops.sigmoid(keras.ops.matmul(hidden, w["expand_kernel"]) + w["expand_bias"])
    np.testing.assert_array_equal(as_numpy(layer(x)), as_numpy(x * gate[:, None, None, :]))


@pytest.mark.parametrize("make", [lambda: SqueezeExcitation(4), lambda: CBAM(4),
                                  lambda: ECA()], ids=["se", "cbam", "eca"])
def test_identity_start_returns_input_exactly(make):
    rng = np.random.default_rng(5)
    x = rng.normal(0, 3, size=SHAPE).astype("float32")
    layer = make()
    layer.build(SHAPE)
    assert float(as_numpy(layer.residual_scale)) == 0.0
    randomise(layer, rng)  # every other weight random: only a = 0 makes the identity
    np.testing.assert_array_equal(as_numpy(layer(x)), x)


def test_identity_start_trains_the_scale_first_then_everything():
    # At a = 0 only a has a gradient (dL/da = <g, M(x) - x>); the module weights follow from
    # the second step, once a != 0: the delay the module docstring states.
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 6, 6, 16)).astype("float32")
    target = rng.normal(size=x.shape).astype("float32")
    inputs = keras.Input(x.shape[1:])
    y = SqueezeExcitation(4, name="se")(inputs)
    y = CBAM(4, spatial_kernel_size=3, name="cbam")(y)
    model = keras.Model(inputs, ECA(name="eca")(y))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")

    def weights():
        return {v.path: as_numpy(v).copy() for v in model.trainable_weights}

    start = weights()
    model.train_on_batch(x, target)
    first = weights()
    moved = {path for path in start if not np.array_equal(start[path], first[path])}
    assert moved == {"se/residual_scale", "cbam/residual_scale", "eca/residual_scale"}
    model.train_on_batch(x, target)
    second = weights()
    assert [p for p in start if np.array_equal(first[p], second[p])] == []


# ---------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("channels", [64, 128, 512])
@pytest.mark.parametrize("reduction", [4, 8, 16])
def test_parameter_counts_match_closed_forms(channels, reduction):
    shape = (None, 5, 5, channels)
    se, cbam, eca = SqueezeExcitation(reduction), CBAM(reduction), ECA()
    for layer in (se, cbam, eca):
        layer.build(shape)
    r = reduction
    assert se.count_params() == 2 * channels**2 // r + channels // r + channels + 1
    assert se.count_params() == se_params(channels, r)
    assert cbam.count_params() == se_params(channels, r) - 1 + 2 * 7 * 7 + 1 + 1
    assert cbam.count_params() == cbam_params(channels, r)
    assert eca.count_params() == eca_params(channels)


def test_parameter_counts_small_examples():
    # The docstrings' examples, C = 64: SE r=16 581, CBAM r=16 s=7 680, ECA 4.
    for layer, expected in ((SqueezeExcitation(), 581), (CBAM(), 680), (ECA(), 4)):
        layer.build((None, 3, 3, 64))
        assert layer.count_params() == expected, type(layer).__name__
    cbam = CBAM(spatial_kernel_size=3)
    cbam.build((None, 3, 3, 64))
    assert named_weights(cbam)["spatial_bias"].shape == (1,)
    assert cbam.count_params() == 580 + 2 * 9 + 1 + 1


def test_non_divisible_reduction_floors_the_bottleneck():
    layer = SqueezeExcitation(16)
    layer.build((None, 4, 4, 40))  # floor(40 / 16) = 2 hidden units
    assert named_weights(layer)["reduce_kernel"].shape == (40, 2)
    assert layer.count_params() == 2 * 40 * 2 + 2 + 40 + 1


# ---------------------------------------------------------------- ECA kernel size


def nearest_odd_ties_up(value):
    """|t|_odd by search: the odd k >= 1 nearest to t, the larger on a tie."""
    return min(range(1, 2 * int(value) + 4, 2), key=lambda k: (abs(k - value), -k))


@pytest.mark.parametrize("channels,expected", sorted(HAND_ECA_SIZES.items()))
def test_eca_kernel_size_hand_values(channels, expected):
    assert eca_kernel_size(channels) == expected
    assert nearest_odd_ties_up(abs(math.log2(channels) / 2 + 1 / 2)) == expected


def test_eca_kernel_size_other_gamma_and_b():
    assert eca_kernel_size(64, gamma=1, b=0) == 7  # t = 6 -> 7
    assert eca_kernel_size(32, gamma=1, b=0) == 5  # t = 5
    assert eca_kernel_size(512, gamma=3, b=3) == 5  # t = 4 -> 5
    for channels in range(1, 3000, 7):
        k = eca_kernel_size(channels)
        t = math.log2(channels) / 2 + 0.5
        assert k % 2 == 1 and abs(k - t) <= 1
        assert k == nearest_odd_ties_up(t)


@pytest.mark.parametrize("bad", [0, -4, 2.0, True])
def test_eca_kernel_size_rejects_bad_channels(bad):
    with pytest.raises(ValueError, match="positive integer"):
        eca_kernel_size(bad)


# ---------------------------------------------------------------- serialisation


def test_keras_file_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    inputs = keras.Input((6, 5, 16))
    y = SqueezeExcitation(4, name="se")(inputs)
    y = CBAM(8, spatial_kernel_size=3, identity_start=False, name="cbam")(y)
    outputs = ECA(kernel_size=3, gamma=1.5, b=0.5, name="eca")(y)
    model = keras.Model(inputs, outputs)
    for name, scale in (("se", 0.3), ("cbam", None), ("eca", 0.8)):
        randomise(model.get_layer(name), rng, scale)
    x = rng.normal(size=(2, 6, 5, 16)).astype("float32")
    assert not np.allclose(as_numpy(model(x)), x)
    path = tmp_path / "attention.keras"
    model.save(path)
    restored = keras.models.load_model(path)  # registered: no custom_objects needed
    np.testing.assert_array_equal(as_numpy(restored(x)), as_numpy(model(x)))
    for name in ("se", "cbam", "eca"):
        assert restored.get_layer(name).get_config() == model.get_layer(name).get_config()
    assert type(restored.get_layer("cbam")) is CBAM
    assert restored.get_layer("eca").channel_kernel_size == 3


@pytest.mark.parametrize("make", [
    lambda: SqueezeExcitation(8, identity_start=False, name="a"),
    lambda: CBAM(4, spatial_kernel_size=5, name="b"),
    lambda: ECA(gamma=3.0, b=2.0, identity_start=False, name="c"),
], ids=["se", "cbam", "eca"])
def test_config_round_trip(make):
    rng = np.random.default_rng(8)
    layer = make()
    layer.build((None, 4, 4, 32))
    randomise(layer, rng, 0.5)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone.build((None, 4, 4, 32))
    clone.set_weights(layer.get_weights())
    x = rng.normal(size=(2, 4, 4, 32)).astype("float32")
    np.testing.assert_array_equal(as_numpy(clone(x)), as_numpy(layer(x)))
    # A fresh layer from the config starts where the original did, not where it got to.
    fresh = type(layer).from_config(config)
    fresh.build((None, 4, 4, 32))
    assert float(as_numpy(fresh.residual_scale)) == (0.0 if layer.identity_start else 1.0)


@pytest.mark.parametrize("make,match", [
    (lambda: SqueezeExcitation(0), "reduction must be a positive integer"),
    (lambda: CBAM(4.0), "reduction must be a positive integer"),
    (lambda: CBAM(spatial_kernel_size=6), "spatial_kernel_size must be a positive odd"),
    (lambda: ECA(kernel_size=4), "kernel_size must be a positive odd"),
    (lambda: ECA(gamma=0), "gamma must be a positive number"),
    (lambda: SqueezeExcitation(identity_start="yes"), "identity_start must be True or False"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_input_shapes():
    with pytest.raises(ValueError, match=r"expects a 4D channels-last input"):
        SqueezeExcitation().build((None, 8, 16))
    with pytest.raises(ValueError, match="static positive channel count"):
        ECA().build((None, 4, 4, None))
    with pytest.raises(ValueError, match=r"r=16 leaves floor\(C/r\) = 0 hidden units for C=8"):
        CBAM().build((None, 4, 4, 8))


# ---------------------------------------------------------------- insert_attention

KINDS = ("lhc", "lhc_global", "se", "cbam", "eca", "none")
# Per kind: the settings that make the module start as the identity. LHC's is its zero
# value kernel (lhc.layers.LHC); the others start so by default.
IDENTITY_SETTINGS = {"lhc": {"value_initializer": "zeros"},
                     "lhc_global": {"value_initializer": "zeros"}}
RESNET50V2_AFTER = ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out")
PAPER_TABLE = [(8, 196), (8, 196), (7, 56), (7, 14), (1, 25)]  # (n, d), REFERENCE.md


def probe(model, pooled_name):
    """Features before the classifier and the predictions: saturated softmax cannot hide a fault."""
    tap = keras.Model(model.input, [model.get_layer(pooled_name).output, model.output])
    return lambda x: [as_numpy(t) for t in tap(x)]


def backbone_case(model, pixels, pooled_name, after):
    randomise_batch_norms(model, seed=9)
    expected = probe(model, pooled_name)(pixels)
    assert expected[0].std() > 1e-3  # the features are not degenerate
    return {"model": model, "pixels": pixels, "pooled": pooled_name, "after": after,
            "expected": expected, "params": model.count_params()}


@pytest.fixture(scope="module")
def resnet34v2():
    pixels = np.random.default_rng(10).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    model = models.build_resnet34v2((224, 224, 3), 7)
    return backbone_case(model, pixels, "pool1", None)


@pytest.fixture(scope="module")
def resnet50v2():
    pixels = np.random.default_rng(11).uniform(-1, 1, (2, 224, 224, 3)).astype("float32")
    model = keras.applications.ResNet50V2(weights=None, input_shape=(224, 224, 3), classes=7)
    return backbone_case(model, pixels, "avg_pool", list(RESNET50V2_AFTER))


def expected_module_params(kind, shape, module):
    height, width, channels = shape
    if kind in ("lhc", "lhc_global"):
        return lhc_params(height, width, channels, module.num_heads, module.head_dim,
                          module.kernel_size, global_heads=kind == "lhc_global")
    return {"se": se_params(channels, 16), "cbam": cbam_params(channels, 16),
            "eca": eca_params(channels)}[kind]


@pytest.mark.parametrize("backbone", ["resnet34v2", "resnet50v2"])
@pytest.mark.parametrize("kind", KINDS)
def test_insert_attention_every_kind(request, backbone, kind):
    case = request.getfixturevalue(backbone)
    base = case["model"]
    model = models.insert_attention(base, kind, after=case["after"],
                                    **IDENTITY_SETTINGS.get(kind, {}))
    positions = case["after"] or list(models.LHC_POSITIONS)

    attention = 0
    for name in positions:
        found = [layer for layer in model.layers if layer.name.endswith(f"_after_{name}")]
        if kind == "none":
            assert found == []
            continue
        module = model.get_layer(f"{kind}_after_{name}")
        assert found == [module]
        assert module.input is model.get_layer(name).output
        attention += expected_module_params(kind, tuple(module.input.shape[1:]), module)
    assert model.count_params() == case["params"] + attention
    assert evaluation.parameter_counts(model) == (case["params"] + attention, attention)

    # Identity start: the rebuilt graph with the copied weights reproduces the backbone.
    got = probe(model, case["pooled"])(case["pixels"])
    for value, expected in zip(got, case["expected"], strict=True):
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5)


def test_insert_lhc_kinds_use_the_paper_blocks(resnet34v2):
    # At the paper's positions "lhc" is what build_lhc_net puts there: the paper's table,
    # 4,805,444 parameters (REFERENCE.md); "lhc_global" the same settings, global heads.
    base = resnet34v2["model"]
    lhc = models.insert_attention(base, "lhc")
    modules = [lhc.get_layer(f"lhc_after_{name}") for name in models.LHC_POSITIONS]
    assert [(m.num_heads, m.head_dim) for m in modules] == PAPER_TABLE
    assert all(m.head_layout == "bands" and m.value_initializer == "glorot_uniform"
               for m in modules)
    assert evaluation.parameter_counts(lhc)[1] == 4_805_444
    # Every former consumer reads the module's output.
    assert lhc.get_layer("stage1_unit1_bn1").input is modules[0].output
    global_arm = models.insert_attention(base, "lhc_global", after=["stage4_unit3_add"],
                                         num_heads=2)
    module = global_arm.get_layer("lhc_global_after_stage4_unit3_add")
    assert (module.head_layout, module.num_heads, module.head_dim) == ("global", 2, 25)


def tiny_cnn():
    inputs = keras.Input((12, 10, 3))
    x = keras.layers.Conv2D(16, 3, name="conv_a")(inputs)
    x = keras.layers.Activation("relu", name="relu_a")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="tiny")


def test_insert_attention_passes_settings_and_derives_lhc():
    base = tiny_cnn()
    se = models.insert_attention(base, "se", after=["conv_a", "conv_b"], reduction=8)
    assert [se.get_layer(f"se_after_{n}").reduction for n in ("conv_a", "conv_b")] == [8, 8]
    assert se.count_params() == base.count_params() + se_params(16, 8) + se_params(32, 8)
    cbam = models.insert_attention(base, "cbam", after=["conv_b"], spatial_kernel_size=3,
                                   identity_start=False)
    assert float(as_numpy(cbam.get_layer("cbam_after_conv_b").residual_scale)) == 1.0
    eca = models.insert_attention(base, "eca", after=["conv_a"], kernel_size=5)
    assert eca.get_layer("eca_after_conv_a").channel_kernel_size == 5
    # Not a paper position: settings derived as insert_lhc derives them.
    lhc = models.insert_attention(base, "lhc", after=["conv_b"])
    reference = models.insert_lhc(base, after=["conv_b"])
    ours, theirs = lhc.get_layer("lhc_after_conv_b"), reference.get_layer("lhc_after_conv_b")
    assert (ours.num_heads, ours.head_dim) == (theirs.num_heads, theirs.head_dim)
    copy = models.insert_attention(base, "none", after=["conv_a"])
    assert copy is not base and copy.count_params() == base.count_params()
    x = np.random.default_rng(12).normal(size=(2, 12, 10, 3)).astype("float32")
    np.testing.assert_array_equal(as_numpy(copy(x)), as_numpy(base(x)))
    assert evaluation.parameter_counts(copy) == (base.count_params(), 0)


def test_insert_attention_errors():
    base = tiny_cnn()
    with pytest.raises(ValueError, match=r"unknown attention kind 'sa'.*'lhc'.*'lhc_global'.*"
                                         r"'se'.*'cbam'.*'eca'.*'none'"):
        models.insert_attention(base, "sa", after=["conv_a"])
    # The default positions are ResNet34v2's: another CNN must name its layers.
    with pytest.raises(ValueError, match=r"no layer\(s\) \['pooling0'"):
        models.insert_attention(base, "se")
    with pytest.raises(ValueError, match=r"no layer\(s\) \['conv9'\]"):
        models.insert_attention(base, "eca", after=["conv9"])
    with pytest.raises(ValueError, match="static"):
        models.insert_attention(base, "se", after=["pool"])
    with pytest.raises(ValueError, match="functional"):
        models.insert_attention(keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)]),
                                "se", after=["conv2d"])
    with pytest.raises(ValueError, match="head_layout"):
        models.insert_attention(base, "lhc", after=["conv_b"], head_layout="global")


def test_insert_lhc_keeps_its_behaviour():
    # The graph rebuilding is shared with insert_attention now; insert_lhc's contract is not.
    base = tiny_cnn()
    model = models.insert_lhc(base, after=["conv_b"], settings=[models.LHCBlockSettings(2, 5)])
    module = model.get_layer("lhc_after_conv_b")
    assert (module.num_heads, module.head_dim) == (2, 5)
    assert model.get_layer("pool").input is module.output
    with pytest.raises(ValueError, match=r"insert_lhc needs a functional"):
        models.insert_lhc(keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)]),
                          after=["conv2d"])
    with pytest.raises(ValueError, match="LHC needs a static"):
        models.insert_lhc(base, after=["pool"])
    with pytest.raises(ValueError, match="1 entries but after names 2"):
        models.insert_lhc(base, after=["conv_a", "conv_b"], settings=[models.LHCBlockSettings(1, 8)])
    assert isinstance(module, LHC)
