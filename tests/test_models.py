"""Tests of lhc.models against counts and rules derived here from REFERENCE.md and the paper."""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py
import keras
import numpy as np
import pytest
from conftest import randomise_batch_norms

from lhc import models

# REFERENCE.md: the five LHC modules at 224x224 sit on these (H, W, C) maps with the paper's
# (heads, dim, pool, scale, kernel) table.
PAPER_MAPS = [(56, 56, 64), (56, 56, 64), (28, 28, 128), (14, 14, 256), (7, 7, 512)]
PAPER_TABLE = [(8, 196, 3, 1, 3), (8, 196, 3, 1, 3), (7, 56, 3, 1, 3), (7, 14, 3, 1, 3), (1, 25, 3, 1, 3)]
SMALL = (64, 64, 3)


def lhc_params(height, width, channels, num_heads, head_dim, kernel_size):
    """REFERENCE.md: n*(H*W/n*d + d) + (C*C + C) + (s*s*C*C + C)."""
    band = height * width // num_heads
    return (
        num_heads * (band * head_dim + head_dim)
        + channels * channels + channels
        + kernel_size * kernel_size * channels * channels + channels
    )


def resnet34v2_params(num_classes):
    """Parameter count of the architecture in REFERENCE.md, summed layer by layer."""
    batch_norm = 4  # gamma, beta, moving mean, moving variance per channel
    total = 3 * 3  # bn_data: no gamma on the 3 input channels
    total += 7 * 7 * 3 * 64 + batch_norm * 64  # conv0, bn0
    in_channels = 64
    for stage, units in enumerate((3, 4, 6, 3)):
        filters = 64 * 2**stage
        for unit in range(units):
            total += batch_norm * in_channels + 9 * in_channels * filters  # bn1, conv1
            total += batch_norm * filters + 9 * filters * filters  # bn2, conv2
            if unit == 0:
                total += in_channels * filters  # 1x1 projection shortcut
            in_channels = filters
    total += batch_norm * 512  # final bn1
    return total + (512 * 4096 + 4096) + (4096 * 1024 + 1024) + (1024 * num_classes + num_classes)


