"""Training: the paper's four-stage protocol as profiles, resumable runs, sweeps (section 3).

Modules, one job each:

- :mod:`lhc.training.profiles`: profiles (``lhc/profiles/*.yaml``) validated into dataclasses.
- :mod:`lhc.training.registry`: the models a profile can name, and their builders.
- :mod:`lhc.training.layout`: where everything of a run directory lives (``RunLayout``).
- :mod:`lhc.training.distribute`: distribution over devices and hosts on TensorFlow
  (``tf.distribute``) or JAX (``keras.distribution``), precision policies, determinism.
- :mod:`lhc.training.callbacks`: divergence guard, epoch order, early stopping + checkpoints.
- :mod:`lhc.training.stage`: one model through one stage: build, one ``fit``, finish.
- :mod:`lhc.training.checkpoints`: per-epoch checkpoints written atomically, and reading them.
- :mod:`lhc.training.runner`: :func:`train` and :func:`resume`: a run's stages in order, the
  acceptance rule, ``metrics.json``.
- :mod:`lhc.training.sweeps`: :func:`sweep`, the paper's seed sets A, B and C.
- :mod:`lhc.training.figures`: learning curves of a run.
- :mod:`lhc.training.artifacts`: a finished run's data and trained models, for analyses.

The ``lhc train`` and ``lhc sweep`` subcommands are :mod:`lhc.cli.train` and
:mod:`lhc.cli.sweep`.

Names are imported lazily, so that ``lhc`` commands that do not train never import TensorFlow.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Profile": "profiles",
    "ProfileError": "profiles",
    "StageSettings": "profiles",
    "DataSettings": "profiles",
    "STAGES": "profiles",
    "available_profiles": "profiles",
    "load_profile": "profiles",
    "profile_from_dict": "profiles",
    "train": "runner",
    "resume": "runner",
    "acceptance": "runner",
    "parse_stages": "runner",
    "read_history": "runner",
    "sweep": "sweeps",
    "parse_seeds": "sweeps",
    "train_global_arm": "sweeps",
    "learning_curves": "figures",
    "stage_table": "figures",
    "load_initial_lhc_weights": "artifacts",
    "load_run": "artifacts",
    "load_run_data": "artifacts",
    "load_trained_model": "artifacts",
    "profile_data": "artifacts",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lhc.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lhc.training.{_EXPORTS[name]}"), name)
