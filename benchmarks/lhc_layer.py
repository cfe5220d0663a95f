"""Forward+backward time of the five paper LHC blocks: vectorised layer vs loop-per-head.

The loop-per-head form below is the baseline the issue names: one Dense layer per head and
a Python loop over heads in ``call``, as the original implementation is written. Both run
in the same process, side by side, in float32 and in ``mixed_bfloat16``, and the script
prints JSON with seconds per step, achieved GFLOP/s against the blocks' FLOP count, ratios
against the float32 loop form and the bf16 output error.

FLOP count (forward, one image; multiply-add = 2 FLOPs), per block with L = H*W/n:
  value conv        2 * H*W * C*C * s*s
  Q and K embed     2 * 2 * n * C * L * d   = 4 * H*W * C * d
  scores            2 * n * C*C * d
  scale Dense       2 * n * C*C
  A = W v           2 * n * C*C * L         = 2 * H*W * C*C
Backward is counted as twice the forward (gradients w.r.t. inputs and weights), so a
training step is 3x the forward: about 81 GFLOP for the five blocks at batch 16.

Usage: python benchmarks/lhc_layer.py [--batch 16] [--repeats 5] [--pieces] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _report import emit  # noqa: E402  (sibling module: one report format)
from keras import ops  # noqa: E402

from lhc.layers import LHC  # noqa: E402

# (H, W, C, num_heads, head_dim, pool, scale_exponent, kernel): the paper's blocks at 224.
PAPER_BLOCKS = [
    (56, 56, 64, 8, 196, 3, 1.0, 3),
    (56, 56, 64, 8, 196, 3, 1.0, 3),
    (28, 28, 128, 7, 56, 3, 1.0, 3),
    (14, 14, 256, 7, 14, 3, 1.0, 3),
    (7, 7, 512, 1, 25, 3, 1.0, 3),
]


def block_forward_flops(height, width, channels, num_heads, head_dim, kernel):
    positions = height * width
    return (
        2 * positions * channels * channels * kernel * kernel
        + 4 * positions * channels * head_dim
        + 2 * num_heads * channels * channels * head_dim
        + 2 * num_heads * channels * channels
        + 2 * positions * channels * channels
    )


class LoopLHC(keras.layers.Layer):
    """Baseline: the same equations with one Dense per head and a loop over heads."""

    def __init__(self, num_heads, head_dim, pool_size=3, kernel_size=3, scale_exponent=1.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.head_dim, self.scale_exponent = num_heads, head_dim, scale_exponent
        policy = self.dtype_policy  # sub-layers share the outer layer's precision
        self.query_pool = keras.layers.AveragePooling2D(pool_size, 1, "same", dtype=policy)
        self.key_pool = keras.layers.MaxPooling2D(pool_size, 1, "same", dtype=policy)
        self.value_pool = keras.layers.AveragePooling2D(3, 1, "same", dtype=policy)
        self.kernel_size = kernel_size
        self.head_dense = [keras.layers.Dense(head_dim, dtype=policy) for _ in range(num_heads)]

    def build(self, input_shape):
        height, width, channels = input_shape[1:]
        self.height, self.width, self.channels = height, width, channels
        self.value_conv = keras.layers.Conv2D(channels, self.kernel_size, padding="same",
                                              dtype=self.dtype_policy)
        self.value_conv.build(input_shape)
        self.scale_dense = keras.layers.Dense(channels, activation="sigmoid",
                                              dtype=self.dtype_policy)
        self.scale_dense.build((None, channels))
        band = height * width // self.num_heads
        for dense in self.head_dense:
            dense.build((None, channels, band))

    def _split(self, tensor):
        flat = ops.transpose(ops.reshape(tensor, (-1, self.height * self.width, self.channels)),
                             (0, 2, 1))  # (B, C, H*W)
        return ops.split(flat, self.num_heads, axis=2)  # n x (B, C, L)

    def call(self, inputs):
        queries = self._split(self.query_pool(inputs))
        keys = self._split(self.key_pool(inputs))
        values = self._split(self.value_pool(self.value_conv(inputs)))
        heads = []
        for dense, q_h, k_h, v_h in zip(self.head_dense, queries, keys, values, strict=True):
            scores = ops.matmul(dense(q_h), ops.transpose(dense(k_h), (0, 2, 1)))  # (B, C, C)
            scales = self.scale_dense(ops.mean(scores, axis=-1))  # (B, C)
            temperature = ops.power(float(self.head_dim), self.scale_exponent + scales)
            normalised = scores / ops.cast(temperature, scores.dtype)[..., None]
            heads.append(ops.matmul(ops.softmax(normalised, axis=-1), v_h))  # (B, C, L)
        joined = ops.transpose(ops.concatenate(heads, axis=2), (0, 2, 1))  # (B, H*W, C)
        return inputs + ops.reshape(joined, (-1, self.height, self.width, self.channels))


def make_step(layers):
    variables = [v for layer in layers for v in layer.trainable_variables]

    @tf.function(jit_compile=False)
    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = [layer(x) for layer, x in zip(layers, inputs, strict=True)]
            loss = tf.add_n([tf.reduce_sum(tf.cast(o, "float32")) for o in outputs])
        grads = tape.gradient(loss, variables + list(inputs))
        return outputs, grads

    return step


def time_steps(steps, inputs, repeats):
    """Median and best seconds of each step, repeats interleaved so load hits all alike."""
    for step in steps.values():
        step(inputs)  # trace + warm up
        step(inputs)
    times = {name: [] for name in steps}
    order = list(steps)
    for repeat in range(repeats):
        for name in order[repeat % len(order):] + order[:repeat % len(order)]:
            start = time.perf_counter()
            _, grads = steps[name](inputs)
            _ = [g.numpy() for g in grads[-1:]]  # force completion
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(values), min(values)) for name, values in times.items()}


def build_blocks(cls, policy, seed):
    keras.utils.set_random_seed(seed)
    layers = []
    for height, width, channels, heads, dim, pool, g, kernel in PAPER_BLOCKS:
        layer = cls(heads, dim, pool_size=pool, kernel_size=kernel, scale_exponent=g,
                    dtype=policy)
        layer.build((None, height, width, channels))
        layers.append(layer)
    return layers


def copy_weights(vectorised, looped):
    """Give the loop form exactly the vectorised layer's weights (same function)."""
    for src, dst in zip(vectorised, looped, strict=True):
        dst.value_conv.set_weights([src.value_kernel.numpy(), src.value_bias.numpy()])
        dst.scale_dense.set_weights([src.scale_kernel.numpy(), src.scale_bias.numpy()])
        for head, dense in enumerate(dst.head_dense):
            dense.set_weights([src.embed_kernel.numpy()[head], src.embed_bias.numpy()[head]])