def conv_out(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


def maps_by_arithmetic(size):
    """Spatial sizes at the five LHC positions, from each layer's padding, kernel and stride."""
    stem = conv_out(conv_out(size, 7, 2, 3), 3, 2, 1)  # conv0, pooling0
    stage2 = conv_out(stem, 3, 2, 1)
    stage3 = conv_out(stage2, 3, 2, 1)
    stage4 = conv_out(stage3, 3, 2, 1)
    return [stem, stem, stage2, stage3, stage4]


def random_pixels(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=shape).astype("float32")


def features_and_predictions(model):
    return keras.Model(model.input, [model.get_layer("pool1").output, model.output])


@pytest.fixture(scope="module")
def paper_models():
    return {"resnet": models.build_resnet34v2(), "lhc": models.build_lhc_net()}


@pytest.fixture(scope="module")
def small_resnet():
    model = models.build_resnet34v2(SMALL)
    randomise_batch_norms(model)
    return model


@pytest.fixture(scope="module")
def small_lhc_net(small_resnet):
    model = models.build_lhc_net(SMALL)
    models.transfer_backbone_weights(small_resnet, model)
    return model


def test_small_lhc_net_parameter_count(small_lhc_net):
    sides = maps_by_arithmetic(SMALL[0])
    settings, _ = models.derive_block_settings(SMALL)
    assert small_lhc_net.count_params() == resnet34v2_params(7) + sum(
        lhc_params(side, side, c, b.num_heads, b.head_dim, b.kernel_size)
        for side, c, b in zip(sides, (64, 64, 128, 256, 512), settings, strict=True)
    )


def test_resnet34v2_parameter_count_at_224(paper_models):
    count = paper_models["resnet"].count_params()
    assert count == resnet34v2_params(7)
    assert abs(count - 27.6e6) <= 0.05e6


def test_lhc_net_parameter_counts_and_share_at_224(paper_models):
    model = paper_models["lhc"]
    expected_modules = sum(
        lhc_params(h, w, c, n, d, s)
        for (h, w, c), (n, d, _, _, s) in zip(PAPER_MAPS, PAPER_TABLE, strict=True)
    )
    assert expected_modules == 4_805_444
    module_params = sum(model.get_layer(f"lhc{i}").count_params() for i in range(1, 6))
    assert module_params == expected_modules
    total = model.count_params()
    assert total == resnet34v2_params(7) + expected_modules
    assert abs(total - 32.4e6) <= 0.05e6
    assert abs(100 * module_params / total - 14.8) <= 0.1


def test_lhc_modules_sit_at_the_paper_positions(paper_models):
    model = paper_models["lhc"]
    for index, (position, shape, row) in enumerate(
        zip(models.LHC_POSITIONS, PAPER_MAPS, PAPER_TABLE, strict=True), 1
    ):
        module = model.get_layer(f"lhc{index}")
        assert module.input is model.get_layer(position).output
        assert tuple(module.output.shape[1:]) == shape
        n, d, p, g, s = row
        assert (module.num_heads, module.head_dim, module.pool_size, module.scale_exponent,
                module.kernel_size) == (n, d, p, g, s)


def test_paper_blocks_constant_matches_table():
    assert [(b.num_heads, b.head_dim, b.pool_size, b.scale_exponent, b.kernel_size)
            for b in models.PAPER_BLOCKS] == PAPER_TABLE


def test_derived_settings_reproduce_the_paper_at_224():
    settings, explanations = models.derive_block_settings((224, 224, 3))
    assert settings == models.PAPER_BLOCKS
    assert len(explanations) == 5


@pytest.mark.parametrize("size", [48, 64, 96, 112])
def test_derived_settings_follow_the_rule(size):
    settings, explanations = models.derive_block_settings((size, size, 3))
    assert len(settings) == len(explanations) == 5
    for index, (side, block, (paper_n, _, p, g, s), text) in enumerate(
        zip(maps_by_arithmetic(size), settings, PAPER_TABLE, explanations, strict=True), 1
    ):
        area = side * side
        divisors = [k for k in range(1, area + 1) if area % k == 0]
        best_distance = min(abs(k - paper_n) for k in divisors)
        expected_n = min(k for k in divisors if abs(k - paper_n) == best_distance)
        assert area % block.num_heads == 0
        assert block.num_heads == expected_n
        if area % paper_n == 0:
            assert block.num_heads == paper_n
        assert block.head_dim == max(4, math.ceil(area / (2 * block.num_heads)))
        assert (block.pool_size, block.scale_exponent, block.kernel_size) == (p, g, s)
        assert f"lhc{index}" in text and f"{side}x{side}" in text and str(block.head_dim) in text


def test_derived_settings_at_48_by_hand():
    # Maps 12x12, 12x12, 6x6, 3x3, 2x2: 8 | 144; 7 -> 6 for 36 (6 beats 9); 7 -> 9 for 9
    # (9 beats 3); 1 | 4. d = ceil(144/16) = 9, then the floor of 4.
    settings, _ = models.derive_block_settings((48, 48, 3))
    assert [(b.num_heads, b.head_dim) for b in settings] == [(8, 9), (8, 9), (6, 4), (9, 4), (1, 4)]


def test_feature_shapes_match_a_built_model(small_resnet):
    built = [tuple(small_resnet.get_layer(name).output.shape[1:]) for name in models.LHC_POSITIONS]
    sides = maps_by_arithmetic(SMALL[0])
    assert built == [(side, side, c) for side, c in zip(sides, (64, 64, 128, 256, 512), strict=True)]
    assert models.lhc_feature_shapes(SMALL) == built


def test_invalid_explicit_settings_raise_the_layer_error():
    blocks = list(models.derive_block_settings(SMALL)[0])
    blocks[0] = models.LHCBlockSettings(num_heads=7, head_dim=8)  # 16*16 = 256 is not 7k
    with pytest.raises(ValueError, match=r"lhc1.*256.*num_heads=7"):
        models.build_lhc_net(SMALL, blocks=blocks)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"'lhc', 'lhcc'"):
        models.build_lhc_net(SMALL, variant="lhc-net")
    with pytest.raises(ValueError, match="5 LHC block settings"):
        models.build_lhc_net(SMALL, blocks=models.PAPER_BLOCKS[:4])
    with pytest.raises(ValueError, match="heads"):
        models.LHCBlockSettings.from_value({"num_heads": 8, "head_dim": 4, "heads": 2})
    with pytest.raises(ValueError, match="head_dim"):
        models.LHCBlockSettings.from_value({"num_heads": 8})


# Two ways to make every module the identity: switched off, or value kernels starting at 0
# (V = 0 makes the attention term 0, eq. 16).
@pytest.mark.parametrize("identity", [{"enabled": False}, {"value_initializer": "zeros"}],
                         ids=["disabled", "zero_values"])
