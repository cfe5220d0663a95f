"""Seed-sweep statistics: does stage 4 with LHC add accuracy, beyond seed-to-seed noise?

The paper's evidence (section 3, "Experiments", subsection "Stage 4 (LHC training)", and the
first table of section "Results") is a set of stage-4 runs from one trained backbone: set A
(stage 4 without LHC, the data generator seed varied) against the union of sets B and C
(with LHC), summarised per model as Top 40%, Top 40% w/o best, Top 25%, Top 25% w/o best and
Best. The differences it reports are a few tenths of a point (e.g. Top 40% 72.69% against
72.89%), while one standard error of one accuracy on the 3,589 PrivateTest images is
``sqrt(0.73 x 0.27 / 3589) = 0.74`` points. One run per arm therefore cannot separate such an
effect from noise; this module gives the numbers that can, from several seeds per arm:

- :func:`arm_summary`: one arm's runs: n, mean, sample standard deviation, a percentile
  bootstrap interval of the mean, the paper's Top 40% / Top 25% (with and without the best
  run) and Best.
- :func:`paired_comparison`: an arm against a baseline on the same seeds: the mean of the
  per-seed differences, its bootstrap interval, and a two-sided paired permutation
  (sign-flip) test.
- :func:`minimum_detectable_difference` and :func:`power_of_paired_design`: what a paired
  design with ``n`` seeds can detect, for planning a sweep; :func:`smallest_exact_p_value`:
  the floor of the exact sign-flip p-value with ``n`` seeds.
- :func:`accuracies_from_runs`, :func:`sweep_table` and :func:`format_table`: from a sweep's
  runs (:func:`lhc.evaluation.read_sweep_runs`) to the rows and a Markdown table.

Definitions used throughout:

- ``Top k%`` of ``N`` runs is the mean of the best ``ceil(k N / 100)`` runs; ``Top k% w/o
  best`` is the mean of the same runs but the best one (None when that leaves none). The
  paper gives neither N nor the rounding; its numbers fix how many runs each mean is over
  (ResNet34v2 row: 4 and 2, since (72.81 + 3 x 72.65) / 4 = 72.69 and (72.81 + 72.69) / 2 =
  72.75; LHC-Net row: 5 and 3; LHC-NetC row: 3 and 2), and rounding up fits each row for
  some N (8; 11 or 12; 6 or 7). Rounding up is the rule of
  :func:`lhc.evaluation.top_share_mean` too, and keeps every share defined for N >= 1
  (at least one run).
- Accuracies are fractions in [0, 1]; :func:`format_table` prints percent points.
- ``seed`` arguments seed the resampling (a :class:`numpy.random.Generator`), so a result is
  reproducible; they are not training seeds. The training seeds are the keys of the
  mappings ("seeds" in the names).

The paper's set B varied the LHC settings at one fixed seed, so its A against B u C
comparison is not paired by seed; a sweep here (:mod:`lhc.training.sweeps`) runs every arm on
the same seeds, which is what :func:`paired_comparison` needs and what removes the
seed-to-seed variation the two arms share.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = [
    "TOP_SHARES",
    "accuracies_from_runs",
    "arm_summary",
    "format_table",
    "minimum_detectable_difference",
    "paired_comparison",
    "power_of_paired_design",
    "smallest_exact_p_value",
    "sweep_table",
    "top_share_run_count",
]

# The paper's shares, in percent, in its table's order (each with and without the best run).
TOP_SHARES = (40, 25)

# Resampled rows drawn per block, so that memory stays bounded for large n or many resamples;
# fixed, so that results do not depend on anything but the arguments.
_BLOCK_ELEMENTS = 1 << 20


# --- input checks ---------------------------------------------------------------------------

def _as_values(values: Iterable[float], name: str) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: expected at least one value, got {array.size}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: expected finite values, got {array.tolist()}")
    return array


def _check_resampling(confidence: float, resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a level in (0, 1), got {confidence!r}")
    if not isinstance(resamples, numbers.Integral) or resamples < 1:
        raise ValueError(f"resamples: expected a positive integer, got {resamples!r}")


def _sample_std(values: np.ndarray) -> float | None:
    return float(np.std(values, ddof=1)) if values.size > 1 else None


def _mean_within_range(values: np.ndarray) -> float:
    # A mean lies within [min, max]; clipping removes rounding that would step outside
    # (the mean of n copies of c is then exactly c).
    return float(np.clip(np.mean(values), values.min(), values.max()))


def _bootstrap_mean_interval(values: np.ndarray, confidence: float, resamples: int,
                             rng: np.random.Generator) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean (see :func:`arm_summary`); None for n = 1."""
    n = values.size
    if n == 1:
        return None
    rows_per_block = max(1, _BLOCK_ELEMENTS // n)
    means = np.empty(resamples)
    for start in range(0, resamples, rows_per_block):
        stop = min(resamples, start + rows_per_block)
        indices = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[indices].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    # Every resampled mean lies within [min, max]: clip away rounding (constant input gives
    # exactly [c, c]).
    low, high = np.clip([low, high], values.min(), values.max())
    return float(low), float(high)


# --- one arm --------------------------------------------------------------------------------

def top_share_run_count(n_runs: int, percent: float) -> int:
    """How many of ``n_runs`` runs the paper's "Top ``percent``%" is the mean of.

    ``ceil(percent x n_runs / 100)``, at least 1 for ``n_runs >= 1`` (module docstring):
    e.g. 10 runs give 4 for Top 40% and 3 (2.5 rounded up) for Top 25%; 8 runs give 4 and 2.
    The product is rounded to 12 decimals first, so that binary floating point cannot push an
    exact integer such as 40 x 5 / 100 = 2 above itself.

    Args:
        n_runs: runs of the arm (>= 0).
        percent: the share, in (0, 100].

    Returns:
        The count, between 0 (no runs) and ``n_runs``.
    """
    if not 0 < percent <= 100:
        raise ValueError(f"percent: expected a share in (0, 100], got {percent!r}")
    if not isinstance(n_runs, numbers.Integral) or n_runs < 0:
        raise ValueError(f"n_runs: expected a non-negative integer, got {n_runs!r}")
    return min(int(n_runs), math.ceil(round(percent * n_runs / 100, 12)))


def _as_seeded_values(values, seeds, name: str) -> tuple[list, np.ndarray]:
    if isinstance(values, Mapping):
        if seeds is not None:
            raise ValueError(f"{name}: give seeds either as the mapping's keys or as seeds=, "
                             "not both")
        seeds, values = list(values.keys()), list(values.values())
    array = _as_values(values, name)
    if seeds is None:
        return [None] * array.size, array
    seeds = list(seeds)
    if len(seeds) != array.size:
        raise ValueError(f"{name}: {array.size} values but {len(seeds)} seeds")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{name}: repeated seeds {sorted({s for s in seeds if seeds.count(s) > 1})}")
    return seeds, array


def arm_summary(values: Sequence[float] | Mapping[Any, float], *, seeds: Sequence | None = None,
                confidence: float = 0.95, resamples: int = 10_000,
                seed: int = 0) -> dict[str, Any]:
    """The runs of one arm (one model, the training seed varied), summarised.

    With ``x_1 .. x_n`` the accuracies (one per training seed):

    - ``mean = (1/n) sum_i x_i``;
    - ``std = sqrt(sum_i (x_i - mean)^2 / (n - 1))``, the sample standard deviation: the
      seed-to-seed spread of one run (None for n = 1);
    - ``standard_error = std / sqrt(n)``: the spread of the mean itself;
    - ``mean_interval``: percentile bootstrap interval of the mean over seeds. Draw
      ``resamples`` samples of n seeds with replacement, take each sample's mean, and report
      the ``(1 - confidence)/2`` and ``(1 + confidence)/2`` quantiles of those means
      (:func:`numpy.quantile`, linear interpolation). It says where the arm's mean over many
      more seeds would plausibly lie; it ignores the variation of the test set itself (the
      same images for every run), and is too narrow for very few seeds (with n = 2 it spans
      only the two values). None for n = 1.
    - ``top40`` / ``top25``: the paper's Top 40% / Top 25% (section 3, "Results"): the mean of
      the best ``ceil(k n / 100)`` runs (:func:`top_share_run_count`); ``top40_runs`` /
      ``top25_runs`` say how many. ``top40_without_best`` / ``top25_without_best``: the
      same runs but the best one ("Top 40% w/o best"), None when that leaves none.
      These are order statistics of the upper tail: they grow with n even when nothing
      else changes, so compare them only between arms with the same n.
    - ``best`` (and ``best_seed`` when seeds are known): the paper's Best, the single best run.

    Args:
        values: accuracies, as a sequence or as a mapping training seed -> accuracy.
        seeds: training seeds of a sequence ``values``, in the same order (for ``best_seed``).
        confidence: level of the bootstrap interval.
        resamples: bootstrap samples.
        seed: seed of the resampling generator (:func:`numpy.random.default_rng`).

    Returns:
        Dict with ``n``, ``mean``, ``std``, ``standard_error``, ``confidence``,
        ``mean_interval`` (``(low, high)`` or None), ``top40``, ``top40_runs``,
        ``top40_without_best``, ``top25``, ``top25_runs``, ``top25_without_best``, ``best``,
        ``best_seed``, ``worst``; values in the unit of ``values``.

    Raises:
        ValueError: no values, non-finite values, seeds that do not match the values, or a
            confidence outside (0, 1).
    """
    _check_resampling(confidence, resamples)
    seed_list, array = _as_seeded_values(values, seeds, "values")
    n = array.size
    std = _sample_std(array)
    order = np.argsort(-array, kind="stable")  # best first; ties keep the given order
    ranked = array[order]
    summary: dict[str, Any] = {
        "n": n,
        "mean": _mean_within_range(array),
        "std": std,
        "standard_error": None if std is None else std / math.sqrt(n),
        "confidence": confidence,
        "mean_interval": _bootstrap_mean_interval(array, confidence, resamples,
                                                  np.random.default_rng(seed)),
    }
    for percent in TOP_SHARES:
        count = top_share_run_count(n, percent)
        summary[f"top{percent}"] = _mean_within_range(ranked[:count])
        summary[f"top{percent}_runs"] = count
        summary[f"top{percent}_without_best"] = (
            _mean_within_range(ranked[1:count]) if count > 1 else None)
    summary["best"] = float(ranked[0])
    summary["best_seed"] = seed_list[int(order[0])]
    summary["worst"] = float(ranked[-1])
    return summary


# --- an arm against the baseline ------------------------------------------------------------

def smallest_exact_p_value(n_seeds: int) -> float:
    """The smallest two-sided p-value the exact sign-flip test can give with ``n_seeds`` pairs.

    ``2 / 2^n``: of the ``2^n`` sign patterns, the observed one and its mirror image (all signs
    flipped) always reach the observed ``|sum of differences|``. So 5 seeds can never give
    p < 0.05 (2/32 = 0.0625); 6 seeds are the fewest that can (2/64 = 0.031), and then only
    if every seed favours the same arm; 7 seeds give 0.016, 10 seeds 0.002.

    Args:
        n_seeds: paired seeds (>= 1).
    """
    if not isinstance(n_seeds, numbers.Integral) or n_seeds < 1:
        raise ValueError(f"n_seeds: expected a positive integer, got {n_seeds!r}")
    return min(1.0, 2.0 / 2.0 ** int(n_seeds))


def _sort_seeds(seeds: Iterable) -> list:
    seeds = list(seeds)
    try:
        return sorted(seeds)
    except TypeError:  # seeds of mixed types: keep the given order
        return seeds


def _paired_values(arm, baseline) -> tuple[list, np.ndarray, np.ndarray]:
    if isinstance(arm, Mapping) != isinstance(baseline, Mapping):
        raise ValueError("arm and baseline: give both as mappings seed -> value or both as "
                         "sequences in the same seed order")
    if isinstance(arm, Mapping):
        only_arm = set(arm) - set(baseline)
        only_baseline = set(baseline) - set(arm)
        if only_arm or only_baseline:
            raise ValueError(
                "arm and baseline: a paired comparison needs the same seeds in both; seeds "
                f"only in arm: {_sort_seeds(only_arm)}, only in baseline: "
                f"{_sort_seeds(only_baseline)} (compare on the common seeds explicitly, e.g. "
                "sweep_table(..., paired_on_common_seeds=True))")
        seeds = _sort_seeds(arm)
        return (seeds, _as_values([arm[s] for s in seeds], "arm"),
                _as_values([baseline[s] for s in seeds], "baseline"))
    arm_values, baseline_values = _as_values(arm, "arm"), _as_values(baseline, "baseline")
    if arm_values.size != baseline_values.size:
        raise ValueError(f"arm and baseline: {arm_values.size} against {baseline_values.size} "
                         "values; a paired comparison needs one value per seed in each, in "
                         "the same seed order")
    return list(range(arm_values.size)), arm_values, baseline_values


def _sign_flip_count(differences: np.ndarray, signs_blocks: Iterable[np.ndarray]) -> int:
    """How many sign patterns reach at least the observed ``|sum_i d_i|``."""
    observed = abs(math.fsum(differences))
    # Sums of the same numbers in another order differ by rounding only: allow that, so that
    # patterns tied with the observed one (its mirror image, zero differences) are counted.
    tolerance = 1e-9 * math.fsum(np.abs(differences))
    count = 0
    for signs in signs_blocks:
        count += int(np.count_nonzero(np.abs(signs @ differences) >= observed - tolerance))
    return count


def _all_sign_patterns(n: int) -> Iterable[np.ndarray]:
    bits = np.arange(n)
    rows_per_block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, 2 ** n, rows_per_block):
        patterns = np.arange(start, min(2 ** n, start + rows_per_block))
        yield 1.0 - 2.0 * ((patterns[:, None] >> bits) & 1)


