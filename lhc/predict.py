"""Facial expressions on real photos: find faces, make them look like FER2013, predict.

The steps, for each image:

1. Grey levels: OpenCV's ITU-R BT.601 luma (``0.299 R + 0.587 G + 0.114 B``) of an RGB image;
   FER2013's images are grey.
2. Faces: OpenCV's frontal-face Haar cascade (``haarcascade_frontalface_default.xml``, shipped
   in ``opencv-python-headless`` 4.x; 5.0 dropped ``CascadeClassifier``, hence the ``<5`` pin),
   boxes ``(x, y, width, height)`` in the image's pixels, ordered left to right. The cascade
   scans a copy of at most :data:`DETECT_MAX_SIDE` px and accepts faces of at least
   :data:`MIN_FACE_FRACTION` of its shorter side; the boxes are mapped back to the full image,
   which the crops are taken from. With ``detect=False`` the whole image is the face (an
   already-cropped face).
3. Crop: the box grown by ``margin`` of its side on every side, since the cascade's box is
   tighter than FER2013's framing (chin to hairline, some background); pixels beyond the
   image's border repeat its edge. The crop is resized to 48x48 (area interpolation) and
   rounded to uint8: a FER2013-like face.
4. The training pipeline's own preprocessing (:func:`lhc.data.pipeline.preprocess`, no
   augmentation): bilinear resize to the model's input size, three equal channels, values in
   [0, 255].
5. Probabilities from the model, or from test-time augmentation (:func:`lhc.tta.predict_tta`,
   protocols such as ``flip``).

:class:`Predictor` is the API behind ``lhc predict``; :meth:`Predictor.predict_paths` also
writes ``predictions.csv``, ``predictions.json`` and an annotated copy of every image (box,
label, probability bars; at most :data:`ANNOTATE_MAX_SIDE` px plus the panel) when given an
output folder.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from lhc._io import write_bytes, write_json, write_text
from lhc.export import LoadedModel, load_model

__all__ = [
    "ANNOTATE_MAX_SIDE",
    "DEFAULT_MARGIN",
    "DETECT_MAX_SIDE",
    "FER_SIZE",
    "IMAGE_SUFFIXES",
    "MIN_FACE_FRACTION",
    "Face",
    "ImageResult",
    "PredictionReport",
    "Predictor",
    "Skipped",
    "annotate",
    "crop_face",
    "detect_faces",
    "expand_paths",
    "preprocess",
    "read_image",
    "to_grey",
]

FER_SIZE = 48
DEFAULT_MARGIN = 0.1
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
CASCADE_FILE = "haarcascade_frontalface_default.xml"
# OpenCV's usual settings: 10% scale steps, 5 overlapping hits to accept a face; faces under
# 30 px (of the image the cascade scans) hold less detail than FER2013's 48x48 anyway.
_SCALE_FACTOR, _MIN_NEIGHBOURS, _MIN_FACE = 1.1, 5, 30
DETECT_MAX_SIDE = 1024
"""Longest side of the copy the cascade scans; larger images are shrunk (area interpolation).

The cascade's work grows with the pixel count and the number of scales: on an 8000x8000 photo
it took 13-16 s and 3.5 GB, and its millions of windows found several "faces" in
pure noise. A face large enough to read an expression from keeps well over the cascade's
24 px window at this size, and the crop is still taken from the full-resolution image.
"""
MIN_FACE_FRACTION = 1 / 16
"""Smallest face side the cascade accepts, as a fraction of the scanned image's shorter side.

With it, a photo is scanned alike at every resolution from 480 px (below, the absolute 30 px
minimum rules): the same faces, not more false hits for more pixels. The cascade's false hits
on smooth, blurred texture are small boxes (4-6% of the side on photos upscaled 12x), and an
expression is read from a face that is a subject of the photo, not one in the crowd behind
it. Group photos of many small faces want ``detect_faces(..., min_face_fraction=...)`` lower.
"""
NO_FACE = "no face found"


@dataclasses.dataclass(frozen=True)
class Face:
    """One face of an image and its prediction.

    Attributes:
        box: ``(x, y, width, height)`` in the image's pixels, before the margin.
        probabilities: class name -> probability, in the model's output order.
        label: the most probable class.
    """

    box: tuple[int, int, int, int]
    probabilities: dict[str, float]
    label: str

    @property
    def probability(self) -> float:
        """The label's probability."""
        return self.probabilities[self.label]


