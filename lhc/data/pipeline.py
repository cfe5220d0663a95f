"""The input pipeline on any Keras backend: host batches of 48x48 grey images, preprocessing and
augmentation on the device, inside the compiled step.

What the paper's code does (REFERENCE.md, "Data and training as implemented"): bilinear resize
48 -> 224, three equal channels, pixel values left in [0, 255] (the network's input
BatchNorm normalises them), Keras ``ImageDataGenerator`` augmentation per training stage with
fill mode ``nearest``, horizontal flip on in stages 1 and 2. Here the work is split so that no
step needs TensorFlow and nothing runs per image in Python:

    host:   uint8 (N, 48, 48) -> order of the epoch, a permutation of (seed, epoch) -> slice a
            batch -> float32 (B, 48, 48, 1)                                 (:class:`EpochBatches`)
    device: bilinear resize to S -> augment (seeded layers, training only) -> 3 equal channels
            -> the classifier                                 (:func:`input_model`, :func:`with_inputs`)

The project owns the order: batch ``i`` of epoch ``e`` is the same on every backend and after a
resume, and a seed sweep changes it only through the seed. The augmentation layers draw from
seed generators whose states are variables of the training model, so a checkpoint of that
model's variables carries them (:mod:`lhc.training.checkpoints`). For evaluation, TTA,
ablations, attention maps and prediction, :func:`preprocess` is the same resize and channel
copy, without augmentation.

Differences from ``ImageDataGenerator`` worth knowing:

- Augmentation uses Keras preprocessing layers (``RandomRotation``, ``RandomTranslation``,
  ``RandomZoom``, ``RandomFlip``), one after the other: up to three bilinear resamplings,
  where ``ImageDataGenerator`` composes one affine matrix and resamples once.
- The layers run in float32 whatever the precision policy: interpolating 0-255 pixel values
  in bfloat16 would move them by up to a grey level.

``paper_jpeg=True`` reproduces the paper's ETL quirk (paper section "Training"): every training
image resized to the model's size, floored to uint8 and stored as JPEG (quality 100, no chroma
subsampling), then decoded back for training. The JPEG bytes are written once with Pillow into
``jpeg_cache_dir`` (one ``.npz``: the bytes of all images and their offsets), named by a content
hash of the images and the size, and decoded batch by batch on the host: the batches are then
(B, S, S, 3) and the device-side resize keeps their size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import keras
import numpy as np

from lhc._io import atomic_path

FILL_MODES = ("nearest", "reflect", "wrap", "constant")
# Part of the cache key: a change to how the JPEG cache is made must not reuse old files.
_JPEG_CACHE_FORMAT = "lhc-paper-jpeg-v2:bilinear,floor,uint8,rgb,quality=100,no-chroma-subsampling"
_PREPROCESS_BATCH_SIZE = 256  # images resized at once by preprocess(): bounds its memory
__all__ = ["FILL_MODES", "STAGE_AUGMENTATION", "Augmentation", "EpochBatches",
           "augmentation_from_dict", "augmentation_layers", "epoch_order", "input_model",
           "paper_jpeg_cache", "preprocess", "preprocessed_batches", "read_jpeg_cache", "with_inputs"]


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One training stage's augmentation, in ``ImageDataGenerator``'s terms.

    Attributes:
        rotation_degrees: Rotation drawn uniformly in [-r, r] degrees.
        width_shift: Horizontal shift drawn uniformly in [-w, w] times the image width.
        height_shift: Vertical shift drawn uniformly in [-h, h] times the image height.
        zoom: Zoom factors drawn uniformly in [1 - z, 1 + z], independently for the two axes
            (as ``ImageDataGenerator(zoom_range=z)`` does).
        horizontal_flip: Mirror left-right with probability 1/2.
        fill_mode: How pixels that come from outside the image are filled.
    """

    rotation_degrees: float = 0.0
    width_shift: float = 0.0
    height_shift: float = 0.0
    zoom: float = 0.0
    horizontal_flip: bool = False
    fill_mode: str = "nearest"

    def __post_init__(self) -> None:
        _check_range("rotation_degrees", self.rotation_degrees, 0.0, 180.0)
        for name in ("width_shift", "height_shift", "zoom"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        if not isinstance(self.horizontal_flip, bool):
            raise ValueError(f"Augmentation.horizontal_flip: expected true or false, "
                             f"got {self.horizontal_flip!r}")
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"Augmentation.fill_mode: expected one of {', '.join(FILL_MODES)}, "
                             f"got {self.fill_mode!r}")

    @property
    def is_identity(self) -> bool:
        """True when no transformation is ever applied (all ranges zero, no flip)."""
        return (self.rotation_degrees == 0 and self.width_shift == 0 and self.height_shift == 0
                and self.zoom == 0 and not self.horizontal_flip)


