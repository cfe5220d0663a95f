"""The default backend: JAX when TensorFlow is absent and nobody chose (lhc.backend).

Each case is a fresh interpreter (this process imported Keras long ago) whose import system
may refuse ``tensorflow``, as an environment installed with ``pip install -e '.[jax]'`` would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = textwrap.dedent("""
    import importlib.abc, json, os, sys

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in sys.argv[1].split(","):
                raise ImportError(f"{name}: refused by this test")

    sys.meta_path.insert(0, Refuse())
    import lhc
    print(json.dumps({"backend": os.environ.get("KERAS_BACKEND"),
                      "keras_imported": "keras" in sys.modules}))
""")


def probe(tmp_path: Path, refused: str, keras_backend: str | None = None,
          keras_json: dict | None = None) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path / "keras-home")
    if keras_backend is not None:
        env["KERAS_BACKEND"] = keras_backend
    if keras_json is not None:
        (tmp_path / "keras-home").mkdir()
        (tmp_path / "keras-home" / "keras.json").write_text(json.dumps(keras_json))
    result = subprocess.run([sys.executable, "-c", PROBE, refused], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")


@needs_jax
def test_without_tensorflow_lhc_picks_jax_before_keras_loads(tmp_path):
    assert probe(tmp_path, "tensorflow") == {"backend": "jax", "keras_imported": False}


@needs_jax
def test_a_keras_json_naming_the_missing_tensorflow_is_overridden(tmp_path):
    # Keras writes this file by itself on first import, so it is no one's choice.
    assert probe(tmp_path, "tensorflow", keras_json={"backend": "tensorflow"})["backend"] == "jax"


def test_an_explicit_choice_is_kept(tmp_path):
    assert probe(tmp_path, "tensorflow", keras_backend="torch")["backend"] == "torch"
    assert probe(tmp_path, "tensorflow", keras_json={"backend": "numpy"})["backend"] is None


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="TensorFlow is not installed")
def test_with_tensorflow_installed_keras_keeps_its_default(tmp_path):
    assert probe(tmp_path, "")["backend"] is None


def test_with_no_backend_installed_nothing_is_set(tmp_path):
    assert probe(tmp_path, "tensorflow,jax,torch")["backend"] is None