@dataclasses.dataclass(frozen=True)
class ImageResult:
    """The faces of one image; ``message`` says why there are none."""

    file: str
    faces: list[Face]
    message: str | None = None


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A path that was not predicted, and why."""

    file: str
    reason: str


@dataclasses.dataclass(frozen=True)
class PredictionReport:
    """What :meth:`Predictor.predict_paths` did: a result per readable image, the skipped."""

    results: list[ImageResult]
    skipped: list[Skipped]

    @property
    def num_faces(self) -> int:
        return sum(len(result.faces) for result in self.results)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB uint8 ``(H, W, 3)``.

    Raises:
        ValueError: naming the file, when OpenCV cannot decode it.
    """
    data = np.fromfile(path, dtype=np.uint8)  # not cv2.imread: it fails on non-ASCII names
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"{path}: not a readable image (OpenCV could not decode it)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_grey(image: np.ndarray) -> np.ndarray:
    """Grey uint8 ``(H, W)`` of a uint8 image ``(H, W)``, ``(H, W, 1)``, RGB or RGBA.

    Raises:
        ValueError: on another dtype or shape.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array, got "
                         f"{getattr(image, 'dtype', type(image).__name__)}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY)
    raise ValueError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) RGB or "
                     f"(H, W, 4) RGBA, got shape {image.shape}")


@functools.cache
def _cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + CASCADE_FILE
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FileNotFoundError(f"{path}: OpenCV's face cascade is missing; install "
                                f"opencv-python-headless>=4.8,<5")
    return cascade


def detect_faces(grey: np.ndarray, *, max_side: int = DETECT_MAX_SIDE,
                 min_face_fraction: float = MIN_FACE_FRACTION) -> list[tuple[int, int, int, int]]:
    """Face boxes ``(x, y, width, height)`` found by the Haar cascade, left to right.

    The cascade scans a copy shrunk to ``max_side`` (:data:`DETECT_MAX_SIDE`) and accepts faces
    of at least ``min_face_fraction`` (:data:`MIN_FACE_FRACTION`) of that copy's shorter side
    and 30 px; the boxes are mapped back to ``grey``'s pixels.

    Args:
        grey: uint8 ``(H, W)``.
        max_side: longest side of the scanned copy; smaller images are scanned as they are.
        min_face_fraction: smallest face side, as a fraction of the scanned copy's shorter side.

    Returns:
        The boxes in ``grey``'s pixels, within its borders; empty when the image shows no
        frontal face.
    """
    height, width = grey.shape
    shrink = max(height, width) / max_side
    scanned = grey if shrink <= 1 else cv2.resize(
        grey, (max(1, round(width / shrink)), max(1, round(height / shrink))),
        interpolation=cv2.INTER_AREA)  # area: each pixel averages its block, no aliasing
    min_face = max(_MIN_FACE, math.ceil(min_face_fraction * min(scanned.shape)))
    boxes = _cascade().detectMultiScale(scanned, scaleFactor=_SCALE_FACTOR,
                                        minNeighbors=_MIN_NEIGHBOURS,
                                        minSize=(min_face, min_face))
    # Per axis: the copy's sides are rounded, so its two factors may differ slightly.
    scale_x, scale_y = width / scanned.shape[1], height / scanned.shape[0]
    mapped = []
    for x, y, box_width, box_height in (tuple(int(value) for value in box) for box in boxes):
        left, top = round(x * scale_x), round(y * scale_y)
        right = min(width, round((x + box_width) * scale_x))
        bottom = min(height, round((y + box_height) * scale_y))
        mapped.append((left, top, right - left, bottom - top))
    return sorted(mapped)


def crop_face(grey: np.ndarray, box: tuple[int, int, int, int],
              margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The box grown by ``margin`` of its side on each side, as a 48x48 uint8 face.

    Args:
        grey: uint8 ``(H, W)``.
        box: ``(x, y, width, height)``.
        margin: fraction of the box's width (height) added left and right (above and below).

    Returns:
        uint8 ``(48, 48)``; pixels beyond the image's border repeat its edge.
    """
    x, y, width, height = box
    pad_x, pad_y = round(margin * width), round(margin * height)
    left, top, right, bottom = x - pad_x, y - pad_y, x + width + pad_x, y + height + pad_y
    border = max(0, -left, -top, right - grey.shape[1], bottom - grey.shape[0])
    padded = np.pad(grey, border, mode="edge") if border else grey
    crop = padded[top + border:bottom + border, left + border:right + border]
    return cv2.resize(crop, (FER_SIZE, FER_SIZE), interpolation=cv2.INTER_AREA)


