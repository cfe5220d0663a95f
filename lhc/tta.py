"""Deterministic test-time augmentation (TTA): protocols as data, run as one batched graph.

The paper (section 3, "Results") averages the model's scores over a fixed set of transformed
copies of each test image, the untransformed one weighted 3. A :class:`Protocol` is that set
written out: a list of :class:`View` (flip, shifts, rotation, zoom, weight) and a divisor rule.
Four are named (:data:`PROTOCOLS`):

- ``reference``: what the original code does (``REFERENCE.md``, "TTA as implemented").
  The base view, weight 3; batch 1, every combination of rotation {0, +0.4, -0.4} rad x
  horizontal shift {0, +10, -10} px x vertical shift {0, +10, -10} px x flip {no, yes}
  except the identity: 53 views, enumerated in that nesting order (rotation outermost, flip
  innermost); batch 2, zoom 0.9 x rotation {0, +0.15, -0.15} rad x flip {no, yes}: 6 views.
  Final score = (3 * base + sum of the 59 views) / 62.
- ``paper``: our reading of the paper's text. "Horizontal flipping, +-10 pixels
  horizontal/vertical shifts and finally +-0.4 radians rotations, in this order" does not
  say whether the transformations are chained or combined; its remark that shifting before
  rotating puts the images in 25 spots instead of 9 only holds when every shift is combined
  with every rotation (the 9 shift positions, each off-centre one rotated to 3 places:
  1 + 8 x 3 = 25), so batch 1 is the same 53 views as ``reference``. Batch 2, "flipping,
  10% zoom and again +-0.4 radians rotations": zoom 0.9 x rotation {0, +0.4, -0.4} x flip,
  6 views (the code uses +-0.15 here, the only difference). Base weight 3, divisor 62.
- ``flip``: the image and its mirror, weight 1 each, divisor 2.
- ``none``: the image alone.

Geometry at input side ``S`` (square images ``(B, S, S, C)``, pixel centres at integer
indices, row ``i`` downwards, column ``j`` rightwards), in the order applied:

1. ``flip``: column ``j`` -> ``S - 1 - j``.
2. ``zoom`` ``f`` < 1: the central crop of ``tf.image.central_crop(f)`` (start
   ``int((S - S f) / 2)``, side ``S - 2 start``), resized back to ``S`` x ``S`` bilinearly
   with half-pixel centres (``tf.image.resize``). A point at distance ``r`` from the centre
   ``(S - 1) / 2`` moves to ``r S / side``, which is ``r / f`` when ``S (1 - f) / 2`` is a whole
   number (e.g. ``S = 60``); at 224, 0.9 crops 202 px (factor 1.109).
3. ``shift_x``, ``shift_y``: given in pixels at 224 (:data:`REFERENCE_SIZE`), applied as
   ``shift * S / 224`` pixels, the exact fraction: the image moves by the same share of its
   side at every input size. Positive moves the content right / down. At 48, 10 px is
   2.142857 px: bilinear sampling spreads a one-pixel dot at column ``j`` over ``j + 2``
   (6/7 of it) and ``j + 3`` (1/7).
4. ``rotation`` ``a`` rad about the centre ``((S - 1) / 2, (S - 1) / 2)``, counter-clockwise on
   screen for ``a`` > 0 (``tfa.image.rotate``'s convention): a quarter turn takes pixel
   ``(i, j)`` to ``(S - 1 - j, i)``.

Each step is its own resampling (bilinear, fill ``nearest``), as the original code applies
``tf.image`` and ``tfa.image`` operations one after the other; views without a step skip it
(or get its exact identity). The transforms are ``keras.ops`` (``affine_transform`` maps every
output pixel to an input point, i.e. takes the inverse of the motion described above).

:class:`TTAPredictor` (and :func:`predict_tta`) builds all views of a batch of images inside
the compiled predict function of a wrapper model and sends them through the classifier in
batches of at most ``max_batch`` images; :func:`predict_tta_looped` is the original code's form
(one eager transform and one ``model.predict`` per view), the yardstick of ``benchmarks/tta.py``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence

import keras
import numpy as np
from keras import ops

__all__ = [
    "PROTOCOLS",
    "REFERENCE_SIZE",
    "Protocol",
    "TTAPredictor",
    "View",
    "apply_views",
    "get_protocol",
    "predict_tta",
    "predict_tta_looped",
    "protocol_from_dicts",
]

REFERENCE_SIZE = 224  # the paper's input side, in whose pixels shifts are given
VIEW_KEYS = ("flip", "shift_x", "shift_y", "rotation", "zoom", "weight")
DIVISOR_RULES = ("weight_sum",)


@dataclasses.dataclass(frozen=True)
class View:
    """One transformed copy of the input (module docstring: geometry and order).

    Attributes:
        flip: mirror left-right.
        shift_x: horizontal shift in pixels at 224, positive to the right.
        shift_y: vertical shift in pixels at 224, positive downwards.
        rotation: radians about the image centre, positive counter-clockwise on screen.
        zoom: central crop fraction in (0, 1] resized back to full size; 1 is no zoom.
        weight: the view's weight in the weighted sum of scores, > 0.
    """

    flip: bool = False
    shift_x: float = 0.0
    shift_y: float = 0.0
    rotation: float = 0.0
    zoom: float = 1.0
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.flip, bool | np.bool_):
            raise ValueError(f"flip: expected true or false, got {self.flip!r}")
        for key in ("shift_x", "shift_y", "rotation", "zoom", "weight"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number) \
                    or not math.isfinite(value):
                raise ValueError(f"{key}: expected a finite number, got {value!r}")
        if not 0 < self.zoom <= 1:
            raise ValueError(f"zoom: expected a central crop fraction in (0, 1], got {self.zoom!r}")
        if self.weight <= 0:
            raise ValueError(f"weight: expected a positive number, got {self.weight!r}")

    @property
    def is_identity(self) -> bool:
        """True when the view leaves the image unchanged."""
        return (not self.flip and self.shift_x == 0 and self.shift_y == 0 and self.rotation == 0
                and self.zoom == 1)


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A TTA protocol: views and a divisor rule.

    Attributes:
        name: shown in reports.
        views: the views, the base (identity) view included when wanted.
        divisor: ``"weight_sum"`` (the weighted mean of the views' scores; the paper's
            ``(3 * base + sum of views) / 62``) or a positive number to divide the weighted
            sum by.
    """

    name: str
    views: tuple[View, ...]
    divisor: float | str = "weight_sum"

    def __post_init__(self) -> None:
        if not self.views:
            raise ValueError(f"protocol {self.name!r}: views: expected at least one view")
        if isinstance(self.divisor, str):
            if self.divisor not in DIVISOR_RULES:
                raise ValueError(f"protocol {self.name!r}: divisor: expected one of "
                                 f"{', '.join(DIVISOR_RULES)} or a positive number, "
                                 f"got {self.divisor!r}")
        elif isinstance(self.divisor, bool) or not isinstance(self.divisor, int | float) \
                or not math.isfinite(self.divisor) or self.divisor <= 0:
            raise ValueError(f"protocol {self.name!r}: divisor: expected a positive number or "
                             f"{', '.join(DIVISOR_RULES)}, got {self.divisor!r}")

    @property
    def divisor_value(self) -> float:
        """The number the weighted sum of scores is divided by."""
        if self.divisor == "weight_sum":
            return float(sum(view.weight for view in self.views))
        return float(self.divisor)

    def to_dict(self) -> dict:
        """JSON-ready form: name, divisor rule and value, and the views."""
        return {"name": self.name, "divisor": self.divisor, "divisor_value": self.divisor_value,
                "views": [dataclasses.asdict(view) for view in self.views]}


