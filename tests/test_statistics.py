"""Seed-sweep statistics (lhc.statistics) against hand-derived values.

Every expected number here is worked out by hand in the comments (or by an independent
enumeration / scipy), never taken from the module's own output.
"""

import itertools
import math

import numpy as np
import pytest

from lhc import statistics as st

# --- one arm ----------------------------------------------------------------------------------


def test_mean_and_sample_std_by_hand():
    # [0.70, 0.72, 0.74]: mean 0.72; deviations -0.02, 0, 0.02; sum of squares 0.0008;
    # / (n - 1) = 0.0004; std 0.02; standard error 0.02 / sqrt(3).
    summary = st.arm_summary([0.70, 0.72, 0.74])
    assert summary["n"] == 3
    assert summary["mean"] == pytest.approx(0.72, abs=1e-15)
    assert summary["std"] == pytest.approx(0.02, rel=1e-12)
    assert summary["standard_error"] == pytest.approx(0.02 / math.sqrt(3), rel=1e-12)
    # [2, 4, 4, 4, 5, 5, 7, 9]: mean 40/8 = 5; squared deviations 9+1+1+1+0+0+4+16 = 32;
    # sample variance 32/7.
    summary = st.arm_summary([2, 4, 4, 4, 5, 5, 7, 9])
    assert summary["mean"] == 5
    assert summary["std"] == pytest.approx(math.sqrt(32 / 7), rel=1e-12)
    assert (summary["best"], summary["worst"]) == (9, 2)


def test_single_run_has_no_spread_and_no_interval():
    summary = st.arm_summary({3: 0.7281})
    assert summary["n"] == 1 and summary["mean"] == 0.7281
    assert summary["std"] is None and summary["standard_error"] is None
    assert summary["mean_interval"] is None
    assert summary["top40"] == summary["top25"] == summary["best"] == 0.7281
    assert summary["top40_without_best"] is None and summary["top25_without_best"] is None
    assert summary["best_seed"] == 3


# Ten runs, seeds 1..10. Ranked best first:
#   0.733 (seed 7), 0.730 (3), 0.726 (5), 0.724 (9), 0.721 (1), 0.719 (6), 0.717 (10),
#   0.715 (2), 0.712 (8), 0.708 (4).
TEN_RUNS = {1: 0.721, 2: 0.715, 3: 0.730, 4: 0.708, 5: 0.726, 6: 0.719, 7: 0.733, 8: 0.712,
            9: 0.724, 10: 0.717}


def test_top_shares_and_best_on_ten_runs():
    summary = st.arm_summary(TEN_RUNS)
    # Top 40%: ceil(0.4 x 10) = 4 runs: (0.733 + 0.730 + 0.726 + 0.724) / 4 = 2.913 / 4.
    assert summary["top40_runs"] == 4
    assert summary["top40"] == pytest.approx(0.72825, abs=1e-12)
    # w/o best: (0.730 + 0.726 + 0.724) / 3 = 2.180 / 3.
    assert summary["top40_without_best"] == pytest.approx(2.180 / 3, abs=1e-12)
    # Top 25%: ceil(0.25 x 10) = ceil(2.5) = 3 runs: (0.733 + 0.730 + 0.726) / 3 = 2.189 / 3.
    assert summary["top25_runs"] == 3
    assert summary["top25"] == pytest.approx(2.189 / 3, abs=1e-12)
    # w/o best: (0.730 + 0.726) / 2.
    assert summary["top25_without_best"] == pytest.approx(0.728, abs=1e-12)
    assert summary["best"] == 0.733 and summary["best_seed"] == 7
    # The same values as a sequence with seeds= give the same summary.
    as_sequence = st.arm_summary(list(TEN_RUNS.values()), seeds=list(TEN_RUNS))
    assert as_sequence["best_seed"] == 7 and as_sequence["top25"] == summary["top25"]


@pytest.mark.parametrize(("n_runs", "top40", "top25"), [
    (1, 1, 1), (2, 1, 1),  # 0.8 -> 1, 0.5 -> 1
    (3, 2, 1),  # 1.2 -> 2, 0.75 -> 1
    (5, 2, 2),  # 2.0 exactly stays 2; 1.25 -> 2
    (7, 3, 2),  # LHC-NetC row: 3 and 2 runs
    (8, 4, 2),  # ResNet34v2 row: 4 and 2 runs (2.0 exactly)
    (12, 5, 3),  # LHC-Net row: 5 and 3 runs (3.0 exactly)
    (20, 8, 5),
])
def test_top_share_run_count_rounds_up(n_runs, top40, top25):
    assert st.top_share_run_count(n_runs, 40) == top40
    assert st.top_share_run_count(n_runs, 25) == top25