def _check_range(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"Augmentation.{name}: expected a number in [{low:g}, {high:g}], "
                         f"got {value!r}")


# Paper section "Training" plus REFERENCE.md: flip is on in stages 1 and 2, fill mode nearest.
STAGE_AUGMENTATION: Mapping[int, Augmentation] = MappingProxyType({
    1: Augmentation(rotation_degrees=30, horizontal_flip=True),
    2: Augmentation(rotation_degrees=10, width_shift=0.1, height_shift=0.1, zoom=0.1,
                    horizontal_flip=True),
    3: Augmentation(),
    4: Augmentation(),
})


def augmentation_from_dict(settings: Mapping[str, Any]) -> Augmentation:
    """Build an :class:`Augmentation` from a config mapping, rejecting unknown keys.

    Args:
        settings: Keys among the fields of :class:`Augmentation`; missing keys take defaults.

    Returns:
        The validated augmentation.

    Raises:
        ValueError: naming the first unknown key, or the field whose value is out of range.
    """
    if not isinstance(settings, Mapping):
        raise ValueError(f"augmentation: expected a mapping of settings, got {settings!r}")
    known = [field.name for field in dataclasses.fields(Augmentation)]
    for key in settings:
        if key not in known:
            raise ValueError(f"augmentation: unknown key {key!r}; expected some of "
                             f"{', '.join(known)}")
    return Augmentation(**settings)


def augmentation_layers(augmentation: Augmentation, seed: int) -> list[keras.layers.Layer]:
    """The Keras preprocessing layers that carry out ``augmentation``, each seeded.

    Args:
        augmentation: What to apply; zero ranges give no layer.
        seed: Seeds the layers (each gets its own seed derived from it, so that their random
            streams are independent).

    Returns:
        Layers to call in order with ``training=True`` on float images ``(B, H, W, C)``.
    """
    rotation_seed, translation_seed, zoom_seed, flip_seed = (
        int(value) for value in np.random.SeedSequence(seed).generate_state(4))
    common = {"fill_mode": augmentation.fill_mode, "dtype": "float32"}
    layers: list[keras.layers.Layer] = []
    if augmentation.rotation_degrees:
        layers.append(keras.layers.RandomRotation(augmentation.rotation_degrees / 360.0,
                                                  seed=rotation_seed, **common))
    if augmentation.width_shift or augmentation.height_shift:
        layers.append(keras.layers.RandomTranslation(augmentation.height_shift,
                                                     augmentation.width_shift,
                                                     seed=translation_seed, **common))
    if augmentation.zoom:
        layers.append(keras.layers.RandomZoom(augmentation.zoom, augmentation.zoom,
                                              seed=zoom_seed, **common))
    if augmentation.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=flip_seed, dtype="float32"))
    if keras.backend.backend() == "jax":
        for layer in layers:
            # Keras marks rotation, translation and zoom unfit for XLA because TensorFlow's
            # projective-transform kernel has no XLA version, and one such layer turns
            # compilation off for the whole training step. On JAX they are keras.ops
            # (map_coordinates) and compile: without this the step ran op by op.
            layer.supports_jit = True
    return layers


