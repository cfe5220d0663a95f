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
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lhc._io import write_json
from lhc.training.arms import ARMS, Arm
from lhc.training.layout import RunLayout
from lhc.training.profiles import Profile, load_profile
from lhc.training.run_lock import run_lock
from lhc.training.runner import train

__all__ = ["ARMS", "GLOBAL_ARM", "Arm", "parse_seeds", "sweep", "train_global_arm"]

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


def sweep(profile: Profile | str, seeds: str | Iterable[int], arms: Iterable[str] = ("A", "B"),
          data_path: str | Path | None = None, out: str | Path | None = None,
          base: str | Path | None = None, verbose: int = 1) -> dict[str, Any]:
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

    Returns:
        The content of ``sweep.json``.
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
    seeds = parse_seeds(seeds)
    out = Path(out) if out else Path("runs") / f"sweep-{profile.name}"
    with run_lock(out, "lhc sweep"):  # one writer per sweep folder, as per run folder
        return _run_arms(profile, arms, seeds, data_path, out, base, verbose)


def _run_arms(profile: Profile, arms: list[str], seeds: list[int], data_path, out: Path,
              base, verbose: int) -> dict[str, Any]:
    if base is None:
        base = out / "base"
        train(profile, data_path, out=base, stages="1-3", verbose=verbose)
    elif not RunLayout(base).stage("stage3", "resnet34v2").done:
        raise ValueError(f"{base}: no finished stage 3 "
                         f"({RunLayout(base).stage('stage3', 'resnet34v2').summary}); a sweep's "
                         "base run must have done stages 1-3")
    runs = {}
    for arm in arms:
        arm_profile = profile.replace_stage("stage4", model=ARMS[arm].model)
        for seed in seeds:
            key = f"{arm}_seed{seed}"
            log.info("sweep %s: arm %s, seed %s", out, arm, seed)
            metrics = train(arm_profile, data_path, out=out / "runs" / key, seed=seed,
                            stages=ARMS[arm].stages, start_from=base, verbose=verbose)
            write_json(out / "metrics" / f"{key}.json", {"arm": arm, "seed": seed, **metrics})
            runs[key] = {"arm": arm, "seed": seed, "status": metrics["status"],
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