def _random_sign_patterns(n: int, resamples: int, rng: np.random.Generator) -> Iterable[np.ndarray]:
    rows_per_block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, resamples, rows_per_block):
        rows = min(resamples, start + rows_per_block) - start
        yield 1.0 - 2.0 * rng.integers(0, 2, size=(rows, n))


def paired_comparison(arm: Sequence[float] | Mapping[Any, float],
                      baseline: Sequence[float] | Mapping[Any, float], *,
                      confidence: float = 0.95, resamples: int = 10_000, seed: int = 0,
                      exact_limit: int = 16) -> dict[str, Any]:
    """An arm against the baseline, paired by training seed.

    With ``d_i = arm_i - baseline_i`` for the ``n`` seeds both arms ran:

    - ``mean_difference = (1/n) sum_i d_i``: how much the arm adds, on average over seeds;
      ``std_of_differences`` (ddof = 1; None for n = 1) is what
      :func:`minimum_detectable_difference` needs to plan the next sweep.
    - ``interval``: percentile bootstrap interval of the mean difference, resampling seeds
      (pairs ``(arm_i, baseline_i)`` stay together) ``resamples`` times; as in
      :func:`arm_summary`. None for n = 1.
    - ``p_value``: two-sided paired permutation (sign-flip) test of "the arm adds nothing":
      under that hypothesis each ``d_i`` is as likely to be ``-d_i``, so
      ``p = #{signs s in {-1, +1}^n : |sum_i s_i d_i| >= |sum_i d_i|} / 2^n``.
      For ``n <= exact_limit`` all ``2^n`` sign patterns are enumerated (``p_value_method``
      "exact"); otherwise ``resamples`` random patterns are drawn and
      ``p = (count + 1) / (resamples + 1)`` (``"monte carlo"``; the +1 counts the observed
      pattern, so that p is never 0 and the test keeps its level). The test assumes nothing
      about the shape of the differences' distribution, only its symmetry under the null.
      With ``n`` seeds the exact p-value cannot go below ``2 / 2^n``
      (:func:`smallest_exact_p_value`): at least 6 seeds are needed for p < 0.05
      (2/64 = 0.031; 5 seeds give 2/32 = 0.0625 at best). ``smallest_attainable_p_value``
      is that floor for these data: ``2 / 2^m`` with ``m`` the seeds whose difference is not
      zero (a tie flips to itself), or ``1 / (resamples + 1)`` for the Monte Carlo test.
    - ``wins`` / ``losses`` / ``ties``: seeds on which the arm beat, lost to or tied the baseline.

    Args:
        arm: accuracies of the arm: a mapping training seed -> accuracy, or a sequence.
        baseline: the baseline's, the same way (mappings must have the same seeds; sequences
            the same length, in the same seed order).
        confidence: level of the bootstrap interval.
        resamples: bootstrap samples, and random sign patterns for the Monte Carlo test.
        seed: seed of the resampling (bootstrap and Monte Carlo draw from independent streams
            of :class:`numpy.random.SeedSequence` ``(seed)``).
        exact_limit: the largest n enumerated exactly (``2^n`` patterns: 16 is 65,536).

    Returns:
        Dict with ``n``, ``seeds`` (sorted; positions 0.. for sequences), ``arm_mean``,
        ``baseline_mean``, ``mean_difference``, ``std_of_differences``, ``confidence``,
        ``interval``, ``p_value``, ``p_value_method``, ``sign_patterns`` (how many were
        evaluated), ``smallest_attainable_p_value``, ``wins``, ``losses``, ``ties``.

    Raises:
        ValueError: mappings with different seeds (naming the seeds in one only), sequences
            of different lengths, a mapping against a sequence, or invalid settings.
    """
    _check_resampling(confidence, resamples)
    if not isinstance(exact_limit, numbers.Integral) or exact_limit < 0:
        raise ValueError(f"exact_limit: expected a non-negative integer, got {exact_limit!r}")
    seeds, arm_values, baseline_values = _paired_values(arm, baseline)
    differences = arm_values - baseline_values
    n = differences.size
    bootstrap_stream, permutation_stream = np.random.SeedSequence(seed).spawn(2)
    if n <= exact_limit:
        method, patterns = "exact", 2 ** n
        p_value = _sign_flip_count(differences, _all_sign_patterns(n)) / patterns
        # Zero differences do not change under a sign flip: only the others count.
        nonzero = int(np.count_nonzero(differences))
        smallest = 1.0 if nonzero == 0 else smallest_exact_p_value(nonzero)
    else:
        method, patterns = "monte carlo", int(resamples)
        rng = np.random.default_rng(permutation_stream)
        count = _sign_flip_count(differences, _random_sign_patterns(n, patterns, rng))
        p_value = (count + 1) / (patterns + 1)
        smallest = 1 / (patterns + 1)
    return {
        "n": n,
        "seeds": seeds,
        "arm_mean": _mean_within_range(arm_values),
        "baseline_mean": _mean_within_range(baseline_values),
        "mean_difference": _mean_within_range(differences),
        "std_of_differences": _sample_std(differences),
        "confidence": confidence,
        "interval": _bootstrap_mean_interval(differences, confidence, resamples,
                                             np.random.default_rng(bootstrap_stream)),
        "p_value": min(1.0, p_value),
        "p_value_method": method,
        "sign_patterns": patterns,
        "smallest_attainable_p_value": smallest,
        "wins": int(np.count_nonzero(differences > 0)),
        "losses": int(np.count_nonzero(differences < 0)),
        "ties": int(np.count_nonzero(differences == 0)),
    }


