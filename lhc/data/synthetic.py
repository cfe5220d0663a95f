"""Synthetic FER-like faces: the workbench's embedded default data set.

Procedurally drawn 48x48 grey faces (oval, hair line, eyes, brows, nose, mouth) whose seven
classes (0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral) are carried only by
local features, as real expressions are: brow height and angle, eye openness, mouth curvature,
openness, width and asymmetry. Every face also varies in the ways that carry no class: size,
position, in-plane rotation, lighting direction and level, background, hair, blur and sensor
noise. Each expression is drawn at a random intensity and with per-feature jitter, so weak
expressions overlap their neighbours (and Neutral) the way real ones do.

Class frequencies follow FER2013's training set (Disgust rare, Happy frequent) exactly, up to
rounding, within every split; ``label_noise`` replaces a given fraction of labels with another
class, drawn at random. :func:`write_fer2013_csv` writes Kaggle's ``fer2013.csv`` format so that
the very same reader and input pipeline serve this data and the real one. Same seed, same bytes.

Learnability, measured with ``benchmarks/synthetic_learnability.py`` (n=4000, seed 0, default
settings: 3,200 Training / 400 PublicTest / 400 PrivateTest rows; a 3-conv-layer CNN with
39,431 weights, Adam 2e-3, batch 64, 30 epochs, about 38 s of training on 2 shared CPU cores,
TensorFlow backend; chance is 14.3%, the majority class (Happy) 25.1%):

=================  ========  ==========  ===========
label_noise        Training  PublicTest  PrivateTest
=================  ========  ==========  ===========
0.0 (default)      92.3%     78.3%       78.5%
0.1                83.5%     68.5%       66.8%
=================  ========  ==========  ===========

With label noise the evaluation labels are noisy too, so 90% is the ceiling there. Generating
4,000 faces takes about 1 s.
"""

from __future__ import annotations

import gzip
import io
import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np

from lhc._io import atomic_path

CLASS_NAMES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
# FER2013's Training row counts per class (README of the shared copy; paper section 1).
FER2013_TRAIN_COUNTS = (3995, 436, 4097, 7215, 4830, 3171, 4965)
USAGES = ("Training", "PublicTest", "PrivateTest")
# FER2013 has 28,709 / 3,589 / 3,589 rows in these three usages.
DEFAULT_USAGE_FRACTIONS = (0.8, 0.1, 0.1)
IMAGE_SIZE = 48

# Expression of each class as offsets from a neutral face, one row per class:
# brow_raise (+ up), brow_tilt (+ inner ends up), eye_open (multiplier - 1),
# mouth_curve (+ corners up), mouth_open, mouth_width (multiplier - 1), lip_asym (raised side),
# teeth (visible upper teeth).
FEATURES = ("brow_raise", "brow_tilt", "eye_open", "mouth_curve", "mouth_open", "mouth_width",
            "lip_asym", "teeth")
EXPRESSIONS = np.array([
    # raise tilt  eye   curve open  width asym  teeth
    [-0.9, -1.0, -0.15, -0.4, 0.0, -0.15, 0.0, 0.0],   # Angry: brows down and in, lips pressed
    [-0.5, -0.4, -0.45, -0.4, 0.2, 0.0, 1.0, 0.3],     # Disgust: narrowed eyes, one lip side up
    [0.8, 0.7, 0.5, -0.3, 0.45, 0.25, 0.0, 0.0],       # Fear: brows up and in, wide eyes, stretched
    [0.0, 0.0, -0.2, 1.0, 0.35, 0.25, 0.0, 1.0],       # Happy: corners up, teeth
    [0.1, 1.0, -0.15, -0.9, 0.0, -0.05, 0.0, 0.0],     # Sad: inner brows up, corners down
    [1.1, 0.2, 0.6, 0.0, 1.0, -0.35, 0.0, 0.0],        # Surprise: brows up, wide eyes, round mouth
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],          # Neutral
], dtype=np.float32)
# Per-face jitter of each feature, in the same units: people differ at rest.
FEATURE_JITTER = np.array([0.30, 0.30, 0.15, 0.25, 0.10, 0.10, 0.25, 0.15], dtype=np.float32)
# Faces are rendered this many at a time, so that memory stays bounded for any n.
_CHUNK = 1024


