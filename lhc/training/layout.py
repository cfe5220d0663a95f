"""Where everything of a run lives: one object owns a run directory's layout.

    runs/<name>/
      .lock                             the writer's lock (lhc.training.run_lock); empty when free
      profile.yaml                      the resolved profile (block settings written out)
      run.json                          data path, stages requested, start_from, divergence
      metrics.json                      every stage summarised, rewritten after each stage
      data/                             the synthetic data set, when no data path is given
      cache/                            the paper's JPEG cache (profile data.paper_jpeg)
      stages/<stage>/<model>/
        history.csv                     one row per epoch (loss, accuracy, val_*, lr, seconds)
        checkpoints/                    per-epoch checkpoints (lhc.training.checkpoints)
        damaged/                        checkpoints that failed verification, kept aside
        final.weights.h5                the stage's result: best epoch's weights (when done)
        initial_lhc_weights.npz         the LHC modules' starting weights (models with LHC)
        summary.json                    the stage's metrics; its presence marks the stage done
      tensorboard/<stage>_<model>/      TensorBoard logs (when TensorFlow is installed)

Notebooks, sweeps, export and evaluation ask :class:`RunLayout` for a path instead of spelling
it out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunLayout", "StageLayout"]


@dataclass(frozen=True)
class StageLayout:
    """The files of one model trained in one stage of a run."""

    folder: Path

    @property
    def history(self) -> Path:
        return self.folder / "history.csv"

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def final_weights(self) -> Path:
        return self.folder / "final.weights.h5"

    @property
    def initial_lhc_weights(self) -> Path:
        return self.folder / "initial_lhc_weights.npz"

    @property
    def summary(self) -> Path:
        return self.folder / "summary.json"

    @property
    def done(self) -> bool:
        """True once the stage finished (its summary is written last)."""
        return self.summary.exists()


@dataclass(frozen=True)
class RunLayout:
    """The paths of a run directory (module docstring).

    Args:
        root: the run directory.
    """

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def profile(self) -> Path:
        return self.root / "profile.yaml"

    @property
    def state(self) -> Path:
        return self.root / "run.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def stages_dir(self) -> Path:
        return self.root / "stages"

    def stage(self, stage: str, model: str) -> StageLayout:
        """The files of ``model`` trained in ``stage`` (``stage1``..``stage4``, ``lhcc``)."""
        return StageLayout(self.stages_dir / stage / model)

    def stage_models(self, stage: str) -> list[str]:
        """The models a stage trained (or began to), sorted by name."""
        folder = self.stages_dir / stage
        return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []

    def finished(self) -> list[tuple[str, str]]:
        """(stage, model) of every finished stage, sorted."""
        return sorted((path.parent.parent.name, path.parent.name)
                      for path in self.stages_dir.glob("*/*/summary.json"))

    def checkpointed(self) -> list[tuple[str, str, int]]:
        """(stage, model, epochs checkpointed) of every stage begun and not finished.

        Read from each stage's ``checkpoints/latest.json``; an unreadable index counts 0.
        """
        found = []
        for pointer in sorted(self.stages_dir.glob("*/*/checkpoints/latest.json")):
            files = StageLayout(pointer.parent.parent)
            if files.done:
                continue
            try:
                epoch = int(json.loads(pointer.read_text())["epoch"])
            except (OSError, ValueError, KeyError, TypeError):
                epoch = 0
            found.append((files.folder.parent.name, files.folder.name, epoch))
        return found

    def tensorboard(self, stage: str, model: str) -> Path:
        return self.root / "tensorboard" / f"{stage}_{model}"
