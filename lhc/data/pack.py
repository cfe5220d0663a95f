"""A compact, lossless pack of FER2013 for machines that receive the project as one small copy.

A GPU machine with no network gets the repository as one copy of at most 64 MiB, so the data
has to travel inside it: :func:`write_pack` turns a FER2013 source (or a loaded
:class:`~lhc.data.FER2013Data`) into one ``.lhcpack`` file, :func:`read_pack` turns it back,
pixel for pixel, and :func:`lhc.data.load_fer2013` reads a pack like any other source.
Decoding needs numpy and the standard library only: no image codec.

What a pack holds: the images, labels, the split of every row (Training -> train, ...), the
provenance of every row (source file name relative to the source's folder, and its line),
the reader's split convention, notes, rows read and skipped rows. Integrity: the header and
the payload each carry a sha256 checked before decoding, and the sha256 of the raw pixel
bytes (uint8 ``(N, 48, 48)`` in pack order, C order) is checked after decoding; any mismatch
raises :class:`~lhc.data.DataError` naming the file.

The image codec is a context-modelling predictive coder in the spirit of LOCO-I/JPEG-LS and
CALIC, built so that decoding vectorises ACROSS images: the decoder walks the 2,304 pixel
positions in raster order and predicts, classifies and decodes that position in every image
at once with numpy, so the whole set decodes in 2,304 vectorised steps.

- Context: each decoded pixel gets a score ``|x-W| + |x-N| + 2 |x-MED|`` (MED: the median
  edge detector of LOCO-I); a pixel's activity is the sum of its W, N, NW and NE scores,
  quantised at the activity's quantiles into ``NUM_CONTEXTS`` classes (thresholds stored).
- Prediction: two linear predictors over seven causal neighbours (W, N, NW, NE, WW, NN, NNE)
  and, per context, a blend factor on the second and an offset, least-squares fitted on the
  data being packed and applied in integer fixed point, so every machine predicts the same.
- Residuals ``(pixel - prediction) mod 256`` are coded with rANS (32-bit state, 16-bit
  words, 12-bit frequencies) under a static frequency table per context; each image is one
  rANS stream, and the streams' words are interleaved in the order the lock-step decoder
  reads them, so a refill is one contiguous slice.

Measured on the shared Training + PublicTest copy (32,298 images, 74,414,592 raw pixel bytes)
on this project's CPU machine (Intel Xeon, 2 cores, numpy 2.4, shared with other jobs: load
average about 4 during the timing); ``python benchmarks/data_pack.py`` reproduces the last
row (``benchmarks/results/data_pack_cpu.json``). Entropies are of the residuals under the
contexts on 4,000-8,000 images, what a static per-context coder would reach before headers.

=================================================  ===============  =========  =========
codec                                              bytes            pack s     load s
=================================================  ===============  =========  =========
zlib (issue 17)                                    70.5e6
row delta + lzma (issue 17)                        55.3e6
lossless WebP (issue 17)                           52.5e6
MED residuals + lzma (issue 17)                    about 50e6
MED, 32 activity contexts (entropy)                5.11 bpp, 47.6e6
per-context least squares, 10 neighbours (entropy) 4.99 bpp, 46.4e6
same, rANS, 14-bit frequencies (measured)          46.4e6 streams              4.2
this module (7 neighbours, blended predictor,      46,991,958       34.6       1.52
score contexts, 12-bit rANS, interleaved words)
=================================================  ===============  =========  =========

The per-context least-squares predictor with ten neighbours was 1% smaller but decoded in
about 4 s: a gather per weight and per pixel. What the decoder costs per position is
dominated by element-wise work over the 32k images, so each design choice above (scores
computed once per pixel, two fixed predictors with scalar weights, 32-bit rANS arithmetic,
contiguous word refills) was taken for fewer array passes; together they cost 1.3% in size
(46.4e6 -> 47.0e6 bytes) and cut the load from about 4 s to 1.5 s.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import lzma
import os
import struct
from pathlib import Path

import numpy as np

from lhc._io import atomic_path
from lhc.data.dataset import (
    IMAGE_SIZE,
    SPLITS,
    DataError,
    FER2013Data,
    Provenance,
    Skipped,
    Split,
)

MAGIC = b"LHCPACK\x01"
PACK_FORMAT_VERSION = 1
PACK_EXPECTED = "an lhc data pack (written by lhc data pack / lhc.data.pack.write_pack)"
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
# Kaggle's Usage value of each split, for writing fer2013.csv back.
SPLIT_USAGES = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}

# Causal neighbours as (row offset, column offset): what the predictor and context read.
# Three more (NWW, NNW, NEE) gave 0.2% smaller residual entropy, at three more multiply-adds
# per pixel and predictor in the decoder.
NEIGHBOURS = {
    "W": (0, -1), "N": (-1, 0), "NW": (-1, -1), "NE": (-1, 1), "WW": (0, -2),
    "NN": (-2, 0), "NNE": (-2, 1),
}
NEIGHBOUR_NAMES = tuple(NEIGHBOURS)
# The grey level a neighbour takes where no decoded pixel can stand in (only at the first pixel).
CONSTANT_LEVEL = 128
NUM_CONTEXTS = 32
ACTIVITY_MAX = 4095  # the context look-up's range: an activity is at most 4 * 1020
# Fixed point of the predictor: weights in units of 2**-10, blend factors of 2**-6, so that
# every sum stays inside int32 (bounds in :func:`_fit_predictor`).
WEIGHT_BITS = 10
BLEND_BITS = 6
WEIGHT_LIMIT = 4.0  # |weight| bound
BLEND_LIMIT = 2.0  # |blend factor| bound
# Pixels the least-squares fit uses, and its rounds: more changes the weights, not the format.
FIT_SAMPLES = 500_000
FIT_ROUNDS = 3

# rANS: the state lives in [RANS_LOW, RANS_LOW << 16) and is renormalised by 16-bit words;
# frequencies of each context's table sum to 1 << PROB_BITS. 12 bits let a decode-table entry
# (symbol, frequency, offset) fit in 32 bits and the table in 512 KiB (at 14 bits it is 4 MiB,
# out of cache); the coarser frequencies cost a few tenths of a percent in size.
PROB_BITS = 12
PROB_SCALE = 1 << PROB_BITS
RANS_LOW = 1 << 16
WORD_BITS = 16


@dataclasses.dataclass(frozen=True)
class PackInfo:
    """What :func:`write_pack` wrote.

    Attributes:
        path: the pack file.
        num_images: images in it.
        num_bytes: size of the file.
        raw_pixel_bytes: size of the raw pixels it holds (``num_images * 2304``).
    """

    path: Path
    num_images: int
    num_bytes: int
    raw_pixel_bytes: int


# --------------------------------------------------------------------------- the image codec

def neighbour_positions(size: int = IMAGE_SIZE) -> np.ndarray:
    """Flat position of each neighbour of each pixel, substituted where it is not decoded yet.

    A neighbour outside the image, or not before the pixel in raster order, is replaced as
    JPEG-LS does at borders: its column is clamped into the image and its row to 0; if that
    is still not decoded, the pixel's W stands in, or else its N, or else (the first pixel
    only) the constant position ``size * size``, whose level is ``CONSTANT_LEVEL``.

    Args:
        size: image side.

    Returns:
        int64 ``(size * size, len(NEIGHBOURS))``, every entry a position before the pixel's,
        or ``size * size``.
    """
    constant = size * size
    positions = np.empty((size * size, len(NEIGHBOURS)), dtype=np.int64)
    for row in range(size):
        for column in range(size):
            here = row * size + column
            for index, (row_offset, column_offset) in enumerate(NEIGHBOURS.values()):
                neighbour_row = max(row + row_offset, 0)
                neighbour_column = min(max(column + column_offset, 0), size - 1)
                position = neighbour_row * size + neighbour_column
                if position >= here:
                    position = here - 1 if column > 0 else here - size if row > 0 else constant
                positions[here, index] = position
    return positions


def med_prediction(west: np.ndarray, north: np.ndarray, north_west: np.ndarray) -> np.ndarray:
    """The median edge detector of LOCO-I/JPEG-LS: the median of W, N and W + N - NW.

    Args:
        west, north, north_west: signed integer arrays of one shape.

    Returns:
        The prediction, same shape (``min(W, N)`` when NW >= max(W, N), ``max(W, N)`` when
        NW <= min(W, N), else ``W + N - NW``).
    """
    low, high = np.minimum(west, north), np.maximum(west, north)
    return np.maximum(low, np.minimum(high, west + north - north_west))


def pixel_score(pixel: np.ndarray, west: np.ndarray, north: np.ndarray,
                north_west: np.ndarray) -> np.ndarray:
    """How busy a decoded pixel's surroundings are: ``|x-W| + |x-N| + 2 |x-MED|``.

    A pixel's score is computed once, when it is decoded, and its neighbours' scores make the
    activity that selects a later pixel's context (:func:`activity_from_scores`).

    Args:
        pixel, west, north, north_west: int16 arrays of one shape.

    Returns:
        int16 scores in 0..1020, same shape.
    """
    score = np.abs(pixel - med_prediction(west, north, north_west))
    score += score
    score += np.abs(pixel - west)
    score += np.abs(pixel - north)
    return score


def activity_from_scores(scores: dict[str, np.ndarray]) -> np.ndarray:
    """A pixel's local activity: the scores of its W, N, NW and NE neighbours, summed.

    Measured on 6,000 real images, this ranks contexts as well as CALIC's gradients plus MED
    errors (4.973 against 4.975 bits per pixel) at a third of the decoder's work.

    Args:
        scores: ``"W", "N", "NW", "NE"`` -> int16 scores.

    Returns:
        int16 activities in 0..4080 (<= ACTIVITY_MAX), same shape.
    """
    activity = scores["W"] + scores["N"]
    activity += scores["NW"]
    activity += scores["NE"]
    return activity


def context_lookup(thresholds: np.ndarray) -> np.ndarray:
    """Context of every activity 0..ACTIVITY_MAX: how many thresholds it reaches."""
    activities = np.arange(ACTIVITY_MAX + 1)
    return np.searchsorted(thresholds, activities, side="right").astype(np.intp)


def linear_prediction(neighbours: dict[str, np.ndarray], context: np.ndarray,
                      weights: np.ndarray, blend: np.ndarray) -> np.ndarray:
    """Fixed-point prediction: a base predictor plus a context's share of a correction one.

    ``prediction = A.n + blend[context] * B.n + offset[context]`` where ``n`` are the
    neighbours and ``A``, ``B`` two linear predictors fitted on the data: B carries what
    changes between smooth and busy regions. Measured on 5,000 real images, this is within
    0.1% of a separate least-squares predictor per context (4.978 against 4.973 bits per
    pixel) and decodes about 10% faster: two fixed predictors take scalar multiplies, where
    per-context weights need a gather (one 32-byte gather per pixel, at the least).

    Args:
        neighbours: ``NEIGHBOUR_NAMES`` -> int16 arrays of one shape.
        context: intp contexts, same shape.
        weights: int32 ``(2, len(NEIGHBOURS))``, A and B in units of ``2 ** -WEIGHT_BITS``.
        blend: int32 ``(2, NUM_CONTEXTS)``: each context's factor on B (units of
            ``2 ** -BLEND_BITS``) and its offset (units of ``2 ** -(WEIGHT_BITS + BLEND_BITS)``,
            rounding included).

    Returns:
        int32 predictions in 0..255, same shape.
    """
    base = np.zeros(context.shape, dtype=np.int32)
    correction = np.zeros(context.shape, dtype=np.int32)
    term = np.empty(context.shape, dtype=np.int32)
    wide = np.empty(context.shape, dtype=np.int32)
    for index, name in enumerate(NEIGHBOUR_NAMES):
        wide[...] = neighbours[name]  # int32 once: int32 products run twice as fast as mixed
        base += np.multiply(wide, weights[0, index], out=term)
        correction += np.multiply(wide, weights[1, index], out=term)
    base <<= BLEND_BITS
    correction *= blend[0].take(context, mode="clip")
    base += correction
    base += blend[1].take(context, mode="clip")
    base >>= WEIGHT_BITS + BLEND_BITS
    np.clip(base, 0, 255, out=base)
    return base


@dataclasses.dataclass(frozen=True)
class ImageModel:
    """What the decoder needs besides the residual streams: fitted on the data packed.

    Attributes:
        thresholds: int16 ``(NUM_CONTEXTS - 1,)`` activity thresholds between contexts.
        weights: int32 ``(2, len(NEIGHBOURS))`` the two linear predictors.
        blend: int32 ``(2, NUM_CONTEXTS)`` each context's blend factor and offset.
        frequencies: int32 ``(NUM_CONTEXTS, 256)`` residual frequencies per context, each row
            summing to ``PROB_SCALE``.
    """

    thresholds: np.ndarray
    weights: np.ndarray
    blend: np.ndarray
    frequencies: np.ndarray


@dataclasses.dataclass(frozen=True)
class EncodedImages:
    """The images as rANS streams, plus the model to decode them.

    Attributes:
        model: the fitted :class:`ImageModel`.
        states: uint32 ``(N,)`` each image's final rANS state, where its decoding starts.
        words: uint16, the renormalisation words of all images interleaved in the order the
            decoder reads them: position by position, and at each position the images whose
            state runs low, in image order.
    """

    model: ImageModel
    states: np.ndarray
    words: np.ndarray


def _image_features(pixels: np.ndarray, positions: np.ndarray
                    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Neighbours and activity of every pixel of every image, as the decoder computes them.

    Args:
        pixels: uint8 ``(N, 2304)``.
        positions: :func:`neighbour_positions`.

    Returns:
        The neighbours (int16 ``(N, 2304)`` each) and the activities (int16 ``(N, 2304)``).
    """
    # One extra column: the constant position, level CONSTANT_LEVEL and score 0.
    extended = np.full((len(pixels), PIXELS_PER_IMAGE + 1), CONSTANT_LEVEL, dtype=np.int16)
    extended[:, :-1] = pixels
    neighbours = {name: np.ascontiguousarray(extended[:, positions[:, index]])
                  for index, name in enumerate(NEIGHBOUR_NAMES)}  # (N, 2305) -> (N, 2304)
    scores = np.zeros_like(extended)
    scores[:, :-1] = pixel_score(extended[:, :-1], neighbours["W"], neighbours["N"],
                                 neighbours["NW"])
    neighbour_scores = {name: scores[:, positions[:, NEIGHBOUR_NAMES.index(name)]]
                        for name in ("W", "N", "NW", "NE")}  # (N, 2305) -> (N, 2304)
    return neighbours, activity_from_scores(neighbour_scores)


