"""Distribution strategies (``tf.distribute``), precision policies and determinism of a run.

Strategies (profile key ``strategy``):

- ``none``: TensorFlow's default strategy (one device).
- ``auto``: ``MirroredStrategy`` over all GPUs when there are two or more, else ``none``.
- ``mirrored``: ``MirroredStrategy`` over all GPUs, or over all logical CPU devices when there
  is no GPU (split a CPU with ``tf.config.set_logical_device_configuration`` before TensorFlow
  initialises its devices: that is how the tests run it on one machine).
- ``multi_worker``: ``MultiWorkerMirroredStrategy``, where every worker runs the same
  ``lhc train`` command with the environment variable ``TF_CONFIG`` describing the cluster and
  its own task, e.g. on worker 0 of two (index 1 on the other host, each with its own ``--out``)::

      TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                  "task": {"type": "worker", "index": 0}}'

  Not available yet: Keras 3's ``Model.fit`` fails under this strategy (keras-team/keras#20585,
  reproduced here with two local workers), so :func:`check_strategy` stops a run before it
  starts, with that reason.
- ``tpu``: ``TPUStrategy`` on the TPU found by ``TPUClusterResolver`` (untested here).

The profile's ``batch_size`` is the global batch: a strategy splits it over its replicas.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

from lhc.training.profiles import STRATEGIES

__all__ = ["check_strategy", "jit_compile", "make_deterministic", "make_strategy",
           "precision_policy"]


def check_strategy(name: str) -> None:
    """Stop before a run starts when a strategy cannot run here (module docstring)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {list(STRATEGIES)}")
    if name == "multi_worker":
        raise ValueError(
            "strategy multi_worker: Keras 3's Model.fit does not run under "
            "tf.distribute.MultiWorkerMirroredStrategy (keras-team/keras#20585; reproduced here "
            "with Keras 3.15 and TensorFlow 2.21: fit fails reducing its first distributed "
            "batch). Use mirrored on one machine until Keras supports it.")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy for a profile's ``strategy`` value (module docstring).

    Args:
        name: ``auto``, ``none``, ``mirrored`` or ``tpu`` (``multi_worker``: see above).

    Returns:
        The strategy; build and compile models inside its ``scope()``.
    """
    check_strategy(name)
    # A TPU must be set up before anything initialises TensorFlow's devices, as listing does.
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "none" or (name == "auto" and len(gpus) < 2):
        return tf.distribute.get_strategy()
    devices = gpus or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])


def jit_compile() -> bool | str:
    """XLA only where there is an accelerator: on this CPU it made training 25x slower."""
    return "auto" if tf.config.list_logical_devices("GPU") else False


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Set Keras' global dtype policy (``float32``, ``mixed_bfloat16``) and restore it after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and Keras and make TensorFlow's ops deterministic.

    Op determinism is process-wide and stays on: the same seed then gives the same weights,
    batches and metrics on the same machine.
    """
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
