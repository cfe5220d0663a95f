"""The efficiency measures of paper section 2.2 (eqs. 21-26) against hand-computed values."""

from fractions import Fraction

import matplotlib
import pytest

from lhc import efficiency

matplotlib.use("Agg")

PAPER_HW, PAPER_HEADS, PAPER_DIM = 3136, 8, 196  # LHC1/LHC2: 56x56 map, d = HW/(2n)


def _printed_g1(hw, d):
    # Eq. 21 as printed, HWd / (3(HW + d)2).
    return Fraction(hw * d) / (3 * (hw + d) * 2)


def _printed_l1(hw, d, n, a, b):
    # Eq. 23 as printed.
    band = Fraction(hw, n)
    return (a * band * d / (2 * (band + d)) + b * band * d / (3 * (band + d) * 2)) / (a + b)


def test_small_case_matches_hand_computation():
    # HW = 16, d = 4, n = 2: band 8; G1 = 64/120; one-activation term 32/24, two-activation
    # term 32/72.
    hw, d, n = 16, 4, 2
    assert efficiency.g1(hw, d) == Fraction(8, 15) == _printed_g1(hw, d)
    assert efficiency.g2() == Fraction(1, 6)
    assert efficiency.l1(hw, d, n, 1, 0) == Fraction(4, 3)
    assert efficiency.l1(hw, d, n, 0, 1) == efficiency.l1(hw, d, n, 0, 2) == Fraction(4, 9)
    assert efficiency.l1(hw, d, n, 1, 1) == Fraction(8, 9) == _printed_l1(hw, d, n, 1, 1)
    assert efficiency.l2(1, 1) == Fraction(1, 3)
    assert efficiency.l2(1, 0) == Fraction(1, 2)
    # L1 > G1 <=> A (4/3 - 8/15) > B (8/15 - 4/9) <=> 36 A > 4 B <=> A > B/9.
    assert efficiency.l1_exceeds_g1_threshold_at(hw, d, n) == Fraction(1, 9)
    assert efficiency.l1_exceeds_g1_threshold(n, Fraction(d * n, hw)) == Fraction(1, 9)


def test_l1_matches_printed_formula_on_paper_blocks():
    for a in range(PAPER_HEADS + 1):
        for b in range(1 if a == 0 else 0, PAPER_HEADS + 1 - a):
            assert efficiency.l1(PAPER_HW, PAPER_DIM, PAPER_HEADS, a, b) == _printed_l1(
                PAPER_HW, PAPER_DIM, PAPER_HEADS, a, b
            )


def test_paper_threshold_026():
    # The paper's line 5, (3A + B) > 144(A + B)/102, solved for A: A > (144/102 - 1)/(3 - 144/102) B.
    ratio = Fraction(144, 102)
    from_paper_line = (ratio - 1) / (3 - ratio)
    threshold = efficiency.l1_exceeds_g1_threshold(PAPER_HEADS)
    assert threshold == from_paper_line == Fraction(7, 27)
    assert round(float(threshold), 2) == 0.26
    assert efficiency.l1_exceeds_g1_threshold_at(PAPER_HW, PAPER_DIM, PAPER_HEADS) == threshold


@pytest.mark.parametrize("hw", [16, 48, 784, 3136, 50176])
def test_threshold_does_not_depend_on_hw(hw):
    threshold = efficiency.l1_exceeds_g1_threshold_at(hw, Fraction(hw, 2 * PAPER_HEADS), PAPER_HEADS)
    assert threshold == Fraction(7, 27)


def test_threshold_separates_l1_from_g1():
    for n, ratio in [(2, Fraction(1, 3)), (7, Fraction(1, 2)), (8, Fraction(2)), (16, Fraction(1))]:
        hw = 64 * n
        d = ratio * hw / n
        k = efficiency.l1_exceeds_g1_threshold(n, ratio)
        for a in range(n + 1):
            for b in range(1 if a == 0 else 0, n + 1 - a):
                assert (_printed_l1(hw, d, n, a, b) > _printed_g1(hw, d)) == (a > k * b)


def test_no_threshold_once_local_never_wins():
    # 2n + 3r - nr = 0 at n = 8, r = 16/5: no split gives L1 > G1.
    n, ratio = 8, Fraction(16, 5)
    hw = 80
    d = ratio * hw / n
    assert efficiency.l1_exceeds_g1_threshold(n, ratio) is None
    assert efficiency.l1_exceeds_g1_threshold_at(hw, d, n) is None
    assert not any(
        _printed_l1(hw, d, n, a, b) > _printed_g1(hw, d)
        for a in range(n + 1)
        for b in range(1 if a == 0 else 0, n + 1 - a)
    )