def protocol_from_dicts(views: Iterable[Mapping], *, name: str = "custom",
                        divisor: float | str = "weight_sum") -> Protocol:
    """A user's protocol from a list of dicts with keys among :data:`VIEW_KEYS`.

    Args:
        views: one mapping per view; missing keys take :class:`View`'s defaults.
        name: the protocol's name.
        divisor: the divisor rule (:class:`Protocol`).

    Returns:
        The validated protocol.

    Raises:
        ValueError: naming the view (1-based) and the unknown key or bad value.
    """
    parsed = []
    for index, view in enumerate(views, 1):
        where = f"protocol {name!r}, view {index}"
        if not isinstance(view, Mapping):
            raise ValueError(f"{where}: expected a mapping with keys among "
                             f"{', '.join(VIEW_KEYS)}, got {view!r}")
        for key in view:
            if key not in VIEW_KEYS:
                raise ValueError(f"{where}: unknown key {key!r}; expected some of "
                                 f"{', '.join(VIEW_KEYS)}")
        try:
            parsed.append(View(**view))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    return Protocol(name, tuple(parsed), divisor)


def _paper_family(name: str, batch2_rotation: float) -> Protocol:
    views = [View(weight=3.0)]
    for rotation in (0.0, 0.4, -0.4):
        for shift_x in (0.0, 10.0, -10.0):
            for shift_y in (0.0, 10.0, -10.0):
                for flip in (False, True):
                    view = View(flip, shift_x, shift_y, rotation)
                    if not view.is_identity:
                        views.append(view)
    for rotation in (0.0, batch2_rotation, -batch2_rotation):
        for flip in (False, True):
            views.append(View(flip=flip, rotation=rotation, zoom=0.9))
    return Protocol(name, tuple(views))