class SyntheticSet(NamedTuple):
    """A generated data set, rows in Kaggle order (Training, then PublicTest, then PrivateTest).

    Attributes:
        images: uint8 ``(N, 48, 48)``.
        labels: int64 ``(N,)`` in 0..6, after label noise.
        usage: str ``(N,)``, one of ``Training``, ``PublicTest``, ``PrivateTest``.
    """

    images: np.ndarray
    labels: np.ndarray
    usage: np.ndarray


def generate(n: int, seed: int, *, label_noise: float = 0.0,
             usage_fractions: tuple[float, float, float] = DEFAULT_USAGE_FRACTIONS,
             min_intensity: float = 0.35, pixel_noise: float = 0.06) -> SyntheticSet:
    """Draw ``n`` synthetic FER-like faces.

    Images and clean labels depend on ``n``, ``seed``, ``usage_fractions``, ``min_intensity``
    and ``pixel_noise`` only, so that changing ``label_noise`` changes labels and nothing else.

    Args:
        n: number of rows, >= 1.
        seed: random seed; the same arguments give the same arrays.
        label_noise: fraction in [0, 1] of rows (rounded to a count) whose label is replaced by
            a different class drawn uniformly; the image keeps showing the original expression.
        usage_fractions: shares of Training, PublicTest and PrivateTest rows (>= 0, sum 1);
            each split holds FER2013's class frequencies up to rounding.
        min_intensity: lowest expression intensity in (0, 1]; intensities are uniform in
            [min_intensity, 1], lower values give more faces close to Neutral (harder).
        pixel_noise: largest standard deviation of the additive sensor noise, in [0, 1] units
            of the grey range; each face draws its own in [pixel_noise / 3, pixel_noise].

    Returns:
        A :class:`SyntheticSet` of ``n`` rows.
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise!r}")
    if not 0.0 < min_intensity <= 1.0:
        raise ValueError(f"min_intensity must be in (0, 1], got {min_intensity!r}")
    if not 0.0 <= pixel_noise <= 1.0:
        raise ValueError(f"pixel_noise must be in [0, 1], got {pixel_noise!r}")
    split_sizes = _split_sizes(n, usage_fractions)

    # Independent streams, so that one knob does not reshuffle what another one draws.
    label_rng, face_rng, pixel_rng, noise_rng = (
        np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(4))
    clean_labels = np.concatenate([label_rng.permutation(_split_labels(size))
                                   for size in split_sizes]).astype(np.int64)
    usage = np.repeat(np.array(USAGES), split_sizes)

    params = _draw_face_params(clean_labels, face_rng, min_intensity, pixel_noise)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        rows = slice(start, min(start + _CHUNK, n))
        images[rows] = _render({key: value[rows] for key, value in params.items()}, pixel_rng)
    return SyntheticSet(images, _apply_label_noise(clean_labels, label_noise, noise_rng), usage)


def write_fer2013_csv(path: str | os.PathLike, n: int, seed: int,
                      **generate_kwargs) -> SyntheticSet:
    """Generate ``n`` faces and write them atomically as a Kaggle ``fer2013.csv``.

    The header is ``emotion,pixels,Usage``; ``pixels`` holds the 2304 grey levels, row-major,
    separated by single spaces. A path ending in ``.gz`` is gzip-compressed with a fixed
    header (no file name, mtime 0), so the same arguments give the same bytes.

    Args:
        path: destination file, ``.csv`` or ``.csv.gz``.
        n: number of rows.
        seed: random seed.
        **generate_kwargs: passed on to :func:`generate`.

    Returns:
        The :class:`SyntheticSet` that was written.
    """
    data = generate(n, seed, **generate_kwargs)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        stream = (gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
                  if path.suffix == ".gz" else raw)
        with io.TextIOWrapper(stream, encoding="ascii", newline="\n") as text:
            text.write("emotion,pixels,Usage\n")
            grey_levels = [str(level) for level in range(256)]
            for image, label, usage in zip(data.images, data.labels, data.usage, strict=True):
                pixels = " ".join([grey_levels[level] for level in image.ravel().tolist()])
                text.write(f"{label},{pixels},{usage}\n")
    return data


def _split_sizes(n: int, usage_fractions) -> np.ndarray:
    fractions = np.asarray(usage_fractions, dtype=np.float64)
    if fractions.shape != (3,) or (fractions < 0).any() or not math.isclose(fractions.sum(), 1.0):
        raise ValueError("usage_fractions must be three non-negative shares of Training, "
                         f"PublicTest and PrivateTest summing to 1, got {usage_fractions!r}")
    return _largest_remainder_counts(n, fractions)


def _split_labels(size: int) -> np.ndarray:
    """Labels of one split: FER2013's class counts scaled to ``size`` rows, in class order."""
    counts = _largest_remainder_counts(size, np.asarray(FER2013_TRAIN_COUNTS, dtype=np.float64))
    return np.repeat(np.arange(len(CLASS_NAMES)), counts)


