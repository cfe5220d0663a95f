"""Model files in and out: load a trained model from a run or a ``.keras`` file, export it.

:func:`load_model` accepts what a user has at hand: a run directory (its stage-4 LHC-Net by
default, see :func:`lhc.training.load_trained_model`), a ``.keras`` file or a
``keras.Model``, and returns the model with its class names. :func:`export_model` writes
it as

- ``keras``: the Keras 3 ``.keras`` archive (``model.save``); the LHC layer is registered
  serialisable, so ``keras.saving.load_model`` reads it back after ``import lhc.layers``;
- ``savedmodel``: a TensorFlow SavedModel folder with a ``serve`` endpoint
  (``model.export``), for TF Serving and ``tf.saved_model.load``;
- ``tflite``: a TensorFlow Lite flat buffer (``tf.lite.TFLiteConverter.from_keras_model``).
  Every op of LHC-Net, the LHC layer's pooling, convolution, batched matmuls, sigmoid, exp
  and softmax included, converts to a TFLite builtin op: no ``SELECT_TF_OPS`` (Flex)
  fallback is used, so the file runs with the plain TFLite interpreter. The batch axis stays
  dynamic; inputs are float32 ``(B, S, S, 3)`` in [0, 255], as for the Keras model.

Every file is written atomically (:mod:`lhc._io`); a SavedModel folder is built beside its
destination and renamed into place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np

from lhc._io import atomic_path, write_bytes
from lhc.data import FER2013_CLASSES, FERPLUS_CLASSES

__all__ = ["FORMATS", "LoadedModel", "TFLiteModel", "default_export_path", "export_model",
           "load_model", "tflite_bytes"]

FORMATS = ("keras", "savedmodel", "tflite")
_SUFFIXES = {"keras": ".keras", "savedmodel": "", "tflite": ".tflite"}
# Output sizes whose class names are known without the training data.
_CLASSES_BY_COUNT = {len(FER2013_CLASSES): FER2013_CLASSES, len(FERPLUS_CLASSES): FERPLUS_CLASSES}


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model ready to predict, with what it needs to be read.

    Attributes:
        model: the ``keras.Model``, probabilities ``(B, num_classes)`` from ``(B, S, S, 3)``.
        class_names: one name per output, in output order.
        input_size: the side ``S`` of the square input.
        source: where the model came from, for reports (``runs/x stage4/lhc_net``, a file).
    """

    model: keras.Model
    class_names: tuple[str, ...]
    input_size: int
    source: str


def load_model(source: str | os.PathLike | keras.Model, stage: str = "stage4",
               model: str | None = None, class_names: tuple[str, ...] | None = None
               ) -> LoadedModel:
    """Load a model from a run directory, a ``.keras`` file, or take a ``keras.Model``.

    Args:
        source: a run directory (rebuilt from its profile, with the stage's final weights),
            a ``.keras`` file, or a ``keras.Model``.
        stage: with a run directory, the stage (``"stage1"``..``"stage4"``, ``"lhcc"``).
        model: with a run directory, the model (``"resnet34v2"``, ``"lhc_net"``,
            ``"lhc_netc"``); by default the one the run's profile trains in ``stage``
            (stage 4: LHC-Net).
        class_names: names of the outputs. By default a run's own data's class names, else
            FER2013's seven (FER+'s eight for an 8-output model).

    Returns:
        The :class:`LoadedModel`.

    Raises:
        FileNotFoundError: ``source`` does not exist, or the run has no such finished model.
        ValueError: ``source`` is neither a run directory nor a ``.keras`` file, the model's
            input is not square ``(S, S, 3)``, or ``class_names`` does not match its outputs.
    """
    if isinstance(source, keras.Model):
        loaded, description, names = source, source.name, class_names
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such run directory or .keras file")
        if path.is_dir():
            from lhc.training import load_run, load_run_data, load_trained_model
            from lhc.training.runner import STAGE_LABELS

            if model is None:
                stages = load_run(path)[0].stages
                stage = STAGE_LABELS.get(stage, stage)
                if stage not in stages:
                    raise ValueError(f"{path}: no stage {stage!r}; expected one of "
                                     f"{', '.join(stages)}")
                model = stages[stage].model
            names = class_names or load_run_data(path).class_names
            loaded = load_trained_model(path, stage=stage, model=model, num_classes=len(names))
            description = f"{path} {stage}/{model}"
        elif path.suffix == ".keras":
            import lhc.layers  # noqa: F401  (registers the LHC layer for deserialisation)

            loaded, description, names = keras.saving.load_model(path), str(path), class_names
        else:
            raise ValueError(f"{path}: expected a run directory (with run.json) or a .keras "
                             f"file, got a {path.suffix or 'suffix-less'} file")
    input_shape = tuple(loaded.input_shape[1:])
    if len(input_shape) != 3 or input_shape[0] != input_shape[1] or input_shape[2] != 3:
        raise ValueError(f"{description}: expected a model of square RGB input (S, S, 3), got "
                         f"input shape {input_shape}")
    num_outputs = loaded.output_shape[-1]
    if names is None:
        if num_outputs not in _CLASSES_BY_COUNT:
            raise ValueError(f"{description}: {num_outputs} outputs; pass class_names, one "
                             f"name per output")
        names = _CLASSES_BY_COUNT[num_outputs]
    if len(names) != num_outputs:
        raise ValueError(f"{description}: {len(names)} class names {list(names)} for "
                         f"{num_outputs} outputs")
    return LoadedModel(loaded, tuple(names), int(input_shape[0]), description)


