"""Tests of lhc.layers.LHC against an independent numpy transcription of eqs. 1-17.

The reference below follows the paper literally: one loop iteration per head, each head's
tensors in the paper's (C, H*W/n) layout, explicit window loops for the pooling and the
convolution. It shares no code with the layer.
"""

import math

import keras
import numpy as np
import pytest

from lhc.layers import LHC, head_band

# float64 agreement with the transcription. On JAX (x64 enabled) Keras 3.15's ops.mean
# computes float64 in float32, which costs about 1e-8 through eq. 12: that backend alone gets
# 1e-7, still far inside the 1e-5.
ON_JAX = keras.backend.backend() == "jax"
FLOAT64_ATOL = 1e-7 if ON_JAX else 1e-10
# The LHC-NetC gate check compares two runs of the same float64 layer: exact but for rounding.
GATE_FLOAT64_ATOL = 1e-7 if ON_JAX else 1e-12

# ---------------------------------------------------------------- numpy transcription


def _pad_amounts(window):
    # 'same' padding with stride 1: total window-1, the odd cell after (TF/Keras rule).
    return (window - 1) // 2, window - 1 - (window - 1) // 2


def np_pool(x, window, reduce):
    """'same' stride-1 pooling of (H, W, C) over valid cells only (no padded zeros)."""
    height, width, _ = x.shape
    before, after = _pad_amounts(window)
    out = np.empty_like(x)
    for i in range(height):
        for j in range(width):
            rows = slice(max(i - before, 0), min(i + after, height - 1) + 1)
            cols = slice(max(j - before, 0), min(j + after, width - 1) + 1)
            out[i, j] = reduce(x[rows, cols].reshape(-1, x.shape[2]), axis=0)
    return out


def np_conv_same(x, kernel, bias):
    """'same' stride-1 cross-correlation of (H, W, C) with kernel (s, s, C, C_out)."""
    height, width, _ = x.shape
    size = kernel.shape[0]
    before, after = _pad_amounts(size)
    padded = np.pad(x, ((before, after), (before, after), (0, 0)))
    out = np.zeros((height, width, kernel.shape[3]))
    for i in range(height):
        for j in range(width):
            patch = padded[i : i + size, j : j + size]  # (s, s, C)
            out[i, j] = np.tensordot(patch, kernel, axes=([0, 1, 2], [0, 1, 2])) + bias
    return out


def np_split_heads(tensor, num_heads):
    """Eqs. 4-6: (H, W, C) -> list of n arrays (C, H*W/n), horizontal bands."""
    channels = tensor.shape[2]
    flat = tensor.reshape(-1, channels).T  # (C, H*W), row-major flattening
    return np.split(flat, num_heads, axis=1)


def np_global_heads(tensor, num_heads):
    """Section 2.2's global arm: every head gets the whole map, (C, H*W)."""
    return [tensor.reshape(-1, tensor.shape[2]).T] * num_heads