def _largest_remainder_counts(total: int, weights: np.ndarray) -> np.ndarray:
    # Integer counts summing to ``total`` and each within 1 of its exact share.
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    by_remainder = np.argsort(-(exact - counts), kind="stable")
    counts[by_remainder[:total - counts.sum()]] += 1
    return counts


def _apply_label_noise(labels: np.ndarray, label_noise: float, rng: np.random.Generator):
    noisy = labels.copy()
    flipped = rng.choice(len(labels), size=round(label_noise * len(labels)), replace=False)
    # An offset in 1..6 modulo 7 gives a uniformly drawn class other than the true one.
    offsets = rng.integers(1, len(CLASS_NAMES), size=len(flipped))
    noisy[flipped] = (labels[flipped] + offsets) % len(CLASS_NAMES)
    return noisy


def _draw_face_params(labels, rng: np.random.Generator, min_intensity: float,
                      pixel_noise: float) -> dict[str, np.ndarray]:
    """Per-face parameters, each ``(N,)`` float32: the expression and every nuisance."""
    n = len(labels)
    intensity = rng.uniform(min_intensity, 1.0, size=(n, 1))
    expression = (EXPRESSIONS[labels] * intensity
                  + rng.normal(size=(n, len(FEATURES))) * FEATURE_JITTER)
    params = {name: expression[:, index] for index, name in enumerate(FEATURES)}
    uniform = {
        # Face half-height in pixels: FER crops show the face filling most of the frame.
        "scale": (21.0, 27.0), "shift_x": (-3.5, 3.5), "shift_y": (-3.0, 4.0),
        "rotation": (-0.26, 0.26),  # radians, about +-15 degrees
        "skin_level": (0.35, 0.85), "background": (0.0, 1.0), "hair_level": (0.0, 0.45),
        "hair_line": (-0.85, -0.45), "light_angle": (-np.pi, np.pi), "light_strength": (0.0, 0.45),
        "blur": (0.0, 1.0), "noise_std": (pixel_noise / 3, pixel_noise),
        "asym_side": (-1.0, 1.0), "oval_width": (0.72, 0.88),
    }
    for name, (low, high) in uniform.items():
        params[name] = rng.uniform(low, high, size=n)
    params["asym_side"] = np.sign(params["asym_side"])
    return {name: value.astype(np.float32) for name, value in params.items()}


