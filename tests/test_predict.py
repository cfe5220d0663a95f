"""Tests of lhc.predict and ``lhc predict``: faces on a real photo, crops, preprocessing, outputs.

The real photo is scikit-image's astronaut (Eileen Collins, one frontal face). Where its face
is, is derived from the image itself: skin-coloured pixels by the RGB rule of Peer et al.
(2003), which knows nothing of Haar cascades.
"""

from __future__ import annotations

import argparse
import csv
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import PHOTO_MODEL_INPUT_SIZE as INPUT_SIZE  # noqa: E402
from conftest import skin_mask

from lhc.cli.predict import add_cli  # noqa: E402
from lhc.data import FER2013_CLASSES  # noqa: E402
from lhc.data.pipeline import input_model  # noqa: E402
from lhc.predict import (  # noqa: E402
    NO_FACE,
    Predictor,
    crop_face,
    detect_faces,
    preprocess,
    to_grey,
)


def test_detector_finds_the_one_face_of_the_astronaut(astronaut):
    boxes = detect_faces(to_grey(astronaut))
    assert len(boxes) == 1
    x, y, width, height = boxes[0]
    side = astronaut.shape[0]
    assert 0 <= x and 0 <= y and x + width <= side and y + height <= side
    assert side / 16 < width < side / 2 and side / 16 < height < side / 2
    # The face is in the upper left of the photo (her body fills the lower half).
    assert x + width / 2 < side * 0.6 and y + height / 2 < side / 2
    # The box's central half is skin, far more than the photo as a whole.
    skin = skin_mask(astronaut)
    centre = skin[y + height // 4:y + 3 * height // 4, x + width // 4:x + 3 * width // 4]
    assert centre.mean() > 0.8 > 0.4 > skin.mean()


def test_blank_image_has_no_face(predictor):
    for blank in (np.full((240, 320, 3), 128, np.uint8), np.zeros((100, 100), np.uint8)):
        assert detect_faces(to_grey(blank)) == []
        assert predictor.predict_image(blank) == []


def test_crop_takes_the_margin_and_repeats_the_border():
    grey = np.random.default_rng(0).integers(0, 256, (100, 120), dtype=np.uint8)
    # A 48x48 box with no margin is the box's own pixels (no resize).
    np.testing.assert_array_equal(crop_face(grey, (30, 20, 48, 48), margin=0.0),
                                  grey[20:68, 30:78])
    # A 24x24 box in the corner, grown by half its side, reaches 12 pixels past the border.
    expected = np.pad(grey, 12, mode="edge")[0:48, 0:48]
    np.testing.assert_array_equal(crop_face(grey, (0, 0, 24, 24), margin=0.5), expected)
    # A 96x96 box averages each 2x2 block into one pixel.
    big = np.random.default_rng(1).integers(0, 256, (96, 96), dtype=np.uint8)
    blocks = big.reshape(48, 2, 48, 2).astype(float).mean(axis=(1, 3))
    np.testing.assert_allclose(crop_face(big, (0, 0, 96, 96), margin=0.0), blocks, atol=1)


def bilinear_half_pixel(image, size):
    """Bilinear resize with half-pixel centres, transcribed per axis (as tf.image.resize)."""
    def axis_weights(source, target):
        position = np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0, source - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, source - 1)
        matrix = np.zeros((target, source))
        matrix[np.arange(target), low] += 1 - (position - low)
        matrix[np.arange(target), high] += position - low
        return matrix

    rows = axis_weights(image.shape[0], size)
    columns = axis_weights(image.shape[1], size)
    return rows @ image.astype(float) @ columns.T


def test_preprocess_is_the_bilinear_resize_to_three_equal_channels():
    faces = np.random.default_rng(2).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    images = preprocess(faces, 96)
    assert images.shape == (3, 96, 96, 3) and images.dtype == np.float32
    for face, image in zip(faces, images, strict=True):
        expected = bilinear_half_pixel(face, 96)
        for channel in range(3):
            np.testing.assert_allclose(image[..., channel], expected, atol=1e-3)


def test_no_detect_face_gets_the_training_pipelines_probabilities(model_file, tmp_path):
    face = np.random.default_rng(4).integers(0, 256, (48, 48), dtype=np.uint8)
    model = keras.saving.load_model(model_file)
    # What training feeds the model: the device-side inputs, outside training (no augmentation).
    images = input_model(INPUT_SIZE)(face[None, :, :, None].astype("float32"), training=False)
    expected = keras.ops.convert_to_numpy(model(images, training=False))[0]
    assert expected.max() - expected.min() > 0.01  # probabilities that tell classes apart

    predictor = Predictor(model_file, detect=False)
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), face)
    for given in (face, np.repeat(face[..., None], 3, axis=-1), path):
        (result,) = predictor.predict_image(given)
        assert result.box == (0, 0, 48, 48)
        np.testing.assert_allclose([result.probabilities[name] for name in FER2013_CLASSES],
                                   expected, atol=1e-6)
        assert result.label == FER2013_CLASSES[int(np.argmax(expected))]