def preprocess(faces: np.ndarray, input_size: int) -> np.ndarray:
    """FER2013-like faces as the training pipeline feeds them to a model (no augmentation).

    Args:
        faces: uint8 ``(N, 48, 48)``.
        input_size: the model's input side ``S``.

    Returns:
        float32 ``(N, S, S, 3)``: bilinear resize, three equal channels, values in [0, 255].
    """
    from lhc.data import pipeline

    return pipeline.preprocess(faces, input_size)


def expand_paths(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Skipped]]:
    """Files to predict: each file as given, each folder's image files (recursively, sorted).

    Returns:
        The files, and the skipped paths: missing ones, and files in a folder whose suffix is
        not one of :data:`IMAGE_SUFFIXES`.
    """
    files, skipped = [], []
    for path in map(Path, paths):
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if not child.is_file():
                    continue
                if child.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(child)
                else:
                    skipped.append(Skipped(str(child), f"not an image file (suffix not among "
                                                       f"{', '.join(IMAGE_SUFFIXES)})"))
        elif path.is_file():
            files.append(path)
        else:
            skipped.append(Skipped(str(path), "no such file or directory"))
    return files, skipped


class Predictor:
    """Predict facial expressions on photos with a trained model (module docstring).

    Args:
        model: a run directory, a ``.keras`` file or a ``keras.Model``
            (:func:`lhc.export.load_model`).
        tta: ``"none"``, or a test-time augmentation protocol of :mod:`lhc.tta`: a name
            (``"flip"``, ``"paper"``, ``"reference"``), a ``Protocol`` or a list of view dicts.
        stage: with a run directory, the stage whose model is used.
        model_name: with a run directory, which model (``"lhc_net"``, ``"lhc_netc"``, ...);
            by default the one the stage trains.
        class_names: output names, when they cannot be derived (:func:`lhc.export.load_model`).
        detect: find faces with the cascade; ``False`` takes each image as a cropped face.
        margin: crop margin around a detected face, as a fraction of its box.
        max_batch: most model-sized images per forward pass (bounds memory, with TTA too).

    Raises:
        ValueError: on an unknown ``tta`` protocol or a margin outside [0, 1].
    """

    def __init__(self, model, tta="none", *, stage: str = "stage4",
                 model_name: str | None = None, class_names: Sequence[str] | None = None,
                 detect: bool = True, margin: float = DEFAULT_MARGIN, max_batch: int = 64):
        if not 0 <= margin <= 1:
            raise ValueError(f"margin: expected a fraction in [0, 1], got {margin!r}")
        self.loaded: LoadedModel = load_model(
            model, stage=stage, model=model_name,
            class_names=None if class_names is None else tuple(class_names))
        self.detect, self.margin, self.max_batch = detect, margin, max_batch
        self._tta_predictor = None
        if tta != "none":
            from lhc.tta import TTAPredictor

            # Built once: its compiled predict function is reused for every image.
            self._tta_predictor = TTAPredictor(self.loaded.model, tta, max_batch=max_batch)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.loaded.class_names

    def predict_faces(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, num_classes)`` of FER2013-like uint8 faces ``(N, 48, 48)``."""
        images = preprocess(faces, self.loaded.input_size)  # (N, S, S, 3)
        if self._tta_predictor is not None:
            probabilities = self._tta_predictor(images)
        else:
            probabilities = self.loaded.model.predict(images, batch_size=self.max_batch,
                                                      verbose=0)
        return np.asarray(probabilities, dtype=np.float64)

    def predict_image(self, image: np.ndarray | str | os.PathLike) -> list[Face]:
        """The faces of one image (an array as :func:`to_grey` takes it, or a file).

        Returns:
            One :class:`Face` per detected face (empty when none), or exactly one for the whole
            image with ``detect=False``.
        """
        if not isinstance(image, np.ndarray):
            image = read_image(image)
        grey = to_grey(image)
        if self.detect:
            boxes = detect_faces(grey)
            crops = [crop_face(grey, box, self.margin) for box in boxes]
        else:
            boxes = [(0, 0, grey.shape[1], grey.shape[0])]
            crops = [grey if grey.shape == (FER_SIZE, FER_SIZE) else
                     cv2.resize(grey, (FER_SIZE, FER_SIZE), interpolation=cv2.INTER_AREA)]
        if not boxes:
            return []
        probabilities = self.predict_faces(np.stack(crops))  # (faces, num_classes)
        return [Face(box, dict(zip(self.class_names, map(float, row), strict=True)),
                     self.class_names[int(np.argmax(row))])
                for box, row in zip(boxes, probabilities, strict=True)]

    def predict_paths(self, paths: Iterable[str | os.PathLike],
                      out: str | os.PathLike | None = None) -> PredictionReport:
        """Predict every image file of ``paths`` (files or folders, :func:`expand_paths`).

        Unreadable files are skipped and listed, never fatal. With ``out``, writes
        ``predictions.csv`` (a row per face), ``predictions.json`` (every image, its faces or
        why it has none, the skipped paths) and ``annotated/<name>.png`` per readable image.

        Returns:
            The :class:`PredictionReport`.
        """
        files, skipped = expand_paths(paths)
        results, used_names = [], set()
        for path in files:
            try:
                image = read_image(path)
            except ValueError as error:
                skipped.append(Skipped(str(path), str(error).removeprefix(f"{path}: ")))
                continue
            faces = self.predict_image(image)
            results.append(ImageResult(str(path), faces, None if faces else NO_FACE))
            if out is not None:
                name = _unique_name(path.stem, used_names)
                write_bytes(Path(out) / "annotated" / f"{name}.png",
                            _png_bytes(annotate(image, faces, self.class_names)))
        report = PredictionReport(results, skipped)
        if out is not None:
            self._write_tables(report, Path(out))
        return report

    def _write_tables(self, report: PredictionReport, out: Path) -> None:
        columns = ["file", "face", "x", "y", "width", "height", "label", "probability",
                   *self.class_names]
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        for result in report.results:
            for index, face in enumerate(result.faces):
                writer.writerow([result.file, index, *face.box, face.label,
                                 f"{face.probability:.6f}",
                                 *(f"{face.probabilities[name]:.6f}" for name in self.class_names)])
        write_text(out / "predictions.csv", text.getvalue())
        write_json(out / "predictions.json", {
            "model": self.loaded.source,
            "input_size": self.loaded.input_size,
            "tta": self._tta_predictor.protocol.name if self._tta_predictor else "none",
            "detect": self.detect,
            "margin": self.margin,
            "class_names": list(self.class_names),
            "counts": {"images": len(report.results), "faces": report.num_faces,
                       "images_without_faces": sum(not r.faces for r in report.results),
                       "skipped": len(report.skipped)},
            "images": [{"file": result.file, "message": result.message,
                        "faces": [dict(zip(("x", "y", "width", "height"), face.box,
                                           strict=True))
                                  | {"label": face.label, "probabilities": face.probabilities}
                                  for face in result.faces]}
                       for result in report.results],
            "skipped": [dataclasses.asdict(entry) for entry in report.skipped],
        })


def _unique_name(stem: str, used: set[str]) -> str:
    # Two folders may hold files of the same name; their annotated copies must not collide.
    name, number = stem, 1
    while name in used:
        number += 1
        name = f"{stem}-{number}"
    used.add(name)
    return name


_BOX_COLOUR, _BAR_COLOUR, _TEXT_COLOUR = (0, 158, 115), (0, 114, 178), (30, 30, 30)  # RGB
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MIN_SIDE, _PANEL_WIDTH, _ROW = 360, 260, 18
ANNOTATE_MAX_SIDE = 2048
"""Longest side of an annotated picture (the panel comes beside it); larger images are shrunk.