def np_lhc(x, weights, num_heads, head_dim, pool_size, scale_exponent, gate=None,
           pool=np_pool, conv=np_conv_same, global_heads=False):
    """Eqs. 1-17 for one image x (H, W, C); returns output and per-head W, T, A."""
    height, width, channels = x.shape
    queries = pool(x, pool_size, np.mean)  # eq. 1
    keys = pool(x, pool_size, np.max)  # eq. 2
    values = pool(conv(x, weights["value_kernel"], weights["value_bias"]), 3, np.mean)  # eq. 3
    split = np_global_heads if global_heads else np_split_heads
    heads_out, all_w, all_t = [], [], []
    for h, (q_h, k_h, v_h) in enumerate(
        zip(
            split(queries, num_heads),
            split(keys, num_heads),
            split(values, num_heads),
            strict=True,
        )
    ):
        w1, b1 = weights["embed_kernel"][h], weights["embed_bias"][h]
        q_t = q_h @ w1 + b1  # eq. 9, (C, d)
        k_t = k_h @ w1 + b1  # eq. 10
        s_h = q_t @ k_t.T  # eq. 11, (C, C)
        s_mean = s_h.mean(axis=1)  # eq. 12
        t_h = 1 / (1 + np.exp(-(s_mean @ weights["scale_kernel"] + weights["scale_bias"])))  # eq. 13
        n_h = np.empty_like(s_h)
        for i in range(channels):
            n_h[i] = s_h[i] / head_dim ** (scale_exponent + t_h[i])  # eq. 14
        e = np.exp(n_h - n_h.max(axis=1, keepdims=True))
        w_h = e / e.sum(axis=1, keepdims=True)  # eq. 15
        heads_out.append(w_h @ v_h)  # eq. 16, (C, H*W/n)
        all_w.append(w_h)
        all_t.append(t_h)
    if global_heads:  # overlapping full-map heads are averaged
        y = np.mean(heads_out, axis=0).T.reshape(height, width, channels)
    else:
        y = np.concatenate(heads_out, axis=1).T.reshape(height, width, channels)  # eq. 17
    factor = 1.0 if gate is None else 1 + math.tanh(gate)
    return x + factor * y, np.stack(all_w), np.stack(all_t), np.stack(heads_out)


def _weights_as_numpy(layer):
    return {v.name: keras.ops.convert_to_numpy(v) for v in layer.weights}


def _randomise(layer, rng, scale=0.3):
    # Non-zero biases too, so that every term of the equations is exercised.
    for variable in layer.weights:
        variable.assign(rng.normal(0, scale, size=variable.shape))


# ---------------------------------------------------------------- equivalence

CASES = [
    # (H, W, C, n, d, p, s, g)
    (4, 4, 3, 1, 5, 3, 3, 1.0),
    (6, 4, 5, 3, 4, 3, 1, 0.5),
    (5, 6, 4, 6, 3, 2, 3, 1.0),  # even pool size: asymmetric 'same' padding
    (7, 7, 6, 7, 8, 5, 3, 0.0),
    (4, 6, 2, 4, 2, 3, 5, 2.0),
]


@pytest.mark.parametrize("height,width,channels,num_heads,head_dim,pool,kernel,g", CASES)
def test_matches_numpy_transcription(height, width, channels, num_heads, head_dim, pool, kernel, g):
    rng = np.random.default_rng(height * 100 + channels)
    layer = LHC(num_heads, head_dim, pool_size=pool, kernel_size=kernel, scale_exponent=g,
                dtype="float64")
    x = rng.normal(0, 1, size=(2, height, width, channels))
    layer.build(x.shape)
    _randomise(layer, rng)
    out, analysis = layer(x, return_attention=True)
    weights = _weights_as_numpy(layer)
    for b in range(2):
        ref_out, ref_w, ref_t, ref_a = np_lhc(x[b], weights, num_heads, head_dim, pool, g)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out[b]), ref_out, atol=FLOAT64_ATOL)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(analysis["weights"][b]), ref_w,
                                   atol=FLOAT64_ATOL)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(analysis["scales"][b]), ref_t,
                                   atol=FLOAT64_ATOL)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(analysis["head_outputs"][b]), ref_a,
                                   atol=FLOAT64_ATOL)


@pytest.mark.parametrize("height,width,channels,num_heads,head_dim", [(4, 4, 3, 3, 5),
                                                                      (5, 3, 4, 2, 4)])