def test_paper_resnet_row_is_reproduced_by_eight_runs():
    # Eight runs whose best four are 72.81, 72.69, 72.65, 72.61 (w/o best mean 72.65) give the
    # paper's ResNet34v2 row: Top 40% (72.81 + 3 x 72.65) / 4 = 72.69, Top 25% over 2 runs
    # (72.81 + 72.69) / 2 = 72.75, Top 25% w/o best 72.69, Best 72.81.
    runs = [0.7281, 0.7269, 0.7265, 0.7261, 0.7250, 0.7240, 0.7230, 0.7220]
    summary = st.arm_summary(runs)
    assert round(100 * summary["top40"], 2) == 72.69
    assert round(100 * summary["top40_without_best"], 2) == 72.65
    assert round(100 * summary["top25"], 2) == 72.75
    assert round(100 * summary["top25_without_best"], 2) == 72.69
    assert round(100 * summary["best"], 2) == 72.81


def test_bootstrap_interval_of_a_constant_is_the_constant():
    assert st.arm_summary([0.7] * 6)["mean_interval"] == (0.7, 0.7)
    differences = st.paired_comparison([0.73] * 5, [0.72] * 5)
    low, high = differences["interval"]
    assert low == pytest.approx(0.01, abs=1e-12) and high == pytest.approx(0.01, abs=1e-12)


def test_bootstrap_is_reproducible_and_seeded():
    values = list(TEN_RUNS.values())
    first = st.arm_summary(values, seed=3)["mean_interval"]
    assert st.arm_summary(values, seed=3)["mean_interval"] == first
    assert st.arm_summary(values, seed=4)["mean_interval"] != first
    low, high = first
    # The interval lies around the mean (0.7205) and within [min, max].
    assert 0.708 <= low < 0.7205 < high <= 0.733


def test_bootstrap_coverage_of_normal_samples():
    # 200 samples of n = 20 from N(0.72, 0.005^2); a 95% percentile interval of the mean should
    # contain 0.72 in about 93% of them: the percentile bootstrap behaves like
    # mean +- 1.96 s sqrt((n-1)/n) / sqrt(n), and P(|t_19| < 1.96 sqrt(19/20) = 1.910) = 0.929.
    # The binomial standard error of a coverage of 0.93 over 200 repetitions is
    # sqrt(0.93 x 0.07 / 200) = 0.018; the bounds below are more than 3 standard errors away.
    rng = np.random.default_rng(2026)
    covered = 0
    for repetition in range(200):
        sample = rng.normal(0.72, 0.005, size=20)
        low, high = st.arm_summary(sample, resamples=2000, seed=repetition)["mean_interval"]
        covered += low <= 0.72 <= high
    assert 0.87 <= covered / 200 <= 0.99


def test_bootstrap_agrees_with_scipy_percentile_bootstrap():
    stats = pytest.importorskip("scipy.stats")
    values = np.array(list(TEN_RUNS.values()))
    ours = st.arm_summary(values, resamples=20_000)["mean_interval"]
    theirs = stats.bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=20_000,
                             method="percentile", random_state=1).confidence_interval
    # Different random draws: the endpoints' Monte Carlo error is a few 1e-5 here (the
    # standard error of the mean is 0.0024); allow 3e-4.
    assert ours[0] == pytest.approx(theirs.low, abs=3e-4)
    assert ours[1] == pytest.approx(theirs.high, abs=3e-4)


# --- paired comparison --------------------------------------------------------------------------


def test_exact_sign_flip_three_differences():
    # d = (1, 2, 4), observed sum 7. The 8 sign patterns give sums
    #   +++ 7, ++- -1, +-+ 3, +-- -5, -++ 5, -+- -3, --+ 1, --- -7;
    # |sum| >= 7 for 2 of them: p = 2/8.
    result = st.paired_comparison({1: 1.0, 2: 2.0, 3: 4.0}, {1: 0.0, 2: 0.0, 3: 0.0})
    assert result["p_value_method"] == "exact" and result["sign_patterns"] == 8
    assert result["p_value"] == 2 / 8
    assert result["mean_difference"] == pytest.approx(7 / 3)
    assert (result["wins"], result["losses"], result["ties"]) == (3, 0, 0)