def epoch_order(num_images: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the images in ``epoch`` (0-based): a permutation drawn from (seed, epoch).

    The same on every machine and backend (NumPy's PCG64 from a ``SeedSequence``), and the
    same epoch after a resume as in an uninterrupted run.
    """
    return np.random.default_rng([seed, epoch]).permutation(num_images)


class EpochBatches(keras.utils.PyDataset):
    """Batches of a split as Keras' ``fit``, ``evaluate`` and ``predict`` take them, any backend.

    Batch ``i`` of epoch ``e`` holds the images ``epoch_order(N, seed, e)[i*B:(i+1)*B]`` (or the
    images in their order without ``shuffle``) as float32 ``(b, H, W, C)`` pixel values in
    [0, 255], and their labels as int32 ``(b,)``. The epoch is set by the training loop
    (:meth:`set_epoch`, from a callback's ``on_epoch_begin``), never counted here, so that the
    order cannot drift from the epoch Keras reports.

    With several processes (``process_count``), each process yields its contiguous share of
    every global batch (rows ``[p b / P, (p + 1) b / P)``), which is how Keras assembles a global
    batch from process-local data on JAX. A global batch is split over ``replicas`` devices (all
    processes' together), so the batch size must divide by it, and the last, shorter batch
    leaves out its last ``(N mod B) mod replicas`` rows (:attr:`dropped`; other rows each epoch
    when shuffled, the same last rows of a validation or test split) so that it splits evenly.

    Args:
        images: uint8 ``(N, H, W)`` grey images, or ``(N, H, W, 3)`` (decoded JPEGs).
        labels: integer ``(N,)`` classes in [0, num_classes).
        batch_size: global batch size.
        seed: the order's seed (the runner derives it from the run's seed and the stage).
        shuffle: reorder every epoch; False keeps the images' order (validation, test).
        num_classes: for the label check.
        jpeg: ``(data, offsets)`` of a :func:`read_jpeg_cache` file: the images are then the
            decoded JPEGs at the model's size (``images`` is ignored but for its count).
        host_size: resize on the host to this side, three channels (:func:`preprocess`): how
            the splits beside JPEG training batches reach the same size.
        process_index: this process's index among ``process_count``.
        process_count: the processes feeding one global batch together.
        replicas: the devices one global batch is split over (at least ``process_count``).
        **kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size`` of ``PyDataset``.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, *, seed: int = 0,
                 shuffle: bool = True, num_classes: int = 7,
                 jpeg: tuple[np.ndarray, np.ndarray] | None = None,
                 host_size: int | None = None, process_index: int = 0, process_count: int = 1,
                 replicas: int = 1, **kwargs):
        super().__init__(**kwargs)
        _check_arrays(images, labels, num_classes)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"EpochBatches: batch_size must be a positive integer, "
                             f"got {batch_size!r}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"EpochBatches: process_index {process_index} is not in "
                             f"[0, {process_count})")
        replicas = max(replicas, process_count)
        if replicas % process_count:
            raise ValueError(f"EpochBatches: {replicas} replicas do not divide among "
                             f"{process_count} processes")
        if batch_size % replicas:
            raise ValueError(f"EpochBatches: batch_size {batch_size} does not divide among "
                             f"{replicas} replicas ({process_count} processes)")
        self.images, self.labels = images, labels.astype(np.int32)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.jpeg, self.host_size = jpeg, host_size
        self.process_index, self.process_count = process_index, process_count
        self.epoch = 0
        self._order = epoch_order(len(images), seed, 0) if shuffle else np.arange(len(images))
        self.dropped = len(images) % batch_size % replicas

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (0-based) from now on."""
        self.epoch = epoch
        if self.shuffle:
            self._order = epoch_order(len(self.images), self.seed, epoch)

    @property
    def num_batches(self) -> int:
        return math.ceil((len(self.images) - self.dropped) / self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} of {self.num_batches}")
        end = min((index + 1) * self.batch_size, len(self.images) - self.dropped)
        rows = self._order[index * self.batch_size:end]
        share = len(rows) // self.process_count
        rows = rows[self.process_index * share:(self.process_index + 1) * share]
        if self.jpeg is not None:
            batch = _decode_jpegs(*self.jpeg, rows)  # (b, S, S, 3) uint8
        elif self.host_size is not None:
            batch = next(preprocessed_batches(self.images[rows], self.host_size, len(rows)))
        else:
            batch = self.images[rows]
            if batch.ndim == 3:
                batch = batch[..., None]  # (b, H, W) -> (b, H, W, 1)
        return batch.astype(np.float32), self.labels[rows]


def input_model(image_size: int, *, source_shape: tuple[int, int, int] = (48, 48, 1),
                augmentation: Augmentation | None = None, seed: int = 0,
                name: str = "inputs") -> keras.Model:
    """The device side of the pipeline: resize, augment (in training only), three channels.

    Args:
        image_size: side S of the classifier's square input.
        source_shape: ``(H, W, C)`` of the batches fed in: ``(48, 48, 1)`` grey FER2013, or
            ``(S, S, 3)`` decoded JPEGs (then the resize keeps the size).
        augmentation: the stage's augmentation; None or identity adds no layer.
        seed: seeds the augmentation layers (:func:`augmentation_layers`).
        name: the model's name.

    Returns:
        A model from float32 ``(B, *source_shape)`` to float32 ``(B, S, S, 3)`` in [0, 255]. Its
        augmentation layers act only when called with ``training=True`` (as ``fit`` does).
    """
    inputs = keras.Input(source_shape, dtype="float32", name=f"{name}_pixels")
    images = keras.layers.Resizing(image_size, image_size, interpolation="bilinear",
                                   dtype="float32", name=f"{name}_resize")(inputs)
    if augmentation is not None and not augmentation.is_identity:
        for layer in augmentation_layers(augmentation, seed):
            images = layer(images)
    if source_shape[-1] == 1:
        # Augmenting one grey channel and copying it afterwards is 3x cheaper than augmenting 3.
        images = keras.layers.Concatenate(axis=-1, dtype="float32", name=f"{name}_rgb")(
            [images, images, images])  # (B, S, S, 1) -> (B, S, S, 3)
    return keras.Model(inputs, images, name=name)


def with_inputs(model: keras.Model, *, source_shape: tuple[int, int, int] = (48, 48, 1),
                augmentation: Augmentation | None = None, seed: int = 0) -> keras.Model:
    """``model`` behind :func:`input_model`: what a training stage compiles, fits and validates.

    The classifier is nested, not copied: training the returned model trains ``model``'s own
    weights, and ``model`` alone is what a stage saves.
    """
    image_size = model.input_shape[1]
    preprocessing = input_model(image_size, source_shape=source_shape, augmentation=augmentation,
                                seed=seed, name=f"{model.name}_inputs")
    inputs = keras.Input(source_shape, dtype="float32", name="pixels")
    return keras.Model(inputs, model(preprocessing(inputs)), name=f"{model.name}_training")


def preprocessed_batches(images: np.ndarray, image_size: int,
                         batch_size: int = _PREPROCESS_BATCH_SIZE) -> Iterator[np.ndarray]:
    """:func:`preprocess` batch by batch: float32 ``(b, S, S, 3)`` arrays, in the images' order."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
        described = (f"{images.dtype} array of shape {images.shape}"
                     if isinstance(images, np.ndarray) else type(images).__name__)
        raise ValueError(f"preprocess: images must be a uint8 array (N, H, W) of grey images, "
                         f"got a {described}")
    for start in range(0, len(images), batch_size):
        grey = images[start:start + batch_size, :, :, None].astype(np.float32)  # (b, H, W, 1)
        resized = keras.ops.image.resize(grey, (image_size, image_size),
                                         interpolation="bilinear")  # (b, S, S, 1)
        yield np.repeat(keras.ops.convert_to_numpy(resized), 3, axis=-1)  # (b, S, S, 3)


def preprocess(images: np.ndarray, image_size: int) -> np.ndarray:
    """Grey uint8 ``(N, H, W)`` to the classifier's float32 ``(N, S, S, 3)`` in [0, 255].

    The same bilinear resize and channel copy as training (:func:`input_model`), without
    augmentation: for evaluation, TTA, ablations, attention maps and prediction.
    """
    return np.concatenate(list(preprocessed_batches(images, image_size)) or
                          [np.zeros((0, image_size, image_size, 3), np.float32)])


def paper_jpeg_cache(images: np.ndarray, image_size: int,
                     cache_dir: str | os.PathLike) -> Path:
    """Path of the JPEG cache of ``images`` at ``image_size``, written if absent.

    Each image: bilinear resize to ``image_size`` (as :func:`preprocess`), floored to uint8,
    three equal channels, JPEG quality 100 without chroma subsampling (paper section
    "Training"), encoded by Pillow. The file (``.npz`` with ``data``, every image's bytes one
    after the other, and ``offsets``, ``N + 1`` positions into it) is named by a hash of the
    images' bytes and shape and of ``image_size``, so changed data never reuses a stale cache;
    it is written atomically.

    Returns:
        The cache file's path; :func:`read_jpeg_cache` opens it for :class:`EpochBatches`.
    """
    from PIL import Image

    digest = hashlib.sha256()
    digest.update(_JPEG_CACHE_FORMAT.encode())
    digest.update(repr((images.shape, image_size)).encode())
    digest.update(np.ascontiguousarray(images).data)
    path = Path(cache_dir) / f"paper_jpeg_{image_size}px_{digest.hexdigest()[:24]}.npz"
    if path.exists():
        return path
    encoded = []
    for batch in preprocessed_batches(images, image_size):
        for image in np.floor(batch).astype(np.uint8):  # (S, S, 3)
            buffer = io.BytesIO()
            Image.fromarray(image, "RGB").save(buffer, "JPEG", quality=100, subsampling=0)
            encoded.append(buffer.getvalue())
    offsets = np.cumsum([0] + [len(jpeg) for jpeg in encoded], dtype=np.int64)  # (N + 1,)
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    with atomic_path(path) as tmp:
        np.savez(tmp, data=data, offsets=offsets)
    return path


def read_jpeg_cache(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(data, offsets)`` of a :func:`paper_jpeg_cache` file, as :class:`EpochBatches` takes."""
    with np.load(path) as stored:
        return stored["data"], stored["offsets"]


def _decode_jpegs(data: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The JPEGs numbered ``rows``: uint8 ``(b, S, S, 3)``."""
    from PIL import Image

    # Pillow decodes with libjpeg's accurate integer DCT, as ImageDataGenerator's PIL does.
    return np.stack([np.asarray(Image.open(io.BytesIO(data[offsets[row]:offsets[row + 1]]
                                                      .tobytes())).convert("RGB"))
                     for row in rows])


def _check_arrays(images: Any, labels: Any, num_classes: int) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
        described = (f"{images.dtype} array of shape {images.shape}"
                     if isinstance(images, np.ndarray) else type(images).__name__)
        raise ValueError(f"EpochBatches: images must be a uint8 array (N, H, W) of grey images, "
                         f"got a {described}")
    if len(images) == 0:
        raise ValueError("EpochBatches: images is empty; expected at least one image")
    if (not isinstance(labels, np.ndarray) or not np.issubdtype(labels.dtype, np.integer)
            or labels.shape != (len(images),)):
        described = (f"{labels.dtype} array of shape {labels.shape}"
                     if isinstance(labels, np.ndarray) else type(labels).__name__)
        raise ValueError(f"EpochBatches: labels must be an integer array of shape "
                         f"({len(images)},), one per image, got a {described}")
    out_of_range = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if out_of_range.size:
        index = int(out_of_range[0])
        raise ValueError(f"EpochBatches: label {int(labels[index])} at index {index} is outside "
                         f"[0, {num_classes}) ({out_of_range.size} such labels)")
