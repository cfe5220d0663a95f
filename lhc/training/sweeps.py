"""Seed sweeps: the paper's sets A, B and C (section 3, "Stage 4") and the attention peers, as
runs of stage 4 under one protocol.

All runs of a sweep start from one trained backbone (stages 1-3, the "base" run) and vary
the run's seed, which draws the data order, the augmentation, the dropout masks and the new
modules' initial weights (the paper's "data generator seed"). Every arm runs the same seeds,
so arms compare seed by seed (:mod:`lhc.statistics`):

- ``A``: stage 4 without attention modules (ResNet34v2 trained on with stage 4's settings);
- ``B``: stage 4 with LHC-Net (the profile's block settings);
- ``C``: arm B followed by the LHC-NetC stage, for the paper's LHC-NetC row;
- ``GLOBAL``: LHC-Net with full-map heads (the section-2.2 global-heads arm);
- ``SE``, ``CBAM``, ``ECA``: ResNet34v2 with that channel-attention module at LHC's five
  positions (:func:`lhc.models.insert_attention`), each starting as the identity as LHC does.

The paper's set B varied the block settings at a fixed seed; here every arm varies the seed,
and other settings are other profiles. Layout of a sweep folder::

    <out>/base/                    the base run (stages 1-3), unless ``base`` names one
    <out>/runs/<arm>_seed<k>/      one run directory per arm and seed (resumable)
    <out>/metrics/<arm>_seed<k>.json   each run's metrics.json, with its arm and seed
    <out>/sweep.json               the sweep's settings and every run's status and acceptance

Runs are kept whatever the acceptance rule says; the evaluation turns the metrics files into
the paper's tables over the kept runs.

A sweep is a list of :class:`Trial` (the base, then each arm and seed), each one
:func:`run_trial`. The ``local`` engine runs them one after another in this process; the
``ray`` engine (:mod:`lhc.training.ray_engine`) as Ray Tune trials, many at once, each
retried from its run directory's last checkpoint when it dies. Both write the same files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lhc._io import read_json, write_json
from lhc.training.arms import ARMS, Arm
from lhc.training.layout import RunLayout
from lhc.training.profiles import Profile, load_profile
from lhc.training.run_lock import run_lock
from lhc.training.runner import train

__all__ = ["ARMS", "ENGINES", "GLOBAL_ARM", "Arm", "Trial", "parse_seeds", "run_trial", "sweep",
           "train_global_arm"]

log = logging.getLogger(__name__)

def parse_seeds(spec: str | Iterable[int]) -> list[int]:
    """Seeds from ``"1-10"``, ``"1,3,7"``, ``"1-3,8"`` or an iterable of ints."""
    if not isinstance(spec, str):
        return [int(seed) for seed in spec]
    seeds: list[int] = []
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or not (last or first).isdigit() or int(last or first) < int(first):
            raise ValueError(f"seeds {spec!r}: expected ranges like 1-10 or lists like 1,3,7 of "
                             "non-negative integers")
        seeds.extend(range(int(first), int(last or first) + 1))
    return seeds


ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Trial:
    """One training job of a sweep: the base run, or one arm on one seed.

    Attributes:
        key: ``"base"`` or ``"<arm>_seed<k>"``.
        profile: the profile it trains (stage 4's model already set to the arm's).
        out: its run directory (absolute, so that a worker in another folder finds it).
        stages: the stages it trains (:func:`lhc.training.parse_stages`).
        seed: the run's seed; None keeps the profile's (the base run).
        start_from: the run directory whose stages precede ``stages`` (the base), or None.
        data_path: FER2013 source, absolute; None for the profile's synthetic data.
        metrics_file: where its metrics are copied with ``arm`` and ``seed``; None for the base.
        arm: the arm (:data:`ARMS`); None for the base.
        verbose: Keras' fit verbosity.
    """

    key: str
    profile: Profile
    out: Path
    stages: str
    seed: int | None = None
    start_from: Path | None = None
    data_path: str | None = None
    metrics_file: Path | None = None
    arm: str | None = None
    verbose: int = 1


def run_trial(trial: Trial) -> dict[str, Any]:
    """Train one trial, or continue it from its last checkpoint, and record its metrics.

    Both engines call this: in this process (``local``) or in a Ray worker (``ray``), where a
    retried trial lands here again and :func:`train` resumes its run directory.
    """
    metrics = train(trial.profile, trial.data_path, out=trial.out, seed=trial.seed,
                    stages=trial.stages, start_from=trial.start_from, verbose=trial.verbose)
    if trial.metrics_file is not None:
        write_json(trial.metrics_file, {"arm": trial.arm, "seed": trial.seed, **metrics})
    return metrics


def sweep(profile: Profile | str, seeds: str | Iterable[int], arms: Iterable[str] = ("A", "B"),
          data_path: str | Path | None = None, out: str | Path | None = None,
          base: str | Path | None = None, verbose: int = 1,
          engine: str = "local", **engine_settings: Any) -> dict[str, Any]:
    """Run stage 4 (and LHC-NetC for arm C) once per arm and seed from one trained backbone.

    Args:
        profile: a modular :class:`Profile`, a shipped profile's name or a YAML path.
        seeds: the seeds (:func:`parse_seeds`).
        arms: some of :data:`ARMS` (module docstring), e.g. ``A, B, SE, CBAM, ECA``.
        data_path: FER2013 source; None for the profile's synthetic data.
        out: the sweep folder; default ``runs/sweep-<profile name>``.
        base: a run directory whose stages 1-3 are done; default: train them in
            ``<out>/base`` with the profile's seed (or continue that run).
        verbose: Keras' fit verbosity.
        engine: ``"local"`` runs the trials one after another in this process; ``"ray"`` runs
            each as a Ray Tune trial (:func:`lhc.training.ray_engine.run_on_ray`, the
            ``ray`` extra), the base first, then every (arm, seed) at once as resources allow.
        **engine_settings: for ``"ray"``: ``address``, ``cpus_per_trial``,
            ``gpus_per_trial``, ``max_failures``, ``num_cpus``
            (:func:`lhc.training.ray_engine.run_on_ray`).

    Returns:
        The content of ``sweep.json``.

    Raises:
        ValueError: a bad arm, seed list, engine or engine setting, or a base without stage 3.
        lhc.training.ray_engine.TrialsFailed: some Ray trials failed after their retries
            (``sweep.json`` records them as failed).
    """
    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    if profile.mode != "modular":
        raise ValueError(f"{profile.source}: sweeps start stage 4 from a trained backbone, which "
                         "needs mode: modular")
    arms = [arm.strip().upper() for arm in arms]
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; expected some of {list(ARMS)}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {list(ENGINES)}")
    if engine == "local" and engine_settings:
        raise ValueError(f"engine settings {sorted(engine_settings)} are for engine 'ray'")
    if engine == "ray":
        from lhc.training.ray_engine import require_ray

        require_ray()  # before any training, not after the base run
    seeds = parse_seeds(seeds)
    out = (Path(out) if out else Path("runs") / f"sweep-{profile.name}").resolve()
    data_path = str(Path(data_path).resolve()) if data_path else None
    with run_lock(out, "lhc sweep"):  # one writer per sweep folder, as per run folder
        base, trials = _plan(profile, arms, seeds, data_path, out, base, verbose)
        if engine == "ray":
            from lhc.training.ray_engine import TrialsFailed, run_on_ray

            try:
                run_on_ray([trial for trial in trials if trial.key == "base"], out,
                           verbose=verbose, **engine_settings)
                run_on_ray([trial for trial in trials if trial.key != "base"], out,
                           verbose=verbose, **engine_settings)
            except TrialsFailed as failed:
                _write_summary(profile, out, base, arms, seeds, trials, failed.errors)
                raise
        else:
            for trial in trials:
                log.info("sweep %s: %s", out, trial.key)
                run_trial(trial)
        return _write_summary(profile, out, base, arms, seeds, trials, {})


def _plan(profile: Profile, arms: list[str], seeds: list[int], data_path: str | None, out: Path,
          base, verbose: int) -> tuple[Path, list[Trial]]:
    """The base (trained first unless given) and one trial per arm and seed, in that order."""
    trials = []
    if base is None:
        base = out / "base"
        trials.append(Trial("base", profile, base, "1-3", data_path=data_path, verbose=verbose))
    else:
        base = Path(base).resolve()
        if not RunLayout(base).stage("stage3", "resnet34v2").done:
            raise ValueError(f"{base}: no finished stage 3 "
                             f"({RunLayout(base).stage('stage3', 'resnet34v2').summary}); a "
                             "sweep's base run must have done stages 1-3")
    for arm in arms:
        arm_profile = profile.replace_stage("stage4", model=ARMS[arm].model)
        for seed in seeds:
            key = f"{arm}_seed{seed}"
            trials.append(Trial(key, arm_profile, out / "runs" / key, ARMS[arm].stages, seed,
                                base, data_path, out / "metrics" / f"{key}.json", arm, verbose))
    return base, trials


def _write_summary(profile: Profile, out: Path, base: Path, arms: list[str], seeds: list[int],
                   trials: list[Trial], errors: dict[str, str]) -> dict[str, Any]:
    """``sweep.json`` from the trials' metrics files; a trial with no file is failed."""
    runs = {}
    for trial in trials:
        if trial.metrics_file is None:
            continue
        if trial.key in errors or not trial.metrics_file.exists():
            runs[trial.key] = {"arm": trial.arm, "seed": trial.seed, "status": "failed",
                               "acceptance": None,
                               "error": errors.get(trial.key, "no metrics were written")}
            continue
        metrics = read_json(trial.metrics_file)
        runs[trial.key] = {"arm": trial.arm, "seed": trial.seed, "status": metrics["status"],
                           "acceptance": metrics.get("acceptance")}
    summary = {"profile": profile.name, "folder": str(out), "base": str(base), "arms": arms,
               "seeds": seeds, "runs": runs}
    write_json(out / "sweep.json", summary)
    return summary


GLOBAL_ARM = "global_arm"


def train_global_arm(run_dir: str | Path, verbose: int = 1) -> Path:
    """Train the head-correlation comparison arm beside a finished run (paper section 2.2).

    The arm is LHC-Net with full-map heads (``lhc_net_global``) trained exactly as the run's
    LHC-Net was: stage 4 with the run's profile, seed and data, from the same stage-3
    backbone. It lives in ``<run_dir>/global_arm/`` (a run directory of its own, resumable);
    a finished arm is not trained again.

    Returns:
        The arm's run directory; load its model with
        ``load_trained_model(path, "stage4", "lhc_net_global")``.
    """
    from lhc.training.artifacts import load_run

    run_dir = Path(run_dir)
    profile, state = load_run(run_dir)
    out = run_dir / GLOBAL_ARM
    train(profile.replace_stage("stage4", model="lhc_net_global"), state["data_path"], out=out,
          stages="4", start_from=str(run_dir), verbose=verbose)
    return out
