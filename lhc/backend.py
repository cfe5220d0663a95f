"""Which Keras backend ``lhc`` runs on when nobody said: the one that is installed.

Keras falls back to TensorFlow when ``KERAS_BACKEND`` is unset (and its ``keras.json`` names
none), and then fails to import in an environment installed with ``pip install -e '.[jax]'``
alone. :func:`choose_default_backend` runs when ``lhc`` is imported, before Keras is: it
changes nothing when ``KERAS_BACKEND`` is set, when Keras is already imported, or when
TensorFlow is importable; otherwise it picks the first of JAX and PyTorch that is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

__all__ = ["FALLBACK_BACKENDS", "choose_default_backend", "installed"]

# In order of preference when TensorFlow is absent: the GPU machine this project uses has JAX.
FALLBACK_BACKENDS = (("jax", "jax"), ("torch", "torch"))


def installed(module: str) -> bool:
    """True when ``module`` can be imported, without importing it."""
    if sys.modules.get(module) is not None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses the module counts as absent
        return False


def _configured_backend() -> str | None:
    """The backend ``keras.json`` names, if a user wrote one there."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    try:
        return json.loads((home / "keras.json").read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        return None


def choose_default_backend() -> str | None:
    """Set ``KERAS_BACKEND`` to an installed backend when Keras would pick a missing one.

    Returns:
        The backend set, or ``None`` when the choice was left alone.
    """
    if os.environ.get("KERAS_BACKEND") or "keras" in sys.modules or installed("tensorflow"):
        return None
    configured = _configured_backend()
    if configured and configured != "tensorflow" and installed(configured):
        return None
    for backend, module in FALLBACK_BACKENDS:
        if installed(module):
            os.environ["KERAS_BACKEND"] = backend
            return backend
    return None