def test_global_head_layout_matches_transcription(height, width, channels, num_heads, head_dim):
    # (4, 4) with 3 heads: global heads need no divisibility.
    rng = np.random.default_rng(7)
    layer = LHC(num_heads, head_dim, head_layout="global", dtype="float64")
    x = rng.normal(size=(2, height, width, channels))
    layer.build(x.shape)
    _randomise(layer, rng)
    assert tuple(layer.embed_kernel.shape) == (num_heads, height * width, head_dim)
    out, analysis = layer(x, return_attention=True)
    weights = _weights_as_numpy(layer)
    for b in range(2):
        ref_out, ref_w, _, ref_a = np_lhc(x[b], weights, num_heads, head_dim, 3, 1.0,
                                          global_heads=True)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out[b]), ref_out, atol=FLOAT64_ATOL)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(analysis["weights"][b]), ref_w,
                                   atol=FLOAT64_ATOL)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(analysis["head_outputs"][b]),
                                   ref_a, atol=FLOAT64_ATOL)


def test_unknown_head_layout():
    with pytest.raises(ValueError, match="head_layout must be one of"):
        LHC(2, 3, head_layout="diagonal")


# The five blocks of the paper (section 3 table) at 224x224, batch 2, in float32: the
# embeddings sum L = H*W/n up to 392 products, scores another d up to 196, so relative
# float32 round-off of ~1e-6 on O(1) outputs bounds the error well below 1e-5 after the
# softmax (whose inputs are scaled by d^-(g+T) <= 1/d).
PAPER_BLOCKS = [
    (56, 56, 64, 8, 196),
    (56, 56, 64, 8, 196),
    (28, 28, 128, 7, 56),
    (14, 14, 256, 7, 14),
    (7, 7, 512, 1, 25),
]


@pytest.mark.parametrize("height,width,channels,num_heads,head_dim", PAPER_BLOCKS)
def test_paper_blocks_match_transcription(height, width, channels, num_heads, head_dim):
    rng = np.random.default_rng(channels + num_heads)
    layer = LHC(num_heads, head_dim)
    x = rng.uniform(0, 1, size=(2, height, width, channels)).astype("float32")
    out = keras.ops.convert_to_numpy(layer(x))
    weights = {k: v.astype("float64") for k, v in _weights_as_numpy(layer).items()}
    for b in range(2):
        ref_out = _fast_reference(x[b].astype("float64"), weights, num_heads, head_dim)
        assert np.max(np.abs(out[b] - ref_out)) < 1e-5


def _fast_reference(x, weights, num_heads, head_dim):
    """np_lhc with the window loops vectorised as shifted-window sums (big paper blocks).

    Only pooling and convolution change; the head logic is the per-head loop of np_lhc.
    """
    def shifted(t, window, fill):
        before, after = _pad_amounts(window)
        padded = np.pad(t, ((before, after), (before, after), (0, 0)), constant_values=fill)
        return [padded[i : i + t.shape[0], j : j + t.shape[1]]
                for i in range(window) for j in range(window)]

    def pool(t, window, reduce):
        # NaN padding drops padded cells from both the mean and the max.
        stacked = np.stack(shifted(t, window, np.nan))
        return np.nanmean(stacked, axis=0) if reduce is np.mean else np.nanmax(stacked, axis=0)

    def conv(t, kernel, bias):
        size = kernel.shape[0]
        windows = shifted(t, size, 0.0)
        return sum(windows[i * size + j] @ kernel[i, j]
                   for i in range(size) for j in range(size)) + bias

    return np_lhc(x, weights, num_heads, head_dim, 3, 1.0, pool=pool, conv=conv)[0]


# ---------------------------------------------------------------- hand-computed cases


@pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1")  # C = 1 on purpose
def test_single_head_single_channel_is_pooled_convolution():
    # C = 1: softmax over one score is 1, so A = v and the output is x + AvgPool3(w x + b).
    layer = LHC(num_heads=1, head_dim=2, pool_size=3, kernel_size=1, dtype="float64")
    x = np.arange(1, 10, dtype="float64").reshape(1, 3, 3, 1)
    layer.build(x.shape)
    layer.value_kernel.assign(np.full((1, 1, 1, 1), 2.0))
    layer.value_bias.assign(np.array([1.0]))
    # conv = 2x + 1 = [[3,5,7],[9,11,13],[15,17,19]]; 3x3 'same' means over valid cells:
    pooled = np.array([[7, 8, 9], [10, 11, 12], [13, 14, 15]], dtype="float64")
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out[0, :, :, 0], x[0, :, :, 0] + pooled)