class NecessaryPieces(keras.layers.Layer):
    """The parts of an LHC block that every formulation of eqs. 1-17 must compute.

    ``layer.embedded_heads``, with ``layer``'s own weights: the value convolution with its
    bias and 3x3 average pool (eq. 3), the query and key pools (eqs. 1-2) and the shared Q/K
    embedding matmuls (eqs. 9-10); no scores, scaling, softmax or A = W v. The time of these
    pieces is a floor under any rearrangement of the layer built from the same kernels.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(dtype=layer.dtype_policy, **kwargs)
        self.layer = layer

    def call(self, inputs):
        # Summed into one output so that no piece is pruned as unused.
        return ops.sum(ops.stack([ops.sum(piece) for piece in self.layer.embedded_heads(inputs)]))[None]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pieces", action="store_true",
                        help="also time the pieces every formulation must compute "
                             "(NecessaryPieces), in both precisions: a floor under each time")
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    inputs = [tf.constant(rng.uniform(0, 1, (args.batch, h, w, c)).astype("float32"))
              for h, w, c, *_ in PAPER_BLOCKS]
    forward = sum(block_forward_flops(h, w, c, n, d, s) for h, w, c, n, d, _, _, s in PAPER_BLOCKS)
    step_flops = 3 * forward * args.batch

    steps, outputs = {}, {}
    for policy in ("float32", "mixed_bfloat16"):
        vectorised = build_blocks(LHC, policy, seed=1)
        looped = build_blocks(LoopLHC, policy, seed=1)
        copy_weights(vectorised, looped)
        for name, layers in (("vectorised", vectorised), ("loop_per_head", looped)):
            steps[f"{name}/{policy}"] = make_step(layers)
            outputs[(name, policy)] = [np.asarray(tf.cast(o, "float32"))
                                       for o in steps[f"{name}/{policy}"](inputs)[0]]
        if args.pieces:
            steps[f"necessary_pieces/{policy}"] = make_step(
                [NecessaryPieces(layer) for layer in vectorised])
    results = {
        name: {"seconds_median": round(median, 4), "seconds_best": round(best, 4),
               "gflops_per_s": round(step_flops / median / 1e9, 1)}
        for name, (median, best) in time_steps(steps, inputs, args.repeats).items()
    }

    baseline = results["loop_per_head/float32"]["seconds_median"]
    for name, entry in results.items():
        entry["speedup_vs_float32_loop"] = round(baseline / entry["seconds_median"], 2)
        if name.startswith("necessary_pieces"):
            del entry["gflops_per_s"]  # part of the FLOPs only: the rate would mislead
    floor = {}
    if args.pieces:
        # No rearrangement of the layer can beat the time of the pieces it must compute.
        pieces = {policy: results[f"necessary_pieces/{policy}"]["seconds_median"]
                  for policy in ("float32", "mixed_bfloat16")}
        floor = {"necessary_pieces_bf16_speedup_over_float32": round(
                     pieces["float32"] / pieces["mixed_bfloat16"], 2),
                 "best_possible_bf16_speedup_vs_float32_loop": round(
                     baseline / pieces["mixed_bfloat16"], 2)}

    def max_error(a, b):
        return float(max(np.max(np.abs(x - y)) for x, y in zip(a, b, strict=True)))

    report = {
        "benchmark": "LHC blocks forward+backward, paper settings at 224",
        "batch": args.batch,
        "gflop_per_step": round(step_flops / 1e9, 1),
        "results": results,
        "max_abs_diff_vectorised_vs_loop_float32": max_error(
            outputs[("vectorised", "float32")], outputs[("loop_per_head", "float32")]),
        "max_abs_diff_bf16_vs_float32": max_error(
            outputs[("vectorised", "mixed_bfloat16")], outputs[("vectorised", "float32")]),
        "max_abs_output_float32": float(max(np.max(np.abs(o))
                                            for o in outputs[("vectorised", "float32")])),
        "targets": {"float32_vectorised_vs_loop": ">= 1.0x", "bf16_vectorised_vs_float32_loop":
                    ">= 2.0x"},
        **floor,
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