def test_global_favoured_combinations_at_n8():
    favoured = set(efficiency.global_favoured_sections(PAPER_HW, PAPER_DIM, PAPER_HEADS))
    assert {pair for pair in favoured if sum(pair) == PAPER_HEADS} == {(0, 8), (1, 7)}
    # By hand, 27 A < 7 B with A + B < 8: A = 0 with any B >= 1, A = 1 with B >= 4; A = 2
    # would need B >= 8.
    expected_partial = {(0, b) for b in range(1, 8)} | {(1, 4), (1, 5), (1, 6)}
    assert {pair for pair in favoured if sum(pair) < PAPER_HEADS} == expected_partial


def test_compare_sections_covers_every_split():
    rows = efficiency.compare_sections(PAPER_HW, PAPER_DIM, PAPER_HEADS)
    assert len(rows) == 9 * 10 // 2 - 1
    assert all(row.single_sections + row.double_sections + row.empty_sections == PAPER_HEADS
               for row in rows)
    assert not any(row.favoured == "tie" for row in rows)  # 27 A = 7 B has no solution here


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_l2_at_least_g2_equal_iff_no_single_sections(n):
    for a in range(n + 1):
        for b in range(1 if a == 0 else 0, n + 1 - a):
            value = efficiency.l2(a, b)
            assert value == (Fraction(a, 2) + Fraction(b, 6)) / (a + b)
            assert value >= efficiency.g2()
            assert (value == efficiency.g2()) == (a == 0)


def test_measures_ignore_empty_sections():
    values = {efficiency.l1(PAPER_HW, PAPER_DIM, PAPER_HEADS, 0, b) for b in range(1, 9)}
    assert values == {Fraction(392 * 196, 6 * (392 + 196))}
    assert efficiency.l1(PAPER_HW, PAPER_DIM, PAPER_HEADS, 1, 3) == efficiency.l1(
        PAPER_HW, PAPER_DIM, PAPER_HEADS, 2, 6
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: efficiency.l1(16, 4, 2, 0, 0), "undefined"),
        (lambda: efficiency.l2(0, 0), "undefined"),
        (lambda: efficiency.l1(16, 4, 2, 2, 1), "exceeds num_heads"),
        (lambda: efficiency.l1(16, 4, 2, -1, 1), "non-negative"),
        (lambda: efficiency.l1(16, 4, 0, 1, 0), "num_heads"),
        (lambda: efficiency.g1(0, 4), "spatial_size"),
        (lambda: efficiency.g1(16, float("nan")), "head_dim"),
    ],
)
def test_bad_input_is_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_paper_block_thresholds():
    blocks = [(3136, 8, 196), (784, 7, 56), (196, 7, 14), (49, 1, 25)]
    rows = efficiency.paper_block_thresholds(blocks)
    # r = 1/2: (n - 1)/(3(n + 1)); n = 1: one band, L1(0, 1) = G1, so k = 0.
    assert [row["threshold"] for row in rows] == [Fraction(7, 27), Fraction(1, 4),
                                                  Fraction(1, 4), 0]
    assert [row["dim_ratio"] for row in rows] == [Fraction(1, 2)] * 3 + [Fraction(25, 49)]


def test_derivation_findings():
    findings = efficiency.check_paper_derivation(PAPER_HW)
    assert all(set(f) == {"claim", "holds", "detail"} for f in findings)
    by_claim = {f["claim"]: f["holds"] for f in findings}
    steps = [holds for claim, holds in by_claim.items() if claim.startswith("Derivation step")]
    assert steps == [True] * 4
    failing = sorted(claim for claim, holds in by_claim.items() if not holds)
    assert len(failing) == 3
    assert any("all A + B <= 8" in claim for claim in failing)
    assert any("single band" in claim for claim in failing)
    assert any("defined for every split" in claim for claim in failing)
    assert efficiency.findings_table(findings).count("[FAILS]") == 3


def test_figures():
    section_map = efficiency.plot_section_map(PAPER_HW, PAPER_DIM, PAPER_HEADS)
    hatched = [p for p in section_map.axes[0].patches if p.get_hatch() and p.get_width() > 0]
    assert len(hatched) == 12
    # Every hatched cell's number stands on an opaque white box above the hatch: readable.
    cells = {(round(p.get_x() + 0.5), round(p.get_y() + 0.5)) for p in hatched}
    section_map.canvas.draw()
    numbers = {text.get_position(): text for text in section_map.axes[0].texts
               if text.get_text()[:1].isdigit()}
    assert len(numbers) == 44  # every (A, B) with A + B <= 8 but (0, 0)
    for position, text in numbers.items():
        box = text.get_bbox_patch()
        if position in cells:
            assert box is not None and box.get_facecolor()[:3] == (1.0, 1.0, 1.0)
            assert box.get_alpha() >= 0.85 and text.get_color() == "black"
            assert text.get_zorder() > hatched[0].get_zorder()
        else:
            assert box is None
    sweeps = efficiency.plot_threshold_sweeps(max_heads=8, ratio_heads=(2, 8))
    assert len(sweeps.axes) == 2
    assert len(sweeps.axes[0].lines[0].get_xdata()) == 8