def test_constant_input_gives_uniform_attention():
    # Every channel and position equal: all q~ rows equal, all k~ rows equal, so each row of
    # S_h is constant and softmax is uniform, 1/C.
    channels = 4
    layer = LHC(num_heads=2, head_dim=3)
    x = np.full((1, 4, 4, channels), 0.7, dtype="float32")
    _, analysis = layer(x, return_attention=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(analysis["weights"]), 1 / channels,
                               atol=1e-7)


def test_large_g_flattens_softmax_eq19():
    # g -> infinity sends alpha = d^-(g+T) -> 0: W tends to uniform (eq. 19).
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, size=(1, 4, 4, 5)).astype("float32")
    sharp = LHC(num_heads=2, head_dim=8, scale_exponent=0.0)
    flat = LHC(num_heads=2, head_dim=8, scale_exponent=12.0)
    sharp.build(x.shape)
    flat.build(x.shape)
    _randomise(sharp, rng, scale=1.0)
    flat.set_weights(sharp.get_weights())
    w_sharp = keras.ops.convert_to_numpy(sharp(x, return_attention=True)[1]["weights"])
    w_flat = keras.ops.convert_to_numpy(flat(x, return_attention=True)[1]["weights"])
    assert np.max(np.abs(w_flat - 1 / 5)) < 1e-6
    assert np.max(np.abs(w_sharp - 1 / 5)) > 1e-2


def test_scales_are_sigmoid_outputs():
    rng = np.random.default_rng(1)
    layer = LHC(num_heads=4, head_dim=3)
    _, analysis = layer(rng.normal(size=(2, 4, 4, 3)).astype("float32"), return_attention=True)
    scales = keras.ops.convert_to_numpy(analysis["scales"])
    assert scales.shape == (2, 4, 3)
    assert np.all((scales > 0) & (scales < 1))


# ---------------------------------------------------------------- gate, switch-off, shapes


def test_gate_scales_attention_lhcnetc():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 4, 4, 3))
    plain = LHC(2, 3, dtype="float64")
    gated = LHC(2, 3, gate_init=-1.0, dtype="float64")
    plain.build(x.shape)
    gated.build(x.shape)
    _randomise(plain, rng)
    gated.set_weights(plain.get_weights() + [np.array(-1.0)])
    attention = keras.ops.convert_to_numpy(plain(x)) - x
    expected = x + (1 + math.tanh(-1.0)) * attention
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gated(x)), expected,
                               atol=GATE_FLOAT64_ATOL)
    assert float(keras.ops.convert_to_numpy(gated.gate)) == -1.0


def test_disabled_layer_is_identity_but_keeps_weights():
    x = np.random.default_rng(3).normal(size=(2, 4, 4, 3)).astype("float32")
    layer = LHC(2, 3, enabled=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x)
    assert len(layer.weights) == 6


def test_zero_value_init_starts_as_identity_then_trains():
    # V = 0 gives A_h = W_h V_h = 0 (eq. 16): the output is x. The loss gradient reaches
    # only the value weights through dA/dV = W; every other weight's gradient passes through
    # dA/dW = V = 0. So plain SGD moves only the value kernel and bias on the first step,
    # and everything from the second on.
    rng = np.random.default_rng(11)
    x = rng.normal(size=(4, 4, 4, 3)).astype("float32")
    target = rng.normal(size=x.shape).astype("float32")
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, LHC(2, 3, value_initializer="zeros", name="lhc_id")(inputs))
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    layer = model.get_layer("lhc_id")

    def weights():
        return {v.name: keras.ops.convert_to_numpy(v).copy() for v in layer.trainable_weights}

    start = weights()
    model.train_on_batch(x, target)
    first = weights()
    moved = {name for name in start if not np.array_equal(start[name], first[name])}
    assert moved == {"value_kernel", "value_bias"}
    model.train_on_batch(x, target)
    second = weights()
    assert all(not np.array_equal(first[name], second[name]) for name in start), sorted(
        name for name in start if np.array_equal(first[name], second[name]))
    config = LHC(2, 3, value_initializer="zeros").get_config()
    rebuilt = LHC.from_config(config)
    rebuilt.build((None, 4, 4, 3))
    assert not np.any(keras.ops.convert_to_numpy(rebuilt.value_kernel))