PROTOCOLS: Mapping[str, Protocol] = {
    "none": Protocol("none", (View(),)),
    "flip": Protocol("flip", (View(), View(flip=True))),
    "paper": _paper_family("paper", 0.4),
    "reference": _paper_family("reference", 0.15),
}


def get_protocol(spec: str | Protocol | Sequence[Mapping]) -> Protocol:
    """A named protocol, a :class:`Protocol` as is, or a user's list of view dicts."""
    if isinstance(spec, Protocol):
        return spec
    if isinstance(spec, str):
        if spec not in PROTOCOLS:
            raise ValueError(f"unknown TTA protocol {spec!r}; expected one of "
                             f"{', '.join(PROTOCOLS)} or a list of views")
        return PROTOCOLS[spec]
    return protocol_from_dicts(spec)


def _central_crop_box(size: int, fraction: float) -> tuple[int, int]:
    """(start, side) of ``tf.image.central_crop``'s crop of a ``size``-pixel side."""
    start = int((size - size * fraction) / 2)
    return start, size - 2 * start


def _translation(view: View, size: int) -> list[float]:
    # affine_transform maps output (x, y) to input (x - dx, y - dy): content moves by +dx, +dy.
    scale = size / REFERENCE_SIZE
    return [1.0, 0.0, -view.shift_x * scale, 0.0, 1.0, -view.shift_y * scale, 0.0, 0.0]


def _rotation(angle: float, size: int) -> list[float]:
    # Output point p samples input c + R (p - c), R = [[cos, -sin], [sin, cos]], c the centre;
    # on screen (y down) that turns the content counter-clockwise by the angle.
    centre = (size - 1) / 2
    cos, sin = math.cos(angle), math.sin(angle)
    return [cos, -sin, centre - cos * centre + sin * centre,
            sin, cos, centre - sin * centre - cos * centre, 0.0, 0.0]


def _resample(images, matrices: list[list[float]], batch):
    """Each view's block of ``batch`` images through its own affine map (bilinear, nearest)."""
    table = ops.convert_to_tensor(np.asarray(matrices, dtype="float32"))  # (V, 8)
    transforms = ops.repeat(table, batch, axis=0)  # (V*B, 8), view-major like the images
    return ops.image.affine_transform(images, transforms, interpolation="bilinear",
                                      fill_mode="nearest")


def apply_views(images, views: Sequence[View]):
    """All views of a batch of images, view-major.

    Args:
        images: float ``(B, S, S, C)``.
        views: the views to make.

    Returns:
        float32 ``(V*B, S, S, C)``: rows ``v*B .. v*B + B - 1`` are view ``v`` of the batch.
    """
    images = ops.convert_to_tensor(images, dtype="float32")
    size = images.shape[1]
    if size is None or images.shape[2] != size:
        raise ValueError(f"TTA needs square images of static size (B, S, S, C), got "
                         f"{tuple(images.shape)}")
    batch = ops.shape(images)[0]
    # Flip and zoom act the same on every image of a view: made once per distinct pair.
    variants = {}
    for view in views:
        key = (view.flip, view.zoom)
        if key not in variants:
            variant = ops.flip(images, axis=2) if view.flip else images
            if view.zoom < 1:
                start, side = _central_crop_box(size, view.zoom)
                variant = ops.image.resize(variant[:, start:start + side, start:start + side, :],
                                           (size, size), interpolation="bilinear")
            variants[key] = variant
    stacked = ops.concatenate([variants[(view.flip, view.zoom)] for view in views], axis=0)
    if any(view.shift_x or view.shift_y for view in views):
        stacked = _resample(stacked, [_translation(view, size) for view in views], batch)
    if any(view.rotation for view in views):
        stacked = _resample(stacked, [_rotation(view.rotation, size) for view in views], batch)
    return stacked