def _render(params: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Render faces from their parameters; every array is ``(B, 48, 48)``, vectorised over B."""
    # Each parameter as (B, 1, 1), to broadcast over the pixel grid.
    face = SimpleNamespace(**{name: value[:, None, None] for name, value in params.items()})
    batch = len(params["scale"])
    centre = (IMAGE_SIZE - 1) / 2
    y_px, x_px = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    dx = x_px - centre - face.shift_x  # (B, 48, 48)
    dy = y_px - centre - face.shift_y  # (B, 48, 48)
    cos, sin = np.cos(face.rotation), np.sin(face.rotation)
    # Face coordinates: u across (0 at the nose), v down (0 at the eye line's centre), in units
    # of the face half-height, so every feature below is placed independently of size and pose.
    u = (dx * cos + dy * sin) / face.scale
    v = (-dx * sin + dy * cos) / face.scale
    pixel = 1.0 / face.scale  # one pixel in face units, the width of every soft edge

    def inside(signed_distance):
        # Anti-aliased mask from a signed distance in face units (positive inside).
        return np.clip(0.5 + signed_distance / pixel, 0.0, 1.0)

    radius = np.sqrt((u / face.oval_width) ** 2 + ((v - 0.05) / 1.05) ** 2)
    face_mask = inside((1.0 - radius) * 0.85)
    # Shading falls off towards the face border, as on a rounded surface under frontal light.
    skin = face.skin_level * (1.0 - 0.35 * radius ** 2)
    hair = inside(face.hair_line - v + 0.08 * u ** 2)

    eye_height = 0.075 * np.clip(1.0 + face.eye_open, 0.15, None)
    eye_radius = np.sqrt(((np.abs(u) - 0.33) / 0.13) ** 2 + ((v + 0.1) / eye_height) ** 2)
    eyes = inside((1.0 - eye_radius) * np.minimum(0.13, eye_height))
    iris = inside(0.045 - np.sqrt((np.abs(u) - 0.33) ** 2 + (v + 0.1) ** 2)) * eyes

    # Brows: one segment per side, mirrored through |u|; tilt raises the inner ends (|u| small).
    along = (np.abs(u) - 0.33) / 0.17  # -1 at the inner end, +1 at the outer end
    brow_centre = -0.3 - 0.1 * face.brow_raise - 0.35 * eye_height + 0.02
    brow_line = brow_centre + 0.06 * face.brow_tilt * along
    brows = inside(0.035 - np.abs(v - brow_line)) * inside(0.17 * (1.0 - np.abs(along)))

    nose = (inside(0.03 - np.abs(u + 0.04)) * inside(0.12 - np.abs(v - 0.1)) * 0.35
            + inside(0.035 - np.sqrt((np.abs(u) - 0.07) ** 2 + (v - 0.27) ** 2)))

    # Mouth: a centre line curved by mouth_curve, tilted on one side by lip_asym, and opened into
    # a dark cavity whose height grows with mouth_open and shrinks towards the corners.
    half_width = 0.24 * np.clip(1.0 + face.mouth_width, 0.5, None)
    across = u / half_width  # -1..1 between the corners
    raised_side = np.clip(face.asym_side * across, 0.0, None)  # 0 on one half, up to 1 on the other
    mouth_line = 0.52 - 0.12 * face.mouth_curve * across ** 2 - 0.1 * face.lip_asym * raised_side
    within_corners = inside(half_width * (1.0 - np.abs(across)))
    opening = (0.12 * np.clip(face.mouth_open, 0.0, None)
               * np.sqrt(np.clip(1 - across ** 2, 0.0, 1.0)))
    lips = inside(0.03 + opening - np.abs(v - mouth_line - opening * 0.5)) * within_corners
    cavity = inside(opening - np.abs(v - mouth_line - opening * 0.5) - 0.01) * within_corners
    teeth = cavity * inside(mouth_line + 0.04 * np.clip(face.teeth, 0, 1) - v)

    # Compose back to front: background, face, hair, then features darkening the skin.
    light_x, light_y = np.cos(face.light_angle), np.sin(face.light_angle)
    light = 1.0 + face.light_strength * (light_x * dx + light_y * dy) / IMAGE_SIZE
    image = face.background * (1 - face_mask) + skin * face_mask
    image = image * (1 - hair * face_mask) + face.hair_level * hair * face_mask
    darken = np.maximum.reduce([0.55 * eyes, 0.85 * iris, 0.6 * brows, 0.3 * nose, 0.5 * lips])
    image = image * (1.0 - darken * face_mask)
    image = image * (1 - cavity) + 0.08 * cavity
    image = image * (1 - teeth) + (0.75 * face.skin_level + 0.2) * teeth
    image = _box_blur_mix(image * light, face.blur)
    image = image + rng.normal(size=(batch, IMAGE_SIZE, IMAGE_SIZE)) * face.noise_std
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def _box_blur_mix(images: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Blend each image with its 3x3 box blur by ``weight`` (B, 1, 1): cheap defocus."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")  # (B, 50, 50)
    blurred = sum(padded[:, row:row + IMAGE_SIZE, col:col + IMAGE_SIZE]
                  for row in range(3) for col in range(3)) / 9.0
    return images * (1 - weight) + blurred * weight