# --- planning a sweep -----------------------------------------------------------------------

def _check_design(std_of_differences: float, n: int, alpha: float) -> None:
    if not math.isfinite(std_of_differences) or std_of_differences < 0:
        raise ValueError(f"std_of_differences: expected a finite value >= 0, "
                         f"got {std_of_differences!r}")
    if not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n: expected a positive number of seeds, got {n!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a level in (0, 1), got {alpha!r}")


def minimum_detectable_difference(std_of_differences: float, n: int, alpha: float = 0.05,
                                  power: float = 0.8) -> float:
    """The smallest true mean difference a paired design with ``n`` seeds detects reliably.

    ``(z_{1 - alpha/2} + z_{power}) x std_of_differences / sqrt(n)``, with ``z_q`` the
    standard normal quantile (:class:`statistics.NormalDist`): a two-sided test at level
    ``alpha`` rejects "no difference" with probability ``power`` when the true mean
    difference is this large (normal approximation; the far tail is neglected). At
    ``alpha = 0.05``, ``power = 0.8`` the factor is ``1.959964 + 0.841621 = 2.801585``: e.g.
    a seed-to-seed spread of the differences of 0.5 points with 10 seeds detects
    ``2.8016 x 0.5 / sqrt(10) = 0.44`` points.

    The normal approximation treats ``std_of_differences`` as known; with few seeds it is
    optimistic (Student's t with n - 1 degrees of freedom would widen it: t_{0.975} is 2.78
    at n = 5 against 1.96), and the exact sign-flip test of :func:`paired_comparison` cannot
    reach p < alpha at all below ``log2(2/alpha)`` seeds (6 for 0.05,
    :func:`smallest_exact_p_value`). Read it as a lower bound for small ``n``.

    Args:
        std_of_differences: the standard deviation of the per-seed differences (e.g.
            ``paired_comparison(...)["std_of_differences"]`` from a pilot sweep), in the
            unit of the result.
        n: paired seeds.
        alpha: two-sided significance level.
        power: probability of detecting the difference, in (0, 1).

    Returns:
        The difference, in the unit of ``std_of_differences``.
    """
    _check_design(std_of_differences, n, alpha)
    if not 0 < power < 1:
        raise ValueError(f"power: expected a probability in (0, 1), got {power!r}")
    normal = NormalDist()
    return (normal.inv_cdf(1 - alpha / 2) + normal.inv_cdf(power)) * std_of_differences \
        / math.sqrt(n)


def power_of_paired_design(difference: float, std_of_differences: float, n: int,
                           alpha: float = 0.05) -> float:
    """The probability that a paired design with ``n`` seeds detects a true ``difference``.

    Normal approximation of a two-sided test at level ``alpha``, with
    ``shift = |difference| sqrt(n) / std_of_differences``:
    ``power = Phi(shift - z_{1 - alpha/2}) + Phi(-shift - z_{1 - alpha/2})`` (``Phi`` the
    standard normal distribution function; the second term, rejecting in the wrong
    direction, is tiny unless the shift is). It inverts :func:`minimum_detectable_difference`
    up to that term, with the same caveats for small ``n``. A difference with zero spread
    is detected with certainty (1.0; ``alpha`` when the difference is 0 too).

    Args:
        difference: the true mean difference to detect (e.g. 0.003 for 0.3 points).
        std_of_differences: standard deviation of the per-seed differences, same unit.
        n: paired seeds.
        alpha: two-sided significance level.

    Returns:
        The power, in [alpha, 1].
    """
    _check_design(std_of_differences, n, alpha)
    if not math.isfinite(difference):
        raise ValueError(f"difference: expected a finite value, got {difference!r}")
    if std_of_differences == 0:
        return 1.0 if difference != 0 else alpha
    normal = NormalDist()
    critical = normal.inv_cdf(1 - alpha / 2)
    shift = abs(difference) * math.sqrt(n) / std_of_differences
    return normal.cdf(shift - critical) + normal.cdf(-shift - critical)


# --- the sweep table ------------------------------------------------------------------------

def accuracies_from_runs(runs: Iterable[Mapping], *, kept_only: bool = True) -> dict:
    """Arm -> {training seed: test accuracy} from sweep run records.

    Args:
        runs: records with ``arm``, ``seed``, ``test_accuracy`` and ``kept`` (as
            :func:`lhc.evaluation.read_sweep_runs` returns).
        kept_only: only the runs the acceptance rule kept (as the paper's tables); others
            are left out, and so are runs without a test accuracy.

    Returns:
        Arms in the order first seen, seeds sorted.

    Raises:
        ValueError: two records of one arm and seed.
    """
    results: dict[Any, dict] = {}
    for run in runs:
        if (kept_only and not run.get("kept")) or run.get("test_accuracy") is None:
            continue
        of_arm = results.setdefault(run["arm"], {})
        if run["seed"] in of_arm:
            raise ValueError(f"arm {run['arm']!r}, seed {run['seed']!r}: two runs")
        of_arm[run["seed"]] = float(run["test_accuracy"])
    return {arm: {s: of_arm[s] for s in _sort_seeds(of_arm)} for arm, of_arm in results.items()}


def sweep_table(results: Mapping[Any, Mapping[Any, float]], baseline: Any = "A", *,
                parameter_counts: Mapping[Any, int] | None = None,
                attention_share: Mapping[Any, float] | None = None,
                confidence: float = 0.95, resamples: int = 10_000, seed: int = 0,
                exact_limit: int = 16,
                paired_on_common_seeds: bool = False) -> list[dict[str, Any]]:
    """The rows of the seed-sweep summary: each arm, and each arm against the baseline.

    Args:
        results: arm -> {training seed: test accuracy in [0, 1]} (e.g.
            :func:`accuracies_from_runs`).
        baseline: the arm the others are compared with (the sweep's "A", stage 4 without
            LHC).
        parameter_counts: optional arm -> total parameters of the arm's model.
        attention_share: optional arm -> share of those parameters in the LHC modules, in
            [0, 1] (the paper's "Att" column).
        confidence, resamples, seed: as :func:`arm_summary` and :func:`paired_comparison`
            (the same ``seed`` for every arm, so a row does not depend on the others).
        exact_limit: as :func:`paired_comparison`.
        paired_on_common_seeds: compare each arm with the baseline on the seeds both have
            (e.g. when the acceptance rule dropped a run of one arm), listing the others in
            ``seeds_left_out``; by default mismatched seeds raise. Dropping a seed because one
            arm's run diverged favours that arm; say so when you use it.

    Returns:
        One dict per arm, the baseline first, then the others in ``results``' order:
        ``arm``, ``summary`` (:func:`arm_summary` of all its runs), ``comparison``
        (:func:`paired_comparison` of the arm against the baseline; None for the baseline),
        ``seeds_left_out`` (seeds of the arm or the baseline not in the comparison),
        ``parameters`` and ``attention_share`` (None when not given).

    Raises:
        ValueError: no baseline in ``results``, an accuracy outside [0, 1] (percentages?),
            or seeds that do not pair (unless ``paired_on_common_seeds``).
    """
    if baseline not in results:
        raise ValueError(f"baseline {baseline!r}: not among the arms {list(results)}")
    for arm, of_arm in results.items():
        for training_seed, accuracy in of_arm.items():
            if not 0 <= accuracy <= 1:
                raise ValueError(f"arm {arm!r}, seed {training_seed!r}: accuracy {accuracy!r} "
                                 "outside [0, 1] (give fractions, not percentages)")
    parameter_counts = parameter_counts or {}
    attention_share = attention_share or {}
    settings = {"confidence": confidence, "resamples": resamples, "seed": seed}
    baseline_values = dict(results[baseline])
    rows = []
    for arm in [baseline] + [arm for arm in results if arm != baseline]:
        values = dict(results[arm])
        comparison, left_out = None, []
        if arm != baseline:
            arm_paired, baseline_paired = values, baseline_values
            if paired_on_common_seeds:
                common = set(values) & set(baseline_values)
                left_out = _sort_seeds(set(values) ^ set(baseline_values))
                arm_paired = {s: values[s] for s in common}
                baseline_paired = {s: baseline_values[s] for s in common}
                if not common:
                    raise ValueError(f"arm {arm!r}: no seed in common with baseline "
                                     f"{baseline!r}")
            comparison = paired_comparison(arm_paired, baseline_paired,
                                           exact_limit=exact_limit, **settings)
        rows.append({"arm": arm, "summary": arm_summary(values, **settings),
                     "comparison": comparison, "seeds_left_out": left_out,
                     "parameters": parameter_counts.get(arm),
                     "attention_share": attention_share.get(arm)})
    return rows


def _points(value: float | None, decimals: int, signed: bool = False) -> str:
    if value is None:
        return "-"
    points = round(100 * value, decimals) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{points:+.{decimals}f}" if signed else f"{points:.{decimals}f}"


def _with_interval(value: float, interval: tuple[float, float] | None, decimals: int,
                   signed: bool = False) -> str:
    text = _points(value, decimals, signed)
    if interval is None:
        return text
    low, high = (_points(bound, decimals, signed) for bound in interval)
    return f"{text} [{low}, {high}]"


def _p_value_text(comparison: Mapping) -> str:
    p = comparison["p_value"]
    text = f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"
    return f"{text} ({'exact' if comparison['p_value_method'] == 'exact' else 'MC'})"


def format_table(rows: Sequence[Mapping[str, Any]], *, decimals: int = 2) -> str:
    """A Markdown table of :func:`sweep_table`'s rows, accuracies in percent points.

    Columns: ``Arm``; ``Seeds`` (n); ``Mean [CI]`` (mean with its bootstrap interval, written
    like ``72.69 [72.41, 72.95]``); ``SD`` (seed-to-seed standard deviation of one run);
    ``Top 40%``, ``Top 25%``, ``Best`` (the paper's columns, :func:`arm_summary`);
    ``Diff. vs <baseline> [CI]`` (mean paired difference with its bootstrap interval, signed:
    ``+0.20 [+0.05, +0.36]``) and ``p`` (two-sided sign-flip p-value, "(exact)" or "(MC)"),
    both "-" in the baseline's row; then ``Params`` (millions, "32.4M") and ``Att.`` (percent of
    the parameters in LHC modules) when any row has them. Undefined values print as "-".
    The interval's level is the rows' ``confidence``, named in the headers (e.g. "95% CI").

    Args:
        rows: as :func:`sweep_table` returns, the baseline's row first.
        decimals: decimals of the percent points.

    Returns:
        The table, lines joined by newlines (no trailing newline).
    """
    if not rows:
        raise ValueError("rows: expected at least the baseline's row")
    level = f"{100 * rows[0]['summary']['confidence']:g}% CI"
    baseline = rows[0]["arm"]
    extras = any(row.get("parameters") is not None or row.get("attention_share") is not None
                 for row in rows)
    headers = ["Arm", "Seeds", f"Mean [{level}]", "SD", "Top 40%", "Top 25%", "Best",
               f"Diff. vs {baseline} [{level}]", "p"]
    if extras:
        headers += ["Params", "Att."]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        summary, comparison = row["summary"], row.get("comparison")
        cells = [str(row["arm"]), str(summary["n"]),
                 _with_interval(summary["mean"], summary["mean_interval"], decimals),
                 _points(summary["std"], decimals), _points(summary["top40"], decimals),
                 _points(summary["top25"], decimals), _points(summary["best"], decimals)]
        if comparison is None:
            cells += ["-", "-"]
        else:
            cells += [_with_interval(comparison["mean_difference"], comparison["interval"],
                                     decimals, signed=True), _p_value_text(comparison)]
        if extras:
            parameters, share = row.get("parameters"), row.get("attention_share")
            cells += ["-" if parameters is None else f"{parameters / 1e6:.1f}M",
                      "-" if share is None else f"{100 * share:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