class _BatchedTTA(keras.Model):
    """Wraps a classifier: images in, TTA scores out, every view made inside the graph."""

    def __init__(self, classifier: keras.Model, protocol: Protocol, views_per_call: int):
        super().__init__(name="batched_tta")
        self.classifier = classifier
        self.view_groups = tuple(protocol.views[start:start + views_per_call]
                                 for start in range(0, len(protocol.views), views_per_call))
        self.divisor = protocol.divisor_value

    def call(self, images):
        total = 0.0
        for group in self.view_groups:
            scores = self.classifier(apply_views(images, group), training=False)  # (G*B, K)
            scores = ops.reshape(scores, (len(group), -1, scores.shape[-1]))  # (G, B, K)
            weights = ops.convert_to_tensor([view.weight for view in group], dtype=scores.dtype)
            total = total + ops.einsum("g,gbk->bk", weights, scores)  # (B, K)
        return total / self.divisor


def _is_dataset(data) -> bool:
    tf = sys.modules.get("tensorflow")  # a tf.data.Dataset implies TensorFlow is imported
    return tf is not None and isinstance(data, tf.data.Dataset)


class TTAPredictor:
    """A classifier and a protocol, compiled once: call it on images for TTA scores.

    All views of a batch of images are built inside one compiled function (``tf.function`` on
    TensorFlow) and go through the model together: ``max_batch // V`` images per step with all
    their ``V`` views in one model call; when ``V > max_batch``, one image per step and its views
    in calls of at most ``max_batch``. The model's batch never exceeds ``max_batch``. The first
    call traces the function; later calls on images of the same size reuse it.

    Args:
        model: a classifier, ``(B, S, S, C)`` -> ``(B, K)`` scores (probabilities).
        protocol: a name in :data:`PROTOCOLS`, a :class:`Protocol` or a list of view dicts.
        max_batch: the most images per model call.
    """

    def __init__(self, model: keras.Model,
                 protocol: str | Protocol | Sequence[Mapping] = "reference", max_batch: int = 256):
        self.protocol = get_protocol(protocol)
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch: expected a positive integer, got {max_batch!r}")
        num_views = len(self.protocol.views)
        self.images_per_step = max(1, max_batch // num_views)
        self._wrapper = _BatchedTTA(model, self.protocol,
                                    views_per_call=min(num_views, max_batch))

    def __call__(self, images) -> np.ndarray:
        """TTA scores of ``images``.

        Args:
            images: float ``(N, S, S, C)`` model-ready images (e.g. pixels in [0, 255]), an
                iterator of batches of them, or a ``tf.data.Dataset`` of batches of them (or of
                ``(images, labels)`` batches).

        Returns:
            float32 ``(N, K)``: the weighted sum of the views' scores over the divisor.
        """
        if isinstance(images, Iterator):  # batches, e.g. lhc.data.pipeline.preprocessed_batches
            return np.concatenate([self(batch) for batch in images])
        if _is_dataset(images):
            steps = images.map(lambda *element: element[0]).unbatch().batch(self.images_per_step)
            with warnings.catch_warnings():
                # Re-batching loses the data set's length; Keras then warns when it ends.
                warnings.filterwarnings("ignore", message="Your input ran out of data")
                return self._wrapper.predict(steps, verbose=0)
        return self._wrapper.predict(np.asarray(images, dtype="float32"),
                                     batch_size=self.images_per_step, verbose=0)


def predict_tta(model: keras.Model, images,
                protocol: str | Protocol | Sequence[Mapping] = "reference",
                max_batch: int = 256) -> np.ndarray:
    """TTA scores in one call: ``TTAPredictor(model, protocol, max_batch)(images)``.

    Args:
        model: a classifier, ``(B, S, S, C)`` -> ``(B, K)`` scores.
        images: as for :meth:`TTAPredictor.__call__`.
        protocol: a name in :data:`PROTOCOLS`, a :class:`Protocol` or a list of view dicts.
        max_batch: the most images per model call.

    Returns:
        float32 ``(N, K)`` scores.
    """
    return TTAPredictor(model, protocol, max_batch)(images)


def predict_tta_looped(model: keras.Model, images,
                       protocol: str | Protocol | Sequence[Mapping] = "reference",
                       batch_size: int = 128) -> np.ndarray:
    """The original code's form of :func:`predict_tta`: per view, every image is transformed
    (eagerly) and sent through its own ``model.predict``; slow, kept as the yardstick.

    Args:
        model: a classifier.
        images: float ``(N, S, S, C)`` model-ready images.
        protocol: as for :func:`predict_tta`.
        batch_size: ``model.predict``'s batch size (the original code's 128).

    Returns:
        float32 ``(N, K)`` scores.
    """
    protocol = get_protocol(protocol)
    images = np.asarray(images, dtype="float32")
    total = 0.0
    for view in protocol.views:
        views = images if view.is_identity else apply_views(images, [view])
        total = total + view.weight * model.predict(views, batch_size=batch_size, verbose=0)
    return (total / protocol.divisor_value).astype("float32")