def test_parameter_count_matches_reference_formula():
    height, width, channels, num_heads, head_dim, kernel = 6, 4, 5, 3, 4, 3
    layer = LHC(num_heads, head_dim, kernel_size=kernel)
    layer.build((None, height, width, channels))
    band = height * width // num_heads
    expected = (num_heads * (band * head_dim + head_dim) + channels * channels + channels
                + kernel * kernel * channels * channels + channels)
    assert layer.count_params() == expected


def test_output_shape_in_functional_model():
    inputs = keras.Input((8, 8, 4))
    outputs = LHC(4, 6)(inputs)
    assert tuple(outputs.shape) == (None, 8, 8, 4)


# ---------------------------------------------------------------- band geometry (eq. 17)


def test_head_bands_match_hand_derived_case():
    # A 4x6 map flattened row-major has 24 positions; 3 local heads cut it into chunks of
    # L = 8 (eqs. 4-6): head 0 sees row 0 and the first two cells of row 1, and so on.
    assert [head_band(h, 3, 4, 6, "bands") for h in range(3)] == [(0, 8), (8, 16), (16, 24)]
    assert [head_band(h, 3, 4, 6, "global") for h in range(3)] == [(0, 24)] * 3
    for layout, bands in (("bands", [(0, 8), (8, 16), (16, 24)]), ("global", [(0, 24)] * 3)):
        layer = LHC(num_heads=3, head_dim=2, head_layout=layout, name=f"lhc_{layout}")
        with pytest.raises(ValueError, match=f"lhc_{layout}.*not built"):
            layer.band(0)
        layer.build((None, 4, 6, 5))
        assert [layer.band(h) for h in range(3)] == bands
        assert all(stop - start == layer.band_size for start, stop in bands)


def test_head_band_errors():
    with pytest.raises(ValueError, match=r"head must lie in 0\.\.2, got 3"):
        head_band(3, 3, 4, 6)
    with pytest.raises(ValueError, match=r"head must lie in 0\.\.2, got -1"):
        head_band(-1, 3, 4, 6, "global")
    with pytest.raises(ValueError, match="head_layout must be one of"):
        head_band(0, 3, 4, 6, "rows")
    with pytest.raises(ValueError, match=r"H\*W = 4\*4 = 16 is not divisible by num_heads=5"):
        head_band(0, 5, 4, 4)


# ---------------------------------------------------------------- errors


def test_indivisible_map_names_layer_and_sizes():
    layer = LHC(num_heads=5, head_dim=3, name="lhc_bad")
    with pytest.raises(ValueError, match=r"lhc_bad.*H\*W = 4\*4 = 16.*num_heads=5"):
        layer.build((None, 4, 4, 3))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_heads": 0, "head_dim": 3}, "num_heads must be a positive integer"),
        ({"num_heads": 2, "head_dim": -1}, "head_dim must be a positive integer"),
        ({"num_heads": 2, "head_dim": 3, "pool_size": 0}, "pool_size"),
        ({"num_heads": 2, "head_dim": 3, "kernel_size": 2.5}, "kernel_size"),
        ({"num_heads": 2, "head_dim": 3, "scale_exponent": -1}, "scale_exponent"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LHC(**kwargs)


def test_wrong_rank_and_unknown_sizes():
    with pytest.raises(ValueError, match="4D channels-last"):
        LHC(2, 3).build((None, 16, 3))
    with pytest.raises(ValueError, match="static positive H, W and C"):
        LHC(2, 3).build((None, None, 4, 3))


# ---------------------------------------------------------------- gradients, serialisation


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="uses tf.GradientTape")
def test_every_weight_gets_a_nonzero_gradient():
    import tensorflow as tf

    rng = np.random.default_rng(4)
    layer = LHC(2, 3, gate_init=0.5)
    x = tf.constant(rng.normal(size=(2, 4, 4, 3)).astype("float32"))
    layer.build(x.shape)
    _randomise(layer, rng)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.sin(layer(x)))
    grads = tape.gradient(loss, layer.trainable_weights)
    for variable, grad in zip(layer.trainable_weights, grads, strict=True):
        assert grad is not None, variable.name
        assert float(tf.reduce_max(tf.abs(grad))) > 0, variable.name