def default_export_path(source: str | os.PathLike, format: str) -> Path:
    """``exports/<name><suffix>`` named after a run directory or ``.keras`` file."""
    path = Path(source)
    name = path.stem if path.suffix == ".keras" else path.resolve().name
    return Path("exports") / f"{name}{_SUFFIXES[format]}"


def tflite_bytes(model: keras.Model) -> bytes:
    """The model converted to a TensorFlow Lite flat buffer, builtin ops only (float32).

    Raises:
        tensorflow's ``ConverterError`` naming the op when some op has no builtin kernel.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    # The converter saves the model to a temporary SavedModel first and prints that folder's
    # endpoints, which would read as if something had been saved for the user.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def require_tensorflow(format: str) -> None:
    """Stop with a clear message when a TensorFlow-only format is asked for without TensorFlow.

    Raises:
        ValueError: TensorFlow cannot be imported (an installation with the extra ``jax`` only).
    """
    from lhc.training.distribute import tensorflow_available

    if not tensorflow_available():
        raise ValueError(f"export format {format!r} needs TensorFlow, which is not installed "
                         "here: pip install -e '.[tf]' (the format keras needs no TensorFlow)")


def export_model(model: keras.Model, format: str, out: str | os.PathLike) -> Path:
    """Write ``model`` to ``out`` in ``format`` (module docstring), atomically.

    Args:
        model: the model to export.
        format: one of :data:`FORMATS`.
        out: destination file (``keras``: must end in ``.keras``; ``tflite``: any name) or
            folder (``savedmodel``; an existing one is replaced).

    Returns:
        The written path.

    Raises:
        ValueError: on an unknown format or a ``.keras`` destination with another suffix.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    if format != "keras":
        require_tensorflow(format)
    out = Path(out)
    if format == "keras":
        if out.suffix != ".keras":
            raise ValueError(f"{out}: a Keras model file must end in .keras")
        with atomic_path(out) as tmp:
            model.save(tmp)
    elif format == "tflite":
        write_bytes(out, tflite_bytes(model))
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            model.export(staging / "model", format="tf_saved_model", verbose=False)
            if out.exists():
                shutil.rmtree(out)
            os.replace(staging / "model", out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out


class TFLiteModel:
    """A TFLite flat buffer behind a ``predict(images) -> probabilities`` call.

    Args:
        flat_buffer: the bytes of a ``.tflite`` model (as :func:`tflite_bytes` returns).
        num_threads: interpreter threads; ``None`` lets TFLite choose.
    """

    def __init__(self, flat_buffer: bytes, num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # LiteRT is the interpreter's new home; TF still ships the old one
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter  # noqa: N806
        with warnings.catch_warnings():
            # tf.lite.Interpreter warns that it moves to LiteRT; it works as before.
            warnings.simplefilter("ignore", UserWarning)
            self.interpreter = Interpreter(model_content=flat_buffer, num_threads=num_threads)
        self._input = self.interpreter.get_input_details()[0]["index"]
        self._output = self.interpreter.get_output_details()[0]["index"]
        self._batch = None

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``(B, num_classes)`` of float32 images ``(B, S, S, 3)``."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if self._batch != len(images):
            # The batch axis is dynamic in the flat buffer; the interpreter sizes its tensors.
            self.interpreter.resize_tensor_input(self._input, images.shape)
            self.interpreter.allocate_tensors()
            self._batch = len(images)
        self.interpreter.set_tensor(self._input, images)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output).copy()
