"""What a finished run leaves behind, for evaluation and analysis: its data and its models.

A run directory (:mod:`lhc.training.runner`) stores the resolved profile and, per finished
stage and model, ``final.weights.h5``. The models are rebuilt here from the profile (input size,
block settings) and loaded with those weights, and the data is read exactly as training read
it, so analyses never re-type a run's settings.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from lhc.training.layout import RunLayout, StageLayout
from lhc.training.profiles import Profile, load_profile
from lhc.training.registry import build_model
from lhc.training.runner import STAGE_LABELS, load_data
from lhc.training.stage import finished_folder

__all__ = ["load_initial_lhc_weights", "load_run", "load_run_data", "load_trained_model",
           "profile_data"]


def load_run(run_dir: str | Path) -> tuple[Profile, dict]:
    """The run's resolved profile and its state (``run.json``: data path, stages, ...)."""
    layout = RunLayout(run_dir)
    if not layout.state.exists():
        raise FileNotFoundError(
            f"{run_dir}: not a run directory (no {layout.state.name}); create one with e.g. "
            f"`lhc train --profile smoke --out {run_dir}`")
    return load_profile(layout.profile), json.loads(layout.state.read_text())


def profile_data(profile: Profile | str, data_path: str | None, run_dir: str | Path):
    """The data set a profile trains on, read exactly as training will read it.

    Without ``data_path`` this is the profile's synthetic set, generated into
    ``<run_dir>/data/`` (the very file training then uses); with one, the source read with
    the profile's ``carve_test``. Notebook 01 describes the data this way, before training.
    """
    profile = load_profile(profile) if isinstance(profile, str | Path) else profile
    return load_data(profile, data_path or None, Path(run_dir))


def load_run_data(run_dir: str | Path):
    """The run's data set (:class:`lhc.data.FER2013Data`), read as its training read it."""
    profile, state = load_run(run_dir)
    return load_data(profile, state["data_path"], Path(run_dir))


def load_initial_lhc_weights(run_dir: str | Path, stage: str = "stage4",
                             model: str = "lhc_net") -> dict[str, list[np.ndarray]]:
    """The LHC modules' weights as the stage started, ``{layer name: [arrays]}``.

    The ablations' "de-train" (paper section 2.2) resets modules to exactly these values.

    Raises:
        FileNotFoundError: the stage did not keep them (runs made before they were kept).
    """
    run_dir = Path(run_dir)
    _, state = load_run(run_dir)
    stage = STAGE_LABELS.get(stage, stage)
    folder = finished_folder(run_dir, state, stage, model)
    files = StageLayout(folder) if folder else RunLayout(run_dir).stage(stage, model)
    path = files.initial_lhc_weights
    if not path.exists():
        raise FileNotFoundError(f"{path}: no initial LHC weights kept for {stage}/{model}")
    with np.load(path) as stored:
        names = sorted({key.split("/")[0] for key in stored.files})
        return {name: [stored[f"{name}/{index}"] for index in
                       range(sum(key.startswith(f"{name}/") for key in stored.files))]
                for name in names}


def load_trained_model(run_dir: str | Path, stage: str = "stage4", model: str = "lhc_net",
                       num_classes: int | None = None) -> keras.Model:
    """Rebuild a stage's model from the run's profile and load its final weights.

    Args:
        run_dir: the run directory.
        stage: ``"stage1"``..``"stage4"`` or ``"lhcc"`` (also ``"1"``..``"4"``, ``"C"``).
        model: ``"resnet34v2"``, ``"lhc_net"`` or ``"lhc_netc"``.
        num_classes: output classes; by default those of the run's data.

    Returns:
        The trained ``keras.Model``.

    Raises:
        FileNotFoundError: the run or that stage's finished model does not exist; the message
            lists the finished stages and models there are.
    """
    run_dir = Path(run_dir)
    profile, state = load_run(run_dir)
    stage = STAGE_LABELS.get(stage, stage)
    folder = finished_folder(run_dir, state, stage, model)
    if folder is None:
        finished = [f"{done_stage}/{done_model}"
                    for done_stage, done_model in RunLayout(run_dir).finished()]
        raise FileNotFoundError(
            f"{run_dir}: no finished {stage}/{model}; finished here: {finished or 'none'}")
    if num_classes is None:
        num_classes = len(load_run_data(run_dir).class_names)
    trained = build_model(model, profile, num_classes)
    trained.load_weights(StageLayout(folder).final_weights)
    return trained