def test_transfer_then_identity_modules_reproduce_the_backbone(small_resnet, identity):
    blocks = [dict(num_heads=b.num_heads, head_dim=b.head_dim)
              for b in models.derive_block_settings(SMALL)[0]]
    switched_off = models.build_lhc_net(SMALL, blocks=blocks, **identity)
    report = models.transfer_backbone_weights(small_resnet, switched_off)
    assert report["copied"] == [layer.name for layer in small_resnet.layers if layer.weights]
    lhc_variables = [v.path for i in range(1, 6) for v in switched_off.get_layer(f"lhc{i}").weights]
    assert len(lhc_variables) == 5 * 6
    assert report["target_only"] == lhc_variables

    pixels = random_pixels((2, *SMALL))
    expected = [np.asarray(t) for t in features_and_predictions(small_resnet)(pixels)]
    got = [np.asarray(t) for t in features_and_predictions(switched_off)(pixels)]
    assert expected[0].std() > 1e-3  # the features are not degenerate
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_allclose(have, want, rtol=0, atol=1e-5)


def test_transfer_into_active_lhc_net_changes_the_features(small_resnet, small_lhc_net):
    pixels = random_pixels((2, *SMALL))
    plain = np.asarray(features_and_predictions(small_resnet)(pixels)[0])
    active = np.asarray(features_and_predictions(small_lhc_net)(pixels)[0])
    assert np.abs(active - plain).max() > 1e-3


def test_transfer_reports_every_missing_layer(small_resnet, small_lhc_net):
    with pytest.raises(ValueError, match=r"(?s)'lhc1' is missing.*'lhc5' is missing"):
        models.transfer_backbone_weights(small_lhc_net, small_resnet)


def test_lhcc_gates_transfer_and_freezing(small_lhc_net):
    model = models.build_lhc_net(SMALL, variant="lhcc")
    gates = [float(model.get_layer(f"lhc{i}").gate.numpy()) for i in range(1, 6)]
    assert gates == [0.0, 0.0, 0.0, -1.0, -0.5]
    assert model.count_params() == small_lhc_net.count_params() + 5

    # LHC-NetC starts from a trained LHC-Net: everything but the gates is copied.
    report = models.transfer_backbone_weights(small_lhc_net, model)
    assert report["target_only"] == [f"lhc{i}/gate" for i in range(1, 6)]
    assert [float(model.get_layer(f"lhc{i}").gate.numpy()) for i in range(1, 6)] == gates
    # With w = 0, 1 + tanh(w) = 1 and LHC-NetC computes exactly LHC-Net.
    for index in range(1, 6):
        model.get_layer(f"lhc{index}").gate.assign(0.0)
    pixels = random_pixels((2, *SMALL), seed=2)
    np.testing.assert_allclose(np.asarray(model(pixels)), np.asarray(small_lhc_net(pixels)),
                               rtol=0, atol=1e-6)
    for index, gate in enumerate(gates, 1):
        model.get_layer(f"lhc{index}").gate.assign(gate)

    trainable = models.freeze_all_but_gates(model)
    assert trainable == [f"lhc{i}/gate" for i in range(1, 6)]
    assert [v.path for v in model.trainable_weights] == trainable

    # The untrained network's logits are huge: shrink the classifier so that its softmax is
    # not saturated, since a saturated (clipped) probability passes no gradient on JAX.
    classifier = model.get_layer("predictions")
    classifier.kernel.assign(1e-3 * classifier.kernel.numpy())
    before = {v.path: np.array(v.numpy()) for v in model.weights}
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="categorical_crossentropy")
    labels = np.eye(7, dtype="float32")[[0, 3]]
    model.train_on_batch(random_pixels((2, *SMALL), seed=1), labels)
    changed = {v.path for v in model.weights if not np.array_equal(v.numpy(), before[v.path])}
    assert changed == set(trainable)


def test_freezing_needs_gates(small_resnet):
    with pytest.raises(ValueError, match="variant='lhcc'"):
        models.freeze_all_but_gates(small_resnet)


def test_insert_lhc_into_resnet50v2():
    base = keras.applications.ResNet50V2(weights=None, input_shape=SMALL, classes=7)
    after = ["conv2_block3_out", "conv3_block4_out"]
    model = models.insert_lhc(base, after=after)

    added = 0
    for name in after:
        module = model.get_layer(f"lhc_after_{name}")
        assert module.input is model.get_layer(name).output
        height, width, channels = module.input.shape[1:]
        assert (height * width) % module.num_heads == 0
        added += lhc_params(height, width, channels, module.num_heads, module.head_dim,
                            module.kernel_size)
    assert model.count_params() == base.count_params() + added
    # Every former consumer now reads the LHC output.
    assert model.get_layer("conv3_block1_preact_bn").input is model.get_layer(
        "lhc_after_conv2_block3_out").output

    # With a zero value path the attention term vanishes (eq. 16), so the rebuilt model
    # must reproduce the original exactly: the graph and the copied weights are intact.
    for name in after:
        module = model.get_layer(f"lhc_after_{name}")
        module.value_kernel.assign(np.zeros(module.value_kernel.shape, "float32"))
        module.value_bias.assign(np.zeros(module.value_bias.shape, "float32"))
    pixels = random_pixels((2, *SMALL)) / 127.5 - 1.0
    np.testing.assert_allclose(np.asarray(model(pixels)), np.asarray(base(pixels)), atol=1e-6)