def test_predict_paths_writes_tables_and_annotated_images(predictor, astronaut, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "astronaut.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(photos / "blank.jpg"), np.full((120, 160, 3), 200, np.uint8))
    (photos / "broken.png").write_bytes(b"not a png at all")
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "out"

    report = predictor.predict_paths([photos, tmp_path / "missing.jpg"], out=out)

    assert [os.path.basename(result.file) for result in report.results] == [
        "astronaut.png", "blank.jpg"]
    assert report.results[1].faces == [] and report.results[1].message == NO_FACE
    assert sorted(os.path.basename(entry.file) for entry in report.skipped) == [
        "broken.png", "missing.jpg", "notes.txt"]
    (face,) = report.results[0].faces
    assert face.box == tuple(detect_faces(to_grey(astronaut))[0])

    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["file"] == str(photos / "astronaut.png")
    assert tuple(int(rows[0][key]) for key in ("x", "y", "width", "height")) == face.box
    probabilities = np.array([float(rows[0][name]) for name in FER2013_CLASSES])
    assert probabilities.sum() == pytest.approx(1, abs=1e-5)
    assert rows[0]["label"] == FER2013_CLASSES[int(np.argmax(probabilities))]

    written = json.loads((out / "predictions.json").read_text())
    assert written["counts"] == {"images": 2, "faces": 1, "images_without_faces": 1,
                                 "skipped": 3}
    assert written["class_names"] == list(FER2013_CLASSES)
    assert written["images"][1] == {"file": str(photos / "blank.jpg"), "message": NO_FACE,
                                    "faces": []}
    (faced,) = written["images"][0]["faces"]
    assert (faced["x"], faced["y"], faced["width"], faced["height"]) == face.box
    assert faced["probabilities"] == pytest.approx(face.probabilities)

    for name, shape in (("astronaut", astronaut.shape), ("blank", (120, 160, 3))):
        annotated = cv2.imread(str(out / "annotated" / f"{name}.png"))
        assert annotated is not None
        assert annotated.shape[0] >= shape[0] and annotated.shape[1] > shape[1]  # + the panel
    # The box is drawn on the copy: its left edge changes pixels the original has.
    x, y, width, height = face.box
    annotated = cv2.cvtColor(cv2.imread(str(out / "annotated" / "astronaut.png")),
                             cv2.COLOR_BGR2RGB)
    edge = slice(y + height // 4, y + 3 * height // 4), x
    assert not np.array_equal(annotated[edge], astronaut[edge])
    np.testing.assert_array_equal(annotated[-40:, :40], astronaut[-40:, :40])  # far from it


def test_run_directory_gives_its_stage_four_lhc_net(tmp_path):
    from lhc.models import build_lhc_net
    from lhc.training import load_profile
    from lhc.training import runner as training

    profile = load_profile("smoke")
    run_dir = tmp_path / "run"
    folder = run_dir / "stages" / "stage4" / "lhc_net"
    folder.mkdir(parents=True)
    (run_dir / training.PROFILE_FILE).write_text(json.dumps(profile.to_dict()))
    (run_dir / training.RUN_STATE).write_text(json.dumps(
        {"data_path": None, "stages": ["stage4"], "start_from": None, "diverged": None}))
    (folder / training.SUMMARY_FILE).write_text("{}")
    keras.utils.set_random_seed(5)
    trained = build_lhc_net(profile.input_size_shape, len(FER2013_CLASSES),
                            blocks=profile.resolved_blocks())
    trained.save_weights(folder / training.FINAL_WEIGHTS)

    predictor = Predictor(run_dir, detect=False)
    assert predictor.loaded.input_size == profile.input_size
    assert predictor.class_names == FER2013_CLASSES
    face = np.random.default_rng(6).integers(0, 256, (48, 48), dtype=np.uint8)
    (result,) = predictor.predict_image(face)
    expected = keras.ops.convert_to_numpy(trained(preprocess(face[None], profile.input_size),
                                                  training=False))[0]
    np.testing.assert_allclose(list(result.probabilities.values()), expected, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="no finished stage3/resnet34v2"):
        Predictor(run_dir, stage="stage3")  # the smoke profile's stage 3 trains ResNet34v2
    with pytest.raises(ValueError, match="no stage 'stage9'"):
        Predictor(run_dir, stage="stage9")


def test_flip_tta_averages_the_face_and_its_mirror(model_file):
    face = np.random.default_rng(7).integers(0, 256, (48, 48), dtype=np.uint8)
    plain = Predictor(model_file, detect=False)
    expected = (plain.predict_faces(face[None]) + plain.predict_faces(face[None, :, ::-1])) / 2
    (result,) = Predictor(model_file, tta="flip", detect=False).predict_image(face)
    np.testing.assert_allclose(list(result.probabilities.values()), expected[0], atol=1e-5)


def test_bad_arguments_are_named(model_file, tmp_path):
    with pytest.raises(ValueError, match="unknown TTA protocol 'mirror'"):
        Predictor(model_file, tta="mirror")
    with pytest.raises(ValueError, match="margin"):
        Predictor(model_file, margin=2.0)
    with pytest.raises(ValueError, match="uint8"):
        Predictor(model_file).predict_image(np.zeros((48, 48), np.float32))
    text_file = tmp_path / "model.txt"
    text_file.write_text("x")
    with pytest.raises(ValueError, match="model.txt: expected a run directory"):
        Predictor(text_file)


def run_cli(*argv):
    parser = argparse.ArgumentParser(prog="lhc")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_predict_no_detect(model_file, astronaut, tmp_path, capsys):
    crops = tmp_path / "crops"
    crops.mkdir()
    cv2.imwrite(str(crops / "a.png"), np.full((48, 48), 90, np.uint8))
    cv2.imwrite(str(crops / "b.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    (crops / "c.png").write_bytes(b"")
    out = tmp_path / "out"
    assert run_cli("predict", str(model_file), str(crops), "--no-detect", "--tta", "flip",
                   "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "faces: 2, images: 2, without a face: 0, skipped: 1" in printed
    assert f"skipped {crops / 'c.png'}: not a readable image" in printed
    assert json.loads((out / "predictions.json").read_text())["tta"] == "flip"
    rows = list(csv.DictReader(open(out / "predictions.csv", newline="")))
    assert [(row["x"], row["y"], row["width"], row["height"]) for row in rows] == [
        ("0", "0", "48", "48"), ("0", "0", "512", "512")]