def _fit_predictor(neighbours: dict[str, np.ndarray], pixels: np.ndarray, context: np.ndarray,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fit :func:`linear_prediction`'s two predictors and per-context blend, in fixed point.

    Alternating least squares on a sample of pixels: with the blend factors fixed, A, B and
    the offsets are linear; with A and B fixed, each context's factor and offset are. The
    blend starts at 0 for the quietest context and 1 for the busiest. Bounds: |weights| <= 4
    and |factor| <= 2 keep ``A.n << 6`` below 2**29 and ``factor * B.n`` below 2**30.

    Args:
        neighbours: ``NEIGHBOUR_NAMES`` -> int16 ``(N, 2304)``.
        pixels: uint8 ``(N, 2304)``, the values to predict.
        context: intp ``(N, 2304)``.
        seed: seed of the sample.

    Returns:
        int32 weights ``(2, len(NEIGHBOURS))`` and blend ``(2, NUM_CONTEXTS)``.
    """
    rng = np.random.default_rng(seed)
    total = pixels.size
    sample = np.sort(rng.choice(total, min(FIT_SAMPLES, total), replace=False))
    features = np.column_stack([neighbours[name].reshape(-1)[sample]  # (N, 2304) -> (N * 2304,)
                                for name in NEIGHBOUR_NAMES]).astype(np.float64)  # (m, 7)
    target = pixels.reshape(-1)[sample].astype(np.float64)  # (N, 2304) -> (N * 2304,) -> (m,)
    sample_context = context.reshape(-1)[sample]  # (N, 2304) -> (N * 2304,) -> (m,)
    counts = np.maximum(np.bincount(sample_context, minlength=NUM_CONTEXTS), 1)

    def context_means(values):
        # Mean of each column of values (m, k) within each context, (contexts, k).
        return np.stack([np.bincount(sample_context, column, NUM_CONTEXTS) / counts
                         for column in values.T], axis=1)

    def fit_blend(residual_target, correction):
        # Per context, the least-squares factor on the correction and offset, in closed form.
        mean_target = context_means(residual_target[:, None])[:, 0]
        mean_correction = context_means(correction[:, None])[:, 0]
        centred = correction - mean_correction[sample_context]
        covariance = np.bincount(sample_context, centred * residual_target, NUM_CONTEXTS)
        variance = np.bincount(sample_context, centred * centred, NUM_CONTEXTS)
        factor = np.clip(np.divide(covariance, variance, out=np.zeros(NUM_CONTEXTS),
                                   where=variance > 0), -BLEND_LIMIT, BLEND_LIMIT)
        return factor, mean_target - factor * mean_correction

    factor = np.linspace(0.0, 1.0, NUM_CONTEXTS)
    width = len(NEIGHBOURS)
    for _ in range(FIT_ROUNDS):
        design = np.column_stack([features, factor[sample_context][:, None] * features])
        # Per-context offsets are fitted by centring each context (fixed effects), which
        # leaves a 14-column problem; normal equations solve it exactly enough.
        design -= context_means(design)[sample_context]
        centred_target = target - context_means(target[:, None])[sample_context, 0]
        solution = np.linalg.lstsq(design.T @ design, design.T @ centred_target, rcond=None)[0]
        base_weights = np.clip(solution[:width], -WEIGHT_LIMIT, WEIGHT_LIMIT)
        correction_weights = np.clip(solution[width:], -WEIGHT_LIMIT, WEIGHT_LIMIT)
        factor, offset = fit_blend(target - features @ base_weights,
                                   features @ correction_weights)
    weights = np.round(np.stack([base_weights, correction_weights]) * (1 << WEIGHT_BITS))
    # The factors and offsets are refitted to the rounded weights, which they then absorb.
    fixed_weights = weights / (1 << WEIGHT_BITS)
    factor, offset = fit_blend(target - features @ fixed_weights[0], features @ fixed_weights[1])
    blend = np.stack([np.round(factor * (1 << BLEND_BITS)),
                      np.round(offset * (1 << (WEIGHT_BITS + BLEND_BITS)))
                      + (1 << (WEIGHT_BITS + BLEND_BITS - 1))])  # + 1/2: round to nearest
    return weights.astype(np.int32), blend.astype(np.int32)


def normalise_frequencies(counts: np.ndarray) -> np.ndarray:
    """Scale symbol counts to frequencies summing to ``PROB_SCALE``, every seen symbol >= 1.

    No frequency reaches ``PROB_SCALE`` itself (a decode-table entry holds 12 bits of it), so a
    context that saw one symbol only gives one unit to the next symbol.

    Args:
        counts: int ``(contexts, 256)``.

    Returns:
        int32 ``(contexts, 256)``, each row summing to ``PROB_SCALE``.
    """
    frequencies = np.zeros(counts.shape, dtype=np.int64)
    for row, row_counts in enumerate(counts):
        total = int(row_counts.sum())
        if total == 0:
            row_counts = np.zeros(256, dtype=np.int64)
            row_counts[0], total = 1, 1
        scaled = np.floor(row_counts * (PROB_SCALE / total)).astype(np.int64)
        scaled[(row_counts > 0) & (scaled == 0)] = 1
        excess = int(scaled.sum()) - PROB_SCALE
        # Take the excess from (or give the shortfall to) the most frequent symbols, where a
        # unit of frequency costs the fewest bits.
        for symbol in np.argsort(-scaled, kind="stable"):
            if excess == 0:
                break
            change = min(excess, int(scaled[symbol]) - 1) if excess > 0 else excess
            scaled[symbol] -= change
            excess -= change
        if scaled.max() == PROB_SCALE:
            only = int(scaled.argmax())
            scaled[only] -= 1
            scaled[(only + 1) % 256] += 1
        frequencies[row] = scaled
    return frequencies.astype(np.int32)


def _decode_table(frequencies: np.ndarray) -> np.ndarray:
    """Per context and rANS slot: ``symbol | frequency << 8 | (slot - cumulative) << 20``.

    Returns:
        uint32 ``(contexts * PROB_SCALE,)``, indexed by ``context << PROB_BITS | slot``.
    """
    num_contexts = len(frequencies)
    cumulative = np.cumsum(frequencies, axis=1) - frequencies  # (contexts, 256)
    symbols = np.repeat(np.tile(np.arange(256), num_contexts), frequencies.ravel())
    symbols = symbols.reshape(num_contexts, PROB_SCALE)  # (contexts * 4096,) -> (contexts, 4096)
    rows = np.arange(num_contexts)[:, None]
    offsets = np.arange(PROB_SCALE)[None, :] - cumulative[rows, symbols]
    table = symbols | (frequencies[rows, symbols] << 8) | (offsets << 20)
    return table.astype(np.uint32).ravel()  # (contexts, 4096) -> (contexts * 4096,)


def encode_images(pixels: np.ndarray) -> EncodedImages:
    """Encode uint8 images ``(N, 48, 48)`` losslessly.

    Args:
        pixels: uint8 ``(N, 48, 48)``, N >= 1.

    Returns:
        The fitted model and the rANS streams.
    """
    flat = np.ascontiguousarray(pixels, dtype=np.uint8)
    flat = flat.reshape(len(pixels), PIXELS_PER_IMAGE)  # (N, 48, 48) -> (N, 2304)
    neighbours, activity = _image_features(flat, neighbour_positions())
    quantiles = np.quantile(activity, np.linspace(0, 1, NUM_CONTEXTS + 1)[1:-1])
    thresholds = np.maximum.accumulate(np.ceil(quantiles)).astype(np.int16)
    context = context_lookup(thresholds).take(activity)  # (N, 2304)
    del activity
    weights, blend = _fit_predictor(neighbours, flat, context)
    prediction = linear_prediction(neighbours, context, weights, blend)
    del neighbours
    residuals = (flat.astype(np.int32) - prediction) & 255  # (N, 2304)
    del prediction
    symbol_index = context * 256 + residuals  # (N, 2304)
    del context, residuals
    counts = np.bincount(symbol_index.reshape(-1), minlength=NUM_CONTEXTS * 256)
    frequencies = normalise_frequencies(
        counts.reshape(NUM_CONTEXTS, 256))  # (contexts * 256,) -> (contexts, 256)
    # Position-major, so that each step of the rANS loop reads contiguous rows.
    states, words = _rans_encode(np.ascontiguousarray(symbol_index.T),  # (N, 2304) -> (2304, N)
                                 frequencies)
    return EncodedImages(ImageModel(thresholds, weights, blend, frequencies), states, words)


def _rans_encode(symbol_index: np.ndarray, frequencies: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """rANS-encode every image as its own stream, all images in lock step.

    Args:
        symbol_index: intp ``(2304, N)``, ``context * 256 + residual`` per position and image.
        frequencies: int32 ``(contexts, 256)``.

    Returns:
        The final states (uint32 ``(N,)``) and the interleaved words (uint16) in the order the
        decoder reads them.
    """
    cumulative = np.cumsum(frequencies, axis=1) - frequencies
    flat_frequencies = frequencies.reshape(-1).astype(np.int64)  # (C, 256) -> (C * 256,)
    flat_cumulative = cumulative.reshape(-1).astype(np.int64)  # (C, 256) -> (C * 256,)
    state = np.full(symbol_index.shape[1], RANS_LOW, dtype=np.int64)
    emitted = []
    # rANS is last in, first out: encode the last position first so the decoder starts at 0.
    for position in range(symbol_index.shape[0] - 1, -1, -1):
        frequency = flat_frequencies.take(symbol_index[position])
        cumulative = flat_cumulative.take(symbol_index[position])
        # One 16-bit word out keeps the state below the bound for this frequency; the decoder
        # reads that word right after decoding this position.
        overflow = np.flatnonzero(state >= frequency << (WORD_BITS + 16 - PROB_BITS))
        emitted.append((state[overflow] & 0xFFFF).astype(np.uint16))
        state[overflow] >>= WORD_BITS
        state = ((state // frequency) << PROB_BITS) + state % frequency + cumulative
    return state.astype(np.uint32), np.concatenate(emitted[::-1])


def decode_images(encoded: EncodedImages) -> np.ndarray:
    """Decode what :func:`encode_images` wrote: all images at once, position by position.

    Args:
        encoded: the model and the streams.

    Returns:
        uint8 ``(N, 48, 48)``.

    Raises:
        ValueError: the word stream ends early or has words left over (a damaged pack).
    """
    model, words = encoded.model, encoded.words
    num_images = len(encoded.states)
    positions = neighbour_positions()
    context_of = context_lookup(model.thresholds)
    table = _decode_table(model.frequencies)
    state = encoded.states.astype(np.uint32)
    cursor = 0
    # Position-major buffers: the last row is the constant neighbour of the first pixel.
    decoded = np.full((PIXELS_PER_IMAGE + 1, num_images), CONSTANT_LEVEL, dtype=np.int16)
    scores = np.zeros((PIXELS_PER_IMAGE + 1, num_images), dtype=np.int16)
    score_columns = [(name, NEIGHBOUR_NAMES.index(name)) for name in ("W", "N", "NW", "NE")]
    for position in range(PIXELS_PER_IMAGE):
        rows = positions[position].tolist()
        neighbours = {name: decoded[row] for name, row in zip(NEIGHBOUR_NAMES, rows, strict=True)}
        context = context_of.take(activity_from_scores(
            {name: scores[rows[column]] for name, column in score_columns}), mode="clip")
        prediction = linear_prediction(neighbours, context, model.weights, model.blend)
        slot = state & (PROB_SCALE - 1)
        entry = table.take((context << PROB_BITS) | slot, mode="clip")
        state >>= PROB_BITS
        state *= (entry >> 8) & (PROB_SCALE - 1)
        state += entry >> 20
        refill = np.flatnonzero(state < RANS_LOW)
        if cursor + len(refill) > len(words):
            raise ValueError("rANS word stream ends early")
        state[refill] = (state[refill] << WORD_BITS) | words[cursor:cursor + len(refill)]
        cursor += len(refill)
        residual = entry & 255
        prediction += residual.view(np.int32)  # residuals are below 256: the view is exact
        prediction &= 255
        pixel = decoded[position]
        pixel[...] = prediction
        scores[position] = pixel_score(pixel, neighbours["W"], neighbours["N"], neighbours["NW"])
    if cursor != len(words):
        raise ValueError("rANS word stream longer than its images need")
    pixels = np.empty((num_images, PIXELS_PER_IMAGE), dtype=np.uint8)
    # Transposed a block of positions at a time: each image's row is then written in runs of
    # 64 bytes rather than one byte per cache line.
    for start in range(0, PIXELS_PER_IMAGE, 64):
        pixels[:, start:start + 64] = decoded[start:start + 64].T  # (64, N) -> (N, 64)
    return pixels.reshape(num_images, IMAGE_SIZE, IMAGE_SIZE)  # (N, 2304) -> (N, 48, 48)


# --------------------------------------------------------------------------- the pack file

def is_pack(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file that starts like a data pack (its magic bytes)."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        return handle.read(len(MAGIC)) == MAGIC


def write_pack(data_or_source: FER2013Data | str | os.PathLike,
               out_path: str | os.PathLike) -> PackInfo:
    """Write a FER2013 data set as one compact, lossless pack, atomically.

    Args:
        data_or_source: a :class:`FER2013Data` as a reader returned it (not carved, without
            FER+ distributions), or any source :func:`lhc.data.load_fer2013` reads (read with
            its defaults: invalid rows raise).
        out_path: the pack to write (``.lhcpack`` by convention).

    Returns:
        What was written.

    Raises:
        DataError: the source is invalid (from the reader).
        ValueError: the data is carved, holds FER+ distributions or no rows.
    """
    if isinstance(data_or_source, FER2013Data):
        data = data_or_source
    else:
        from lhc.data.readers import load_fer2013  # the readers import this module

        data = load_fer2013(data_or_source)
    if data.test_is_carved:
        raise ValueError(f"{data.source}: a pack holds the splits as read, not carved; pack "
                         "the uncarved data and pass carve_test when loading the pack")
    if any(split.distributions is not None for split in data.splits.values()):
        raise ValueError(f"{data.source}: a pack holds FER2013 labels, not FER+ vote "
                         "distributions; pack the FER2013 source and read FER+ with "
                         "load_ferplus")
    split_names = [name for name in SPLITS if name in data.splits]
    if not split_names or not sum(len(data.splits[name]) for name in split_names):
        raise ValueError(f"{data.source}: no rows to pack")
    rename = _relative_names(data)
    pixels = np.concatenate([data.splits[name].images for name in split_names])
    labels = np.concatenate([data.splits[name].labels for name in split_names])
    split_codes = np.concatenate([np.full(len(data.splits[name]), SPLITS.index(name))
                                  for name in split_names])
    files: list[str] = []
    file_index, lines = [], []
    for name in split_names:
        provenance = data.splits[name].provenance
        global_index = []
        for file in provenance.files:
            relative = rename.get(file, file)
            if relative not in files:
                files.append(relative)
            global_index.append(files.index(relative))
        file_index.append(np.asarray(global_index, dtype=np.int64)[provenance.file_index])
        lines.append(provenance.lines)
    if pixels.dtype != np.uint8 or pixels.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{data.source}: expected uint8 (N, 48, 48) images, got "
                         f"{pixels.dtype} {pixels.shape}")
    if labels.min() < 0 or labels.max() > 255:
        raise ValueError(f"{data.source}: labels must lie in 0..255 to be packed")
    encoded = encode_images(pixels)
    lines_all = np.concatenate(lines).astype(np.int64)
    sections = {
        "labels": (labels.astype(np.uint8), "lzma"),
        "splits": (split_codes.astype(np.uint8), "lzma"),
        "file_index": (np.concatenate(file_index).astype(np.int32), "lzma"),
        # Lines mostly count up by one: their differences compress to almost nothing.
        "line_steps": (np.diff(lines_all, prepend=0), "lzma"),
        "thresholds": (encoded.model.thresholds.astype(np.int16), "raw"),
        "weights": (encoded.model.weights.astype(np.int32), "raw"),
        "blend": (encoded.model.blend.astype(np.int32), "raw"),
        "frequencies": (encoded.model.frequencies.astype(np.uint16), "lzma"),
        "states": (encoded.states.astype(np.uint32), "raw"),
        "words": (encoded.words.astype(np.uint16), "raw"),
    }
    payload, table = [], []
    for name, (array, codec) in sections.items():
        raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        stored = lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME) if codec == "lzma" else raw
        payload.append(stored)
        table.append({"name": name, "dtype": array.dtype.newbyteorder("<").str,
                      "shape": list(array.shape), "codec": codec, "bytes": len(stored)})
    payload_bytes = b"".join(payload)
    header = {
        "format": "lhc data pack", "version": PACK_FORMAT_VERSION,
        "num_images": int(len(pixels)),
        "pixels_sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
        "payload_sha256": hashlib.sha256(payload_bytes).hexdigest(),
        "sections": table,
        "files": files,
        "source_name": Path(data.source).name,
        "class_names": list(data.class_names), "split_convention": data.split_convention,
        "rows_read": data.rows_read, "excluded": data.excluded,
        "notes": [_rename_in(note, rename) for note in data.notes],
        "num_resized": data.num_resized,
        "skipped": [[rename.get(skip.file, skip.file), skip.line, skip.reason]
                    for skip in data.skipped],
    }
    header_bytes = json.dumps(header, sort_keys=True).encode()
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as handle:
        handle.write(MAGIC + struct.pack("<I", len(header_bytes)))
        handle.write(hashlib.sha256(header_bytes).digest())
        handle.write(header_bytes)
        handle.write(payload_bytes)
    return PackInfo(out_path, int(len(pixels)), out_path.stat().st_size, int(pixels.size))


def read_pack(path: str | os.PathLike) -> FER2013Data:
    """Read a pack written by :func:`write_pack`, verifying it.

    The result equals what the reader returned for the source packed (splits, images, labels,
    provenance with file names relative to the source's folder, convention, notes, skipped
    rows), with ``source`` the pack's path.

    Args:
        path: the pack.

    Returns:
        The data set.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: not a pack, truncated, or damaged (a checksum or the decoder disagrees);
            the error names the file.
    """
    path = Path(path)
    blob = path.read_bytes()
    display = str(path)
    prefix = len(MAGIC) + 4 + 32
    if len(blob) < prefix or not blob.startswith(MAGIC):
        found = (f"{len(blob)} bytes" if blob.startswith(MAGIC[:len(blob)])
                 else f"first bytes {blob[:len(MAGIC)]!r}")
        raise DataError(display, None, PACK_EXPECTED, found)
    (header_length,) = struct.unpack_from("<I", blob, len(MAGIC))
    header_digest = blob[len(MAGIC) + 4:prefix]
    header_bytes = blob[prefix:prefix + header_length]
    if len(header_bytes) != header_length:
        raise DataError(display, None, f"a pack header of {header_length} bytes",
                        f"{len(header_bytes)} bytes: the file is truncated")
    if hashlib.sha256(header_bytes).digest() != header_digest:
        raise DataError(display, None, "a pack header matching its sha256",
                        "a different header: the pack is damaged")
    header = json.loads(header_bytes)
    if header.get("version") != PACK_FORMAT_VERSION:
        raise DataError(display, None, f"pack format version {PACK_FORMAT_VERSION}",
                        f"version {header.get('version')!r}")
    payload = memoryview(blob)[prefix + header_length:]
    expected_length = sum(section["bytes"] for section in header["sections"])
    if len(payload) != expected_length:
        raise DataError(display, None, f"{expected_length} payload bytes after the header",
                        f"{len(payload)} bytes: the file is truncated or has extra data")
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise DataError(display, None, f"payload sha256 {header['payload_sha256']}",
                        "a different one: the pack is damaged")
    arrays = _read_sections(payload, header["sections"], display)
    model = ImageModel(arrays["thresholds"], arrays["weights"], arrays["blend"],
                       arrays["frequencies"].astype(np.int32))
    try:
        images = decode_images(EncodedImages(model, arrays["states"], arrays["words"]))
    except ValueError as error:
        raise DataError(display, None, "rANS streams that decode to the images",
                        str(error)) from None
    digest = hashlib.sha256(images.tobytes()).hexdigest()
    if digest != header["pixels_sha256"]:
        raise DataError(display, None, f"pixels with sha256 {header['pixels_sha256']}",
                        f"pixels with sha256 {digest}: the pack is damaged")
    return _assemble_pack(header, arrays, images, display)


def _read_sections(payload: memoryview, sections: list[dict], display: str
                   ) -> dict[str, np.ndarray]:
    """Decompress and shape the payload's sections."""
    arrays, offset = {}, 0
    for section in sections:
        stored = payload[offset:offset + section["bytes"]]
        offset += section["bytes"]
        try:
            raw = lzma.decompress(stored) if section["codec"] == "lzma" else stored
            array = np.frombuffer(raw, dtype=np.dtype(section["dtype"]))
            array = array.reshape(section["shape"])
        except (lzma.LZMAError, ValueError) as error:
            raise DataError(display, None, f"a readable {section['name']} section",
                            f"{type(error).__name__}: {error}") from None
        arrays[section["name"]] = array.astype(array.dtype.newbyteorder("="))
    return arrays


def _assemble_pack(header: dict, arrays: dict[str, np.ndarray], images: np.ndarray,
                   display: str) -> FER2013Data:
    """Build the reader's result from a verified pack's parts."""
    files = header["files"]
    lines = np.cumsum(arrays["line_steps"])
    splits = {}
    for code, name in enumerate(SPLITS):
        rows = np.flatnonzero(arrays["splits"] == code)
        if not len(rows):
            continue
        global_index = arrays["file_index"][rows].astype(np.int64)
        used = np.unique(global_index)
        provenance = Provenance(tuple(files[index] for index in used),
                                np.searchsorted(used, global_index).astype(np.int32),
                                lines[rows])
        splits[name] = Split(images[rows], arrays["labels"][rows].astype(np.int64), provenance)
    return FER2013Data(
        splits=splits, class_names=tuple(header["class_names"]),
        split_convention=header["split_convention"], source=display,
        rows_read=header["rows_read"],
        skipped=[Skipped(file, line, reason) for file, line, reason in header["skipped"]],
        excluded=header["excluded"], notes=list(header["notes"]),
        num_resized=header["num_resized"])


def _relative_names(data: FER2013Data) -> dict[str, str]:
    """Each provenance or skipped file name -> its path relative to the source's folder.

    The folder is the one :func:`lhc.data.readers.detect_layout` takes as the root: the
    source's parent for a file, the source itself for a folder. A name outside it, or that
    names no file here (a pack's own, already relative names), is kept.
    """
    source = Path(data.source)
    root = (source if source.is_dir() else source.parent).resolve()
    names = {file for split in data.splits.values() for file in split.provenance.files}
    names |= {skip.file for skip in data.skipped}
    rename = {}
    for name in names:
        try:
            if not Path(name).exists():
                raise ValueError(name)
            rename[name] = Path(name).resolve().relative_to(root).as_posix()
        except ValueError:
            rename[name] = name
    return rename


def _rename_in(note: str, rename: dict[str, str]) -> str:
    # Longest names first, so that a name that prefixes another is not replaced inside it.
    for name in sorted(rename, key=len, reverse=True):
        note = note.replace(name, rename[name])
    return note


def unpack_to_csv(pack_path: str | os.PathLike, out_path: str | os.PathLike) -> int:
    """Write a pack back as a Kaggle ``fer2013.csv`` (``emotion,pixels,Usage``), atomically.

    Splits become Usage values train -> Training, val -> PublicTest, test -> PrivateTest.
    Rows come in their source order (file, then line) when every row has a line, else in
    the pack's order. A name ending ``.gz`` is gzip-compressed with a fixed header (no file
    name, mtime 0), as :func:`lhc.data.synthetic.write_fer2013_csv` writes it, so the same
    rows give the same bytes.

    Args:
        pack_path: the pack.
        out_path: ``.csv`` or ``.csv.gz`` to write.

    Returns:
        The number of rows written.

    Raises:
        ValueError: ``out_path`` does not end in ``.csv`` or ``.csv.gz``.
        DataError: the pack is invalid (see :func:`read_pack`).
    """
    out_path = Path(out_path)
    if not out_path.name.lower().endswith((".csv", ".csv.gz")):
        raise ValueError(f"{out_path}: expected an output name ending .csv or .csv.gz")
    data = read_pack(pack_path)
    names = list(data.splits)
    images = np.concatenate([data.splits[name].images for name in names])
    labels = np.concatenate([data.splits[name].labels for name in names])
    usages = np.concatenate([np.full(len(data.splits[name]), SPLIT_USAGES[name], dtype=object)
                             for name in names])
    source_files = np.concatenate([
        np.asarray(data.splits[name].provenance.files, dtype=object)[
            data.splits[name].provenance.file_index] for name in names])
    lines = np.concatenate([data.splits[name].provenance.lines for name in names])
    order = np.arange(len(labels))
    if (lines > 0).all():
        order = np.lexsort((lines, source_files.astype(str)))
    grey_levels = [str(level) for level in range(256)]
    flat = images.reshape(len(images), PIXELS_PER_IMAGE)  # (N, 48, 48) -> (N, 2304)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as raw:
        stream = (gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
                  if out_path.suffix.lower() == ".gz" else raw)
        with io.TextIOWrapper(stream, encoding="ascii", newline="\n") as text:
            text.write("emotion,pixels,Usage\n")
            for row in order.tolist():
                pixels = " ".join([grey_levels[level] for level in flat[row].tolist()])
                text.write(f"{labels[row]},{pixels},{usages[row]}\n")
    return len(order)