def test_exact_sign_flip_four_differences_in_accuracies():
    # Accuracies with differences d = (+0.03, +0.01, +0.02, -0.01) (in floating point, so
    # ties need the tolerance). In units of 0.01, d = (3, 1, 2, -1), observed sum 5.
    # Sums of the first three with signs: 6, 2, 4, 0, 0, -4, -2, -6; each with the fourth
    # term +-1:  7,5 | 3,1 | 5,3 | 1,-1 | 1,-1 | -3,-5 | -1,-3 | -5,-7.
    # |sum| >= 5: 7, 5, 5, -5, -5, -7: 6 of 16, p = 6/16 = 0.375.
    arm = {11: 0.75, 12: 0.71, 13: 0.74, 14: 0.70}
    baseline = {11: 0.72, 12: 0.70, 13: 0.72, 14: 0.71}
    result = st.paired_comparison(arm, baseline)
    assert result["p_value"] == 6 / 16
    assert result["seeds"] == [11, 12, 13, 14]
    assert result["mean_difference"] == pytest.approx(0.0125, abs=1e-12)  # 0.05 / 4
    # std of (3, 1, 2, -1) x 0.01: mean 1.25; squares 3.0625+0.0625+0.5625+5.0625 = 8.75;
    # / 3 -> sqrt(8.75 / 3) x 0.01.
    assert result["std_of_differences"] == pytest.approx(0.01 * math.sqrt(8.75 / 3), rel=1e-9)
    assert (result["wins"], result["losses"], result["ties"]) == (3, 1, 0)
    assert result["smallest_attainable_p_value"] == 2 / 16


def test_exact_sign_flip_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    arm, baseline = rng.normal(0.725, 0.004, 8), rng.normal(0.722, 0.004, 8)
    ours = st.paired_comparison(list(arm), list(baseline))["p_value"]
    theirs = stats.permutation_test(
        (arm, baseline), lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples", n_resamples=np.inf, alternative="two-sided",
        vectorized=True).pvalue
    assert ours == pytest.approx(theirs, abs=1e-12)


def _enumerated_p_value(differences):
    # Independent of the module: every sign pattern, with itertools.
    observed = abs(sum(differences))
    hits = sum(abs(sum(s * d for s, d in zip(signs, differences, strict=True))) >= observed - 1e-12
               for signs in itertools.product((1, -1), repeat=len(differences)))
    return hits / 2 ** len(differences)


def test_monte_carlo_p_value_approximates_the_exact_one():
    differences = [0.004, -0.002, 0.003, 0.001, 0.005, -0.003, 0.002, 0.0045, -0.001, 0.0015]
    exact = _enumerated_p_value(differences)  # 1024 patterns
    assert 0.05 < exact < 0.5  # a p-value in the middle, where the Monte Carlo error is largest
    baseline = [0.0] * 10
    assert st.paired_comparison(differences, baseline)["p_value"] == exact
    resamples = 20_000
    monte_carlo = st.paired_comparison(differences, baseline, exact_limit=9,
                                       resamples=resamples, seed=7)
    assert monte_carlo["p_value_method"] == "monte carlo"
    assert monte_carlo["sign_patterns"] == resamples
    # Binomial standard error of the estimate: sqrt(p (1 - p) / R) <= 0.5 / sqrt(20000) =
    # 0.0035; the +1 correction moves it by at most 1 / R = 5e-5. Allow 4 standard errors.
    tolerance = 4 * math.sqrt(exact * (1 - exact) / resamples) + 1 / resamples
    assert monte_carlo["p_value"] == pytest.approx(exact, abs=tolerance)


def test_monte_carlo_p_value_is_never_zero():
    # Twenty seeds all favouring the arm: only 2 of 2^20 patterns reach the observed sum
    # (exact p = 2 / 2^20 = 1.9e-6), so 1000 random patterns almost surely hit none and the
    # +1 correction gives p = (0 + 1) / (1000 + 1).
    differences = [0.001 * (k + 1) for k in range(20)]
    result = st.paired_comparison(differences, [0.0] * 20, resamples=1000)
    assert result["p_value_method"] == "monte carlo"
    assert result["p_value"] == 1 / 1001
    assert result["smallest_attainable_p_value"] == 1 / 1001


def test_smallest_exact_p_value():
    # 2 / 2^k: 5 seeds 2/32 = 0.0625 (never below 0.05), 6 seeds 2/64 = 0.03125.
    assert st.smallest_exact_p_value(1) == 1.0
    assert st.smallest_exact_p_value(5) == 0.0625
    assert st.smallest_exact_p_value(6) == 0.03125
    # All six seeds in favour of the arm reach it.
    result = st.paired_comparison([0.73, 0.74, 0.75, 0.73, 0.725, 0.74], [0.72] * 6)
    assert result["p_value"] == 2 / 64