def test_insert_lhc_errors():
    base = keras.applications.ResNet50V2(weights=None, input_shape=SMALL, classes=7)
    with pytest.raises(ValueError, match=r"no layer\(s\) \['conv9'\].*conv1_conv"):
        models.insert_lhc(base, after=["conv9"])
    with pytest.raises(ValueError, match="functional"):
        models.insert_lhc(keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)]),
                          after=["conv2d"])
    with pytest.raises(ValueError, match="static"):
        models.insert_lhc(base, after=["avg_pool"])
    with pytest.raises(ValueError, match="1 entries but after names 2"):
        models.insert_lhc(base, after=["conv2_block3_out", "conv3_block4_out"],
                          settings=[models.LHCBlockSettings(1, 8)])
    with pytest.raises(ValueError, match=r"lhc_after_conv2_block3_out.*divisible"):
        models.insert_lhc(base, after=["conv2_block3_out"],
                          settings=[models.LHCBlockSettings(5, 8)])


def _write_image_classifiers_h5(path, arrays_by_layer):
    """A Keras 2 style weights file: root attr layer_names, per layer attr weight_names."""
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [name.encode() for name in arrays_by_layer]
        for layer_name, arrays in arrays_by_layer.items():
            group = handle.create_group(layer_name)
            names = [f"{layer_name}/{weight}:0" for weight in arrays]
            group.attrs["weight_names"] = [name.encode() for name in names]
            for name, array in zip(names, arrays.values(), strict=True):
                group.create_dataset(name, data=array)


def test_load_backbone_weights_round_trip(tmp_path):
    model = models.build_resnet34v2((32, 32, 3))
    rng = np.random.default_rng(3)
    backbone = {}
    for layer in model.layers:
        if layer.weights and layer.name not in models.HEAD_LAYER_NAMES:
            # Reverse each layer's variable order: the loader must match names, not positions.
            backbone[layer.name] = {
                w.name: rng.uniform(0.5, 1.5, tuple(w.shape)).astype("float32")
                for w in reversed(layer.weights)
            }
    file_layers = dict(backbone)
    file_layers["fc1"] = {"kernel": np.zeros((512, 1000), "float32"),
                          "bias": np.zeros(1000, "float32")}  # the package's ImageNet top
    file_layers["softmax"] = {}
    path = tmp_path / "resnet34_imagenet_1000.h5"
    _write_image_classifiers_h5(path, file_layers)

    report = models.load_backbone_weights(model, path)
    assert sorted(report["loaded"]) == sorted(backbone)
    assert list(report["skipped"]) == ["fc1"]
    assert report["missing"] == ["fc1", "fc2", "predictions"]
    for layer_name, arrays in backbone.items():
        for weight in model.get_layer(layer_name).weights:
            np.testing.assert_array_equal(weight.numpy(), arrays[weight.name])

    broken = dict(backbone)
    broken["conv0"] = {"kernel": np.zeros((3, 3, 3, 64), "float32")}
    _write_image_classifiers_h5(path, broken)
    with pytest.raises(ValueError, match=r"conv0.*\(3, 3, 3, 64\)"):
        models.load_backbone_weights(model, path)


def test_load_backbone_weights_missing_file(tmp_path, small_resnet):
    with pytest.raises(FileNotFoundError, match=r"absent\.h5.*bn_data.*conv0"):
        models.load_backbone_weights(small_resnet, tmp_path / "absent.h5")


def test_keras_round_trip_of_small_lhc_net(tmp_path):
    model = models.build_lhc_net((32, 32, 3), variant="lhcc")
    path = tmp_path / "lhc_netc.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    pixels = random_pixels((2, 32, 32, 3), seed=4)
    np.testing.assert_array_equal(np.asarray(restored(pixels)), np.asarray(model(pixels)))
    assert [layer.name for layer in restored.layers] == [layer.name for layer in model.layers]


def test_global_head_layout_lhc_net():
    # Global heads see the whole map: each module's embedding grows from n*(H*W/n)*d to
    # n*(H*W)*d weights, i.e. by (n - 1)*H*W*d.
    local = models.build_lhc_net((64, 64, 3), 7)
    global_arm = models.build_lhc_net((64, 64, 3), 7, head_layout="global")
    extra = 0
    for index in range(1, 6):
        layer = local.get_layer(f"lhc{index}")
        extra += (layer.num_heads - 1) * layer.height * layer.width * layer.head_dim
        assert global_arm.get_layer(f"lhc{index}").head_layout == "global"
    assert global_arm.count_params() - local.count_params() == extra
    assert global_arm.name == "lhc_net_global"