An annotated copy is for looking at the boxes, not a second copy of the photo: at full size an
8000x8000 photo's PNG took 31-60 MB. This is enough to see the faces and read the labels.
"""
# zlib level 3: OpenCV's default PNG setting (run-length strategy) leaves a noisy photo's
# annotated copy at about 10 MB for 2048 px, twice what zlib's usual strategy makes of it in
# about 0.3 s; higher levels save little more for seconds.
_PNG_COMPRESSION = 3


def _png_bytes(rgb: np.ndarray) -> bytes:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    return cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, _PNG_COMPRESSION])[1].tobytes()


def annotate(image: np.ndarray, faces: Sequence[Face], class_names: Sequence[str]) -> np.ndarray:
    """A copy of ``image`` with each face's numbered box and label, and a panel of bars.

    Small images are enlarged (nearest neighbour) so that the text stays readable; images
    larger than :data:`ANNOTATE_MAX_SIDE` are shrunk to it (area interpolation), their boxes
    with them. The panel on the right holds, per face, its label and one probability bar per
    class.

    Args:
        image: uint8 image as :func:`to_grey` takes it.
        faces: the image's faces, boxes in ``image``'s pixels.
        class_names: the model's classes, in output order.

    Returns:
        RGB uint8 ``(H', W' + panel, 3)``, ``max(H', W') <= ANNOTATE_MAX_SIDE`` unless the panel
        needs more height for many faces.
    """
    rgb = image[..., :3] if image.ndim == 3 and image.shape[-1] >= 3 else (
        cv2.cvtColor(to_grey(image), cv2.COLOR_GRAY2RGB))
    longest = max(rgb.shape[:2])
    if longest > ANNOTATE_MAX_SIDE:
        shrink = longest / ANNOTATE_MAX_SIDE
        picture = cv2.resize(rgb, (max(1, round(rgb.shape[1] / shrink)),
                                   max(1, round(rgb.shape[0] / shrink))),
                             interpolation=cv2.INTER_AREA)
    else:
        enlarge = max(1, math.ceil(_MIN_SIDE / longest))
        picture = cv2.resize(rgb, None, fx=enlarge, fy=enlarge, interpolation=cv2.INTER_NEAREST)
    scale_x, scale_y = picture.shape[1] / rgb.shape[1], picture.shape[0] / rgb.shape[0]
    line = max(1, round(max(picture.shape[:2]) / 300))
    for number, face in enumerate(faces, 1):
        x, y = round(face.box[0] * scale_x), round(face.box[1] * scale_y)
        right = round((face.box[0] + face.box[2]) * scale_x)  # one past the box, as the box's
        bottom = round((face.box[1] + face.box[3]) * scale_y)  # own x + width
        cv2.rectangle(picture, (x, y), (right - 1, bottom - 1), _BOX_COLOUR, line)
        caption = f"{number} {face.label} {face.probability:.2f}"
        (text_width, text_height), depth = cv2.getTextSize(caption, _FONT, 0.45 * line, line)
        # Above the box, or inside its top when the box touches the image's top edge.
        top = y - text_height - depth - 2 * line if y >= text_height + depth + 2 * line else y
        cv2.rectangle(picture, (x, top), (x + text_width + 2 * line, top + text_height + depth
                                          + 2 * line), _BOX_COLOUR, -1)
        cv2.putText(picture, caption, (x + line, top + text_height + line), _FONT, 0.45 * line,
                    (255, 255, 255), line, cv2.LINE_AA)

    block = (len(class_names) + 1) * _ROW + _ROW // 2  # title row, a row per class, a gap
    height = max(picture.shape[0], block * max(1, len(faces)) + _ROW)
    canvas = np.full((height, picture.shape[1] + _PANEL_WIDTH, 3), 255, np.uint8)
    canvas[:picture.shape[0], :picture.shape[1]] = picture
    left = picture.shape[1] + 8
    if not faces:
        cv2.putText(canvas, NO_FACE, (left, _ROW), _FONT, 0.5, _TEXT_COLOUR, 1, cv2.LINE_AA)
    for number, face in enumerate(faces, 1):
        top = (number - 1) * block + _ROW
        cv2.putText(canvas, f"face {number}: {face.label}", (left, top), _FONT, 0.5,
                    _TEXT_COLOUR, 1, cv2.LINE_AA)
        for row, name in enumerate(class_names, 1):
            base = top + row * _ROW
            probability = face.probabilities[name]
            cv2.putText(canvas, name[:9], (left, base), _FONT, 0.4, _TEXT_COLOUR, 1, cv2.LINE_AA)
            bar_end = left + 80 + round(120 * probability)
            cv2.rectangle(canvas, (left + 80, base - 10), (bar_end, base - 2), _BAR_COLOUR, -1)
            cv2.putText(canvas, f"{probability:.2f}", (left + 205, base), _FONT, 0.4,
                        _TEXT_COLOUR, 1, cv2.LINE_AA)
    return canvas