def test_ties_do_not_count_as_evidence():
    # d = (0.01, 0, 0.03): the zero flips to itself, so every pattern appears twice; the
    # sums of the other two, +-1 +-3 (x 0.01): 4, -2, 2, -4: |sum| >= 4 for 2 of 4, p = 1/2.
    result = st.paired_comparison({1: 0.73, 2: 0.72, 3: 0.74}, {1: 0.72, 2: 0.72, 3: 0.71})
    assert result["p_value"] == 0.5
    assert result["ties"] == 1
    assert result["smallest_attainable_p_value"] == 0.5  # 2 / 2^2
    # All differences zero: p = 1.
    assert st.paired_comparison([0.7, 0.71], [0.7, 0.71])["p_value"] == 1.0


def test_mismatched_seeds_are_refused():
    with pytest.raises(ValueError, match=r"only in arm: \[3\], only in baseline: \[4, 5\]"):
        st.paired_comparison({1: 0.72, 2: 0.73, 3: 0.71}, {1: 0.72, 2: 0.72, 4: 0.7, 5: 0.7})
    with pytest.raises(ValueError, match="3 against 2 values"):
        st.paired_comparison([0.72, 0.73, 0.71], [0.72, 0.72])
    with pytest.raises(ValueError, match="both as mappings"):
        st.paired_comparison({1: 0.72}, [0.72])


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one value"):
        st.arm_summary([])
    with pytest.raises(ValueError, match="finite"):
        st.arm_summary([0.7, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        st.arm_summary([0.7, 0.71], confidence=95)
    with pytest.raises(ValueError, match="2 values but 3 seeds"):
        st.arm_summary([0.7, 0.71], seeds=[1, 2, 3])


# --- planning ---------------------------------------------------------------------------------


def test_minimum_detectable_difference_by_hand():
    # (z_0.975 + z_0.8) sd / sqrt(n) = (1.959964 + 0.841621) x 0.5 / sqrt(10).
    expected = (1.959964 + 0.841621) * 0.5 / math.sqrt(10)
    assert st.minimum_detectable_difference(0.5, 10) == pytest.approx(expected, rel=1e-6)
    # alpha 0.10, power 0.9: z_0.95 = 1.644854, z_0.9 = 1.281552; sd 0.004, 25 seeds.
    expected = (1.644854 + 1.281552) * 0.004 / 5
    assert st.minimum_detectable_difference(0.004, 25, alpha=0.10, power=0.9) == \
        pytest.approx(expected, rel=1e-6)
    assert st.minimum_detectable_difference(0.0, 4) == 0.0


def test_power_of_paired_design():
    # At the minimum detectable difference the power is 0.8 plus the far tail
    # Phi(-(1.959964 + 0.841621) - 1.959964) = Phi(-4.761549) = 9.6e-7.
    difference = (1.959964 + 0.841621) * 0.5 / math.sqrt(10)
    assert st.power_of_paired_design(difference, 0.5, 10) == pytest.approx(0.8 + 9.6e-7,
                                                                           abs=1e-7)
    # No difference: the test rejects with probability alpha (2 x Phi(-1.959964) = 0.05).
    assert st.power_of_paired_design(0.0, 0.5, 10) == pytest.approx(0.05, abs=1e-6)
    assert st.power_of_paired_design(0.003, 0.0, 10) == 1.0


# --- sweep table ------------------------------------------------------------------------------


def test_sweep_table_rows():
    a = {1: 0.720, 2: 0.716, 3: 0.724, 4: 0.718, 5: 0.722, 6: 0.714}
    b = {seed: value + 0.004 for seed, value in a.items()}  # +0.4 points on every seed
    rows = st.sweep_table({"B": b, "A": a}, parameter_counts={"A": 27_600_000, "B": 32_400_000},
                          attention_share={"B": 0.148})
    assert [row["arm"] for row in rows] == ["A", "B"]  # baseline first
    baseline_row, lhc_row = rows
    assert baseline_row["comparison"] is None
    # Mean of A: (0.720 + 0.716 + 0.724 + 0.718 + 0.722 + 0.714) / 6 = 4.314 / 6 = 0.719.
    assert baseline_row["summary"]["mean"] == pytest.approx(0.719, abs=1e-12)
    assert lhc_row["summary"]["mean"] == pytest.approx(0.723, abs=1e-12)
    comparison = lhc_row["comparison"]
    assert comparison["mean_difference"] == pytest.approx(0.004, abs=1e-12)
    # The same sign on all six seeds: p = 2 / 2^6.
    assert comparison["p_value"] == 2 / 64
    assert comparison["interval"] == pytest.approx((0.004, 0.004), abs=1e-12)
    assert lhc_row["parameters"] == 32_400_000 and lhc_row["attention_share"] == 0.148
    assert baseline_row["attention_share"] is None


def test_sweep_table_seed_mismatch():
    a = {1: 0.72, 2: 0.71, 3: 0.73}
    b = {1: 0.725, 2: 0.715}  # seed 3's run was not kept
    with pytest.raises(ValueError, match=r"only in baseline: \[3\]"):
        st.sweep_table({"A": a, "B": b})
    rows = st.sweep_table({"A": a, "B": b}, paired_on_common_seeds=True)
    assert rows[1]["seeds_left_out"] == [3]
    assert rows[1]["comparison"]["n"] == 2 and rows[1]["comparison"]["seeds"] == [1, 2]
    assert rows[0]["summary"]["n"] == 3  # the summary keeps all of the arm's runs
    with pytest.raises(ValueError, match="baseline 'A'"):
        st.sweep_table({"B": b})
    with pytest.raises(ValueError, match="percentages"):
        st.sweep_table({"A": {1: 72.0}})


def test_accuracies_from_runs():
    runs = [{"arm": "A", "seed": 2, "test_accuracy": 0.71, "kept": True},
            {"arm": "A", "seed": 1, "test_accuracy": 0.72, "kept": True},
            {"arm": "B", "seed": 1, "test_accuracy": 0.73, "kept": True},
            {"arm": "B", "seed": 2, "test_accuracy": 0.40, "kept": False},
            {"arm": "B", "seed": 3, "test_accuracy": None, "kept": False}]
    assert st.accuracies_from_runs(runs) == {"A": {1: 0.72, 2: 0.71}, "B": {1: 0.73}}
    assert st.accuracies_from_runs(runs, kept_only=False)["B"] == {1: 0.73, 2: 0.40}


def test_format_table_exact_string():
    # Rows written by hand (the keys format_table reads), so the expected string does not
    # depend on any resampling.
    rows = [
        {"arm": "A", "parameters": 27_600_000, "attention_share": None, "comparison": None,
         "summary": {"n": 8, "confidence": 0.95, "mean": 0.72531, "mean_interval": (0.7221, 0.7284),
                     "std": 0.00312, "top40": 0.7269, "top25": 0.7276, "best": 0.7281}},
        {"arm": "B", "parameters": 32_400_000, "attention_share": 0.148,
         "summary": {"n": 8, "confidence": 0.95, "mean": 0.72744, "mean_interval": (0.7238, 0.7311),
                     "std": 0.00407, "top40": 0.7289, "top25": 0.7302, "best": 0.7339},
         "comparison": {"mean_difference": 0.00213, "interval": (-0.00051, 0.00472),
                        "p_value": 0.1484375, "p_value_method": "exact"}},
    ]
    expected = "\n".join([
        "| Arm | Seeds | Mean [95% CI] | SD | Top 40% | Top 25% | Best | Diff. vs A [95% CI] "
        "| p | Params | Att. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        "| A | 8 | 72.53 [72.21, 72.84] | 0.31 | 72.69 | 72.76 | 72.81 | - | - | 27.6M | - |",
        "| B | 8 | 72.74 [72.38, 73.11] | 0.41 | 72.89 | 73.02 | 73.39 | +0.21 [-0.05, +0.47] "
        "| 0.148 (exact) | 32.4M | 14.8% |",
    ])
    assert st.format_table(rows) == expected
    # One decimal, without the parameter columns, a Monte Carlo p and a one-run arm.
    rows[0].update(parameters=None)
    rows[1].update(parameters=None, attention_share=None)
    rows[1]["summary"].update(n=1, mean_interval=None, std=None)
    rows[1]["comparison"].update(interval=None, p_value=0.00042, p_value_method="monte carlo")
    expected = "\n".join([
        "| Arm | Seeds | Mean [95% CI] | SD | Top 40% | Top 25% | Best | Diff. vs A [95% CI] "
        "| p |",
        "|---|---|---|---|---|---|---|---|---|",
        "| A | 8 | 72.5 [72.2, 72.8] | 0.3 | 72.7 | 72.8 | 72.8 | - | - |",
        "| B | 1 | 72.7 | - | 72.9 | 73.0 | 73.4 | +0.2 | 4.2e-04 (MC) |",
    ])
    assert st.format_table(rows, decimals=1) == expected