def test_keras_file_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    inputs = keras.Input((6, 4, 5))
    outputs = LHC(3, 4, pool_size=2, kernel_size=1, scale_exponent=0.5, gate_init=-0.5,
                  name="lhc_rt")(inputs)
    model = keras.Model(inputs, outputs)
    _randomise(model.get_layer("lhc_rt"), rng)
    x = rng.normal(size=(2, 6, 4, 5)).astype("float32")
    path = tmp_path / "lhc.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), restored.predict(x, verbose=0))
    config = restored.get_layer("lhc_rt").get_config()
    assert (config["num_heads"], config["head_dim"], config["pool_size"], config["kernel_size"],
            config["scale_exponent"], config["gate_init"]) == (3, 4, 2, 1, 0.5, -0.5)


def test_mixed_bfloat16_close_to_float32():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 8, 8, 16)).astype("float32")
    reference = LHC(4, 8)
    reference.build(x.shape)
    low = LHC(4, 8, dtype="mixed_bfloat16")
    low.build(x.shape)
    low.set_weights(reference.get_weights())
    out_ref = keras.ops.convert_to_numpy(reference(x))
    out_low = keras.ops.convert_to_numpy(keras.ops.cast(low(x), "float32"))
    # bf16 keeps 8 significant bits: relative error about 2^-8 per operation.
    assert np.max(np.abs(out_low - out_ref)) < 0.05 * np.max(np.abs(out_ref))


def test_mixed_bfloat16_wide_rows_keep_every_weight():
    # A 7x7x512 map with one head (the paper's fifth block): each softmax row has 512
    # near-equal terms of about 1/512. A bf16 running sum would stall once its ulp exceeds
    # twice a term and miss most of them; the weights must still sum to 1 and match float32.
    rng = np.random.default_rng(7)
    x = 0.1 * rng.normal(size=(2, 7, 7, 512)).astype("float32")
    reference = LHC(1, 25)
    reference.build(x.shape)
    low = LHC(1, 25, dtype="mixed_bfloat16")
    low.build(x.shape)
    low.set_weights(reference.get_weights())
    _, ref_analysis = reference(x, return_attention=True)
    _, low_analysis = low(x, return_attention=True)
    ref_weights = keras.ops.convert_to_numpy(ref_analysis["weights"])
    low_weights = keras.ops.convert_to_numpy(keras.ops.cast(low_analysis["weights"], "float32"))
    assert ref_weights.min() < 1.5 / 512  # the rows really are near-uniform
    np.testing.assert_allclose(low_weights.sum(axis=-1), 1.0, atol=0.01)
    # Each weight is one bf16 rounding (2^-9) of its scores and exponent away from float32.
    np.testing.assert_allclose(low_weights, ref_weights, rtol=0.05)
    ref_heads = keras.ops.convert_to_numpy(ref_analysis["head_outputs"])
    low_heads = keras.ops.convert_to_numpy(
        keras.ops.cast(low_analysis["head_outputs"], "float32"))
    assert np.max(np.abs(low_heads - ref_heads)) < 0.03 * np.max(np.abs(ref_heads))
