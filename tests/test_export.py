"""Tests of lhc.export and ``lhc export``: TFLite parity of LHC-Net, Keras and SavedModel files.

All at 48x48 (the smoke size): LHC-Net's five LHC modules are all there, at small maps.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from lhc.cli.export import add_cli  # noqa: E402
from lhc.data import FER2013_CLASSES  # noqa: E402
from lhc.export import TFLiteModel, export_model, load_model, tflite_bytes  # noqa: E402
from lhc.layers import LHC  # noqa: E402
from lhc.models import build_lhc_net  # noqa: E402

SHAPE = (48, 48, 3)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (5, *SHAPE)).astype("float32")


@pytest.fixture(scope="module")
def lhc_net(images):
    """A random LHC-Net whose BatchNorm statistics are those of ``images``.

    With the initial statistics (mean 0, variance 1) pixels in [0, 255] blow up through the
    network and the softmax saturates to one-hot rows, where a parity test of probabilities
    tells nothing; a trained network's statistics fit its data, as these do.
    """
    keras.utils.set_random_seed(2)
    model = build_lhc_net(SHAPE, len(FER2013_CLASSES))
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0  # the moving statistics become this one batch's
    model(images, training=True)
    for layer in norms:
        layer.momentum = 0.99
    return model


def probabilities(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False))


def test_tflite_matches_keras_on_a_batch(lhc_net, images):
    expected = probabilities(lhc_net, images)
    assert sum(isinstance(layer, LHC) for layer in lhc_net.layers) == 5
    assert expected.max() < 0.99 and expected.std(axis=0).max() > 1e-3  # informative rows
    flat_buffer = tflite_bytes(lhc_net)
    interpreter = TFLiteModel(flat_buffer)
    operators = {op["op_name"] for op in interpreter.interpreter._get_ops_details()}
    assert not [name for name in operators if name.startswith("Flex")]  # builtin ops only
    assert {"BATCH_MATMUL", "AVERAGE_POOL_2D", "SOFTMAX"} <= operators  # the LHC modules' ops
    assert np.abs(interpreter.predict(images) - expected).max() < 1e-4
    # The batch axis is dynamic: one image, then the batch again.
    assert np.abs(interpreter.predict(images[:1]) - expected[:1]).max() < 1e-4
    assert np.abs(interpreter.predict(images) - expected).max() < 1e-4


def test_keras_and_savedmodel_files_give_the_same_probabilities(lhc_net, images, tmp_path):
    expected = probabilities(lhc_net, images)
    keras_file = export_model(lhc_net, "keras", tmp_path / "model.keras")
    reloaded = load_model(keras_file)
    assert reloaded.class_names == FER2013_CLASSES and reloaded.input_size == 48
    np.testing.assert_allclose(probabilities(reloaded.model, images), expected, atol=1e-6)

    folder = tmp_path / "savedmodel"
    folder.mkdir()
    (folder / "stale.txt").write_text("an earlier export")
    assert export_model(lhc_net, "savedmodel", folder) == folder
    assert not (folder / "stale.txt").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.keras", "savedmodel"]
    served = tf.saved_model.load(str(folder))  # kept: its functions need its variables alive
    np.testing.assert_allclose(served.serve(tf.constant(images)).numpy(), expected, atol=1e-5)


def test_bad_exports_are_named(lhc_net, tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'onnx'"):
        export_model(lhc_net, "onnx", tmp_path / "model.onnx")
    with pytest.raises(ValueError, match=r"model\.h5: a Keras model file must end in \.keras"):
        export_model(lhc_net, "keras", tmp_path / "model.h5")
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        load_model(tmp_path / "missing.keras")
    assert not list(tmp_path.iterdir())


def test_cli_export_tflite_of_a_keras_file(tmp_path, images, capsys):
    keras.utils.set_random_seed(4)
    small = keras.Sequential([keras.Input(SHAPE), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(7, activation="softmax")])
    source = tmp_path / "small.keras"
    small.save(source)
    out = tmp_path / "exports" / "small.tflite"
    parser = argparse.ArgumentParser(prog="lhc")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", str(source), "--format", "tflite", "--out", str(out)])
    assert args.func(args) == 0
    assert f"as tflite to {out}" in capsys.readouterr().out
    tflite = TFLiteModel(out.read_bytes())
    np.testing.assert_allclose(tflite.predict(images), probabilities(small, images), atol=1e-5)
