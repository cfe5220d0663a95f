"""A sweep's trials as Ray Tune trials: ``lhc sweep --engine ray`` (the ``ray`` extra).

Each (arm, seed) is one Tune trial with the resources asked for (e.g. one GPU), run where the
Ray cluster has room; many run at once. A trial is :func:`lhc.training.sweeps.run_trial` on
its own run directory, so its state lives where the in-process engine keeps it, not in
Ray: a trial that dies (its worker killed, its node lost) is retried up to ``max_failures``
times, and :func:`lhc.training.train` continues the run directory from its last verified
checkpoint. The results are the same files the in-process engine writes
(``metrics/<arm>_seed<k>.json``), gathered into the same ``sweep.json``.

On a cluster of several machines the sweep folder (and ``--data``) must be on storage every
node sees at the same path; Ray's own records go to ``<sweep folder>/ray/``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lhc.training.sweeps import Trial

__all__ = ["RayMissing", "TrialsFailed", "require_ray", "run_on_ray"]
# Ray workers inherit these from the driver so that a trial trains as this process would.
FORWARDED_VARIABLES = ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS",
                       "TF_DETERMINISTIC_OPS", "XLA_FLAGS")


class RayMissing(ImportError):
    """Ray Tune is not installed."""

    def __init__(self):
        super().__init__("the ray engine needs Ray Tune, which is not installed here: "
                         "pip install -e '.[ray]'")


class TrialsFailed(RuntimeError):
    """Some trials still failed after their retries.

    Attributes:
        errors: the failed trials' keys and each one's last error, one line.
    """

    def __init__(self, errors: dict[str, str], records: Path):
        self.errors = errors
        listed = "; ".join(f"{key}: {error}" for key, error in errors.items())
        super().__init__(f"{len(errors)} trial(s) failed after their retries ({listed}); Ray's "
                         f"logs are in {records}; the same command continues them")


def require_ray() -> None:
    """Raise :class:`RayMissing` unless Ray Tune can be imported."""
    try:
        import ray.tune  # noqa: F401
    except ImportError as missing:
        raise RayMissing() from missing


def _trainable(config: dict[str, Any], trials: dict[str, Trial]) -> None:
    """One Tune trial: train (or continue) the run named by ``config["key"]``."""
    from ray import tune

    from lhc.logs import show
    from lhc.training.sweeps import run_trial

    show()  # the runner's progress lines in the worker's log, which Ray relays to the driver
    metrics = run_trial(trials[config["key"]])
    tune.report({"status": metrics["status"]})


def run_on_ray(trials: list[Trial], sweep_folder: Path, *, address: str | None = None,
               cpus_per_trial: float = 1, gpus_per_trial: float = 0, max_failures: int = 2,
               num_cpus: int | None = None, verbose: int = 1) -> None:
    """Run ``trials`` as Ray Tune trials and return once each has finished.

    Args:
        trials: what to run (:class:`lhc.training.sweeps.Trial`); an empty list returns.
        sweep_folder: the sweep's folder; Tune's records go to its ``ray/`` subfolder.
        address: an existing cluster's address (``ray://host:10001``, ``host:6379``,
            ``auto``); None starts a local Ray instance for the sweep and stops it after.
        cpus_per_trial, gpus_per_trial: each trial's resources; Ray runs as many trials at
            once as the cluster has room for.
        max_failures: how often one trial is retried after it dies.
        num_cpus: CPUs of the local instance (None: all of this machine's); not with
            ``address``.
        verbose: 0 quiet, 1 Tune's status lines, 2 also each trial's results.

    Raises:
        RayMissing: Ray Tune is not installed (the message says how to install it).
        ValueError: bad resources, or ``num_cpus`` with ``address``.
        TrialsFailed: some trials failed ``max_failures + 1`` times.
    """
    if not trials:
        return
    if cpus_per_trial <= 0 or gpus_per_trial < 0 or max_failures < 0:
        raise ValueError(f"cpus_per_trial must be > 0, gpus_per_trial and max_failures >= 0 "
                         f"(got {cpus_per_trial}, {gpus_per_trial}, {max_failures})")
    if address is not None and num_cpus is not None:
        raise ValueError("num_cpus sizes a local Ray instance; an existing cluster "
                         f"({address}) has its own")
    require_ray()
    import ray
    from ray import tune

    runtime_env = {"env_vars": {name: os.environ[name] for name in FORWARDED_VARIABLES
                                if name in os.environ}}
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=num_cpus, runtime_env=runtime_env,
                 include_dashboard=False, logging_level="WARNING",
                 log_to_driver=True)
    records = sweep_folder / "ray"
    try:
        by_key = {trial.key: trial for trial in trials}
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_trainable, trials=by_key),
                                {"cpu": cpus_per_trial, "gpu": gpus_per_trial}),
            param_space={"key": tune.grid_search(list(by_key))},
            tune_config=tune.TuneConfig(trial_name_creator=_trial_name,
                                        trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name=f"{'base' if list(by_key) == ['base'] else 'arms'}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(records), verbose=verbose,
                failure_config=tune.FailureConfig(max_failures=max_failures)))
        results = tuner.fit()
        errors = {}
        for result in results:
            if result.error is not None:
                last_line = str(result.error).strip().splitlines() or [type(result.error).__name__]
                errors[result.config["key"]] = last_line[-1]
        if errors:
            raise TrialsFailed(errors, records)
    finally:
        if started_here:
            ray.shutdown()


def _trial_name(trial) -> str:
    return trial.config["key"]
