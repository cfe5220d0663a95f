"""Distribution over devices and hosts, precision policies and determinism, on any backend.

The profile key ``strategy`` keeps one meaning on every backend; the engine underneath is the
backend's own:

==============  =====================================  ========================================
strategy        TensorFlow (``tf.distribute``)         JAX (``keras.distribution``)
==============  =====================================  ========================================
``none``        the default strategy (one device)      no distribution (one device)
``auto``        ``MirroredStrategy`` over all GPUs     ``DataParallel`` over all local devices
                when there are two or more             when there are two or more
``mirrored``    ``MirroredStrategy`` over all GPUs,    ``DataParallel`` over all local devices
                or all logical CPU devices             (CPU: ``XLA_FLAGS=--xla_force_host_
                                                       platform_device_count=2``)
``multi_worker`` refused (below)                       ``keras.distribution.initialize`` with
                                                       the coordinator, then ``DataParallel``
                                                       over every process's devices
``tpu``         ``TPUStrategy``                        ``DataParallel`` over the TPU devices
==============  =====================================  ========================================

On TensorFlow, ``multi_worker`` stops a run before it starts: Keras 3's ``Model.fit`` fails
under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585, reproduced here with Keras 3.15
and TensorFlow 2.21). On JAX every process runs the same ``lhc train`` command with the
coordinator's address, the number of processes and its own id (``lhc train --coordinator
HOST:PORT --num-processes N --process-id I``, which set the variables
``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and
``KERAS_DISTRIBUTION_PROCESS_ID`` that ``keras.distribution.initialize`` reads), and feeds its
own share of every global batch (:class:`lhc.data.pipeline.EpochBatches`).

The profile's ``batch_size`` is the global batch: a strategy splits it over its replicas.
Nothing here imports TensorFlow unless the backend is TensorFlow.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras

from lhc.training.profiles import STRATEGIES

__all__ = ["Placement", "backend", "check_strategy", "jit_compile", "make_deterministic",
           "make_strategy", "precision_policy", "tensorflow_available"]

MULTI_WORKER_REFUSED = (
    "strategy multi_worker on TensorFlow: Keras 3's Model.fit does not run under "
    "tf.distribute.MultiWorkerMirroredStrategy (keras-team/keras#20585; reproduced here with "
    "Keras 3.15 and TensorFlow 2.21: fit fails reducing its first distributed batch). Use "
    "KERAS_BACKEND=jax for several hosts, or mirrored on one machine.")


def backend() -> str:
    """Keras' backend: ``tensorflow``, ``jax`` or ``torch``."""
    return keras.backend.backend()


def tensorflow_available() -> bool:
    """True when TensorFlow can be imported (TensorBoard logs, SavedModel and TFLite need it)."""
    from lhc.backend import installed

    return installed("tensorflow")


def check_strategy(name: str) -> None:
    """Stop before a run starts when a strategy cannot run on this backend (module docstring)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {list(STRATEGIES)}")
    if name == "multi_worker" and backend() == "tensorflow":
        raise ValueError(MULTI_WORKER_REFUSED)
    if name != "none" and backend() not in ("tensorflow", "jax"):
        raise ValueError(f"strategy {name}: distribution runs on TensorFlow and JAX; this "
                         f"backend is {backend()} (use strategy none)")


@dataclass
class Placement:
    """Where a stage's models live and how its batches are fed: what :func:`make_strategy` gives.

    Attributes:
        name: the profile's strategy.
        engine: the backend's object (a ``tf.distribute.Strategy``, a
            ``keras.distribution.Distribution``) or None for one device.
        replicas: devices a global batch is split over.
        process_index: this process's index among ``process_count`` (JAX ``multi_worker``).
        process_count: processes feeding every global batch together.
    """

    name: str
    engine: Any = None
    replicas: int = 1
    process_index: int = 0
    process_count: int = 1

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Build and compile the stage's models inside this block."""
        if self.engine is None:
            yield
        else:
            with self.engine.scope():
                yield


def make_strategy(name: str, coordinator: str | None = None, num_processes: int | None = None,
                  process_id: int | None = None) -> Placement:
    """The placement for a profile's ``strategy`` value on the current backend (module docstring).

    Args:
        name: ``auto``, ``none``, ``mirrored``, ``multi_worker`` or ``tpu``.
        coordinator, num_processes, process_id: JAX ``multi_worker`` only: the coordinator's
            ``host:port``, the number of processes and this one's id; None reads them from the
            ``KERAS_DISTRIBUTION_*`` variables.

    Returns:
        The :class:`Placement`; build and compile models inside its ``scope()``.
    """
    check_strategy(name)
    if backend() == "tensorflow":
        return _tensorflow_placement(name)
    if backend() == "jax":
        return _jax_placement(name, coordinator, num_processes, process_id)
    return Placement(name)


def _tensorflow_placement(name: str) -> Placement:
    import tensorflow as tf

    # A TPU must be set up before anything initialises TensorFlow's devices, as listing does.
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
        return Placement(name, strategy, strategy.num_replicas_in_sync)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "none" or (name == "auto" and len(gpus) < 2):
        return Placement(name)
    devices = gpus or tf.config.list_logical_devices("CPU")
    strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    return Placement(name, strategy, strategy.num_replicas_in_sync)


def _jax_placement(name: str, coordinator: str | None, num_processes: int | None,
                   process_id: int | None) -> Placement:
    import jax

    if name == "multi_worker":
        # initialize() reads the KERAS_DISTRIBUTION_* variables for what is not given, and must
        # run before JAX lists its devices.
        if not jax.distributed.is_initialized():
            keras.distribution.initialize(coordinator, num_processes, process_id)
    devices = keras.distribution.list_devices()
    if name == "none" or (name in ("auto", "tpu") and len(devices) < 2):
        return Placement(name)
    # Each process feeds its own share of every global batch (EpochBatches): Keras shards only
    # tf.data by itself, and refuses anything else under several processes unless told not to.
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    return Placement(name, distribution, len(devices), jax.process_index(), jax.process_count())


def jit_compile() -> bool | str:
    """What a stage passes to ``compile(jit_compile=...)``: Keras' ``"auto"`` but on a CPU
    with TensorFlow, whose XLA made training 25x slower here.

    On JAX ``"auto"`` compiles the step: ``lhc.data.pipeline.augmentation_layers`` marks the
    augmentation layers jittable there (without it one of them kept the step uncompiled).
    """
    if backend() != "tensorflow":
        return "auto"
    import tensorflow as tf

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
    """Seed Python, NumPy and Keras (and TensorFlow), and make TensorFlow's ops deterministic.

    On TensorFlow op determinism is process-wide and stays on. JAX on CPU is deterministic for
    a given program; on a GPU, XLA's ``--xla_gpu_deterministic_ops`` cannot compile max-pool
    gradients (google/flax#4233), so it is not set here: runs there repeat to within float
    rounding, not bit for bit.
    """
    keras.utils.set_random_seed(seed)
    if backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

