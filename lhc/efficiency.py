"""Parameter efficiency of local against global heads: the measures of paper section 2.2.

The paper's thought experiment: the ``k``-th target feature map should combine old maps
``i`` and ``j``. A single global head must map 3 vectors (``q_k``, ``k_i``, ``k_j``) under
2 constraints with ``HW*d`` free parameters; ``n`` local heads each see a band of ``HW/n``
positions, and a band holds one possible activation (``A`` bands), both (``B`` bands) or
neither (``C`` bands), ``A + B + C = n``. The measures are

- G1 (eq. 21) and L1 (eq. 23): free parameters per dimension per constraint;
- G2 (eq. 22) and L2 (eq. 24): free parameters per relationship per constraint.

Eq. 21's denominator ``3(HW+d)2`` is a product (3 vectors of ``HW + d`` dimensions times 2
constraints): eq. 22 prints ``3(HWd)2`` and evaluates it to ``1/6``, which fixes the reading.

Everything is computed with :class:`fractions.Fraction` (floats are converted exactly), so
thresholds and comparisons are exact. Hand derivation used by the closed forms below, with
the band ``m = HW/n`` and the ratio ``r = d/m`` (so ``d = HW/(2n)`` is ``r = 1/2``)::

    L1 = m r (3A + B) / (6 (1 + r) (A + B)),   G1 = n m r / (6 (n + r))
    L1 > G1  <=>  A (2n + 3r - n r) > B r (n - 1)
             <=>  A / (A + B) > r (n - 1) / (2 (n + r))

``HW`` cancels: the threshold depends on ``n`` and ``r`` only. At ``r = 1/2`` it is
``k = (n - 1) / (3 (n + 1))``, i.e. ``7/27 = 0.2593`` at ``n = 8`` (the paper's 0.26).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from lhc.plots import apply_style

__all__ = [
    "PAPER_WORKED_HEADS",
    "SectionComparison",
    "check_paper_derivation",
    "compare_sections",
    "findings_table",
    "g1",
    "g2",
    "global_favoured_sections",
    "l1",
    "l1_exceeds_g1_threshold",
    "l1_exceeds_g1_threshold_at",
    "l2",
    "paper_block_thresholds",
    "plot_section_map",
    "plot_threshold_sweeps",
    "single_share_threshold",
]

# The paper's worked case (section 2.2): n = 8 heads and d = HW/(2n), as in LHC1 and LHC2.
PAPER_WORKED_HEADS = 8
PAPER_WORKED_RATIO = Fraction(1, 2)
PAPER_ROUNDED_THRESHOLD = Fraction(26, 100)
PAPER_GLOBAL_FAVOURED = {(0, 8), (1, 7)}


def _positive(value, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if isinstance(value, float) and not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    exact = Fraction(value)
    if exact <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return exact


def _heads(num_heads) -> int:
    if isinstance(num_heads, bool) or not isinstance(num_heads, numbers.Integral) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive integer, got {num_heads!r}")
    return int(num_heads)


def _sections(single_sections, double_sections, num_heads: int | None = None) -> tuple[int, int]:
    for name, value in (("single_sections (A)", single_sections),
                        ("double_sections (B)", double_sections)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if single_sections + double_sections == 0:
        raise ValueError(
            "A = B = 0 (no band can activate either filter): eqs. 23-24 divide by A + B = 0, "
            "so L1 and L2 are undefined"
        )
    if num_heads is not None and single_sections + double_sections > num_heads:
        raise ValueError(
            f"A + B = {single_sections + double_sections} exceeds num_heads = {num_heads} "
            "(A + B + C = n with C >= 0)"
        )
    return int(single_sections), int(double_sections)


def g1(spatial_size, head_dim) -> Fraction:
    """Global head, free parameters per dimension per constraint (eq. 21).

    Args:
        spatial_size: ``H*W`` of the feature map.
        head_dim: embedding size ``d``.

    Returns:
        ``HW d / (3 (HW + d) 2)``, exact.
    """
    hw, d = _positive(spatial_size, "spatial_size"), _positive(head_dim, "head_dim")
    return hw * d / (3 * (hw + d) * 2)


def g2() -> Fraction:
    """Global head, free parameters per relationship per constraint (eq. 22): ``1/6``."""
    return Fraction(1, 6)


def l1(spatial_size, head_dim, num_heads, single_sections, double_sections) -> Fraction:
    """Local heads, free parameters per dimension per constraint (eq. 23).

    Args:
        spatial_size: ``H*W`` of the feature map.
        head_dim: embedding size ``d`` of each head.
        num_heads: number of local heads ``n``; each sees ``HW/n`` positions.
        single_sections: ``A``, bands where only one of the two filters can activate.
        double_sections: ``B``, bands where both can; ``C = n - A - B`` bands where neither
            can do not enter the formula.

    Returns:
        ``(A (HW/n) d / (2 (HW/n + d)) + B (HW/n) d / (3 (HW/n + d) 2)) / (A + B)``, exact.

    Raises:
        ValueError: for ``A = B = 0`` (undefined) or ``A + B > n``.
    """
    hw, d = _positive(spatial_size, "spatial_size"), _positive(head_dim, "head_dim")
    n = _heads(num_heads)
    a, b = _sections(single_sections, double_sections, n)
    band = hw / n
    single = band * d / (2 * (band + d))
    double = band * d / (3 * (band + d) * 2)
    return (a * single + b * double) / (a + b)


def l2(single_sections, double_sections) -> Fraction:
    """Local heads, free parameters per relationship per constraint (eq. 24, second line).

    Args:
        single_sections: ``A``.
        double_sections: ``B``.

    Returns:
        ``(A/2 + B/6) / (A + B)``, exact.
    """
    a, b = _sections(single_sections, double_sections)
    return (Fraction(a, 2) + Fraction(b, 6)) / (a + b)


def single_share_threshold(num_heads, dim_ratio=PAPER_WORKED_RATIO) -> Fraction:
    """Share ``A/(A+B)`` above which L1 > G1 (closed form derived in the module docstring).

    Args:
        num_heads: ``n``.
        dim_ratio: ``r = d / (HW/n)``; the paper's worked case is ``1/2``.

    Returns:
        ``r (n - 1) / (2 (n + r))``; a value ``>= 1`` means L1 > G1 never holds.
    """
    n, r = _heads(num_heads), _positive(dim_ratio, "dim_ratio")
    return r * (n - 1) / (2 * (n + r))


def l1_exceeds_g1_threshold(num_heads, dim_ratio=PAPER_WORKED_RATIO) -> Fraction | None:
    """The ``k`` with L1 > G1 iff A > k B, for ``d = r HW/n`` (closed form; HW cancels).

    Args:
        num_heads: ``n``.
        dim_ratio: ``r = d / (HW/n)``; the paper's worked case is ``1/2``.

    Returns:
        ``r (n - 1) / (2n + 3r - n r)``: ``7/27`` at ``n = 8, r = 1/2`` (the paper's 0.26);
        ``None`` when ``2n + 3r - n r <= 0``, where no A makes L1 exceed G1.
    """
    n, r = _heads(num_heads), _positive(dim_ratio, "dim_ratio")
    single_coefficient = 2 * n + 3 * r - n * r
    if single_coefficient <= 0:
        return None
    return r * (n - 1) / single_coefficient


def l1_exceeds_g1_threshold_at(spatial_size, head_dim, num_heads) -> Fraction | None:
    """The same ``k`` straight from eqs. 21 and 23, for concrete ``HW`` and ``d``.

    ``(A + B) L1`` is linear in ``A`` and ``B`` with slopes ``L1(A=1, B=0)`` and
    ``L1(A=0, B=1)``, so ``L1 > G1`` iff ``A (L1(1,0) - G1) > B (G1 - L1(0,1))``.

    Args:
        spatial_size: ``H*W``.
        head_dim: ``d``.
        num_heads: ``n``.

    Returns:
        ``(G1 - L1(0,1)) / (L1(1,0) - G1)``, or ``None`` when ``L1(1,0) <= G1``.
    """
    global_value = g1(spatial_size, head_dim)
    single = l1(spatial_size, head_dim, num_heads, 1, 0)
    double = l1(spatial_size, head_dim, num_heads, 0, 1)
    if single <= global_value:
        return None
    return (global_value - double) / (single - global_value)


@dataclass(frozen=True)
class SectionComparison:
    """L1/G1 and L2/G2 for one split ``A + B + C = n`` of the bands."""

    single_sections: int
    double_sections: int
    empty_sections: int
    l1: Fraction
    g1: Fraction
    l2: Fraction
    g2: Fraction

    @property
    def favoured(self) -> str:
        """Which head the dimension measure favours: ``"local"``, ``"global"`` or ``"tie"``."""
        if self.l1 == self.g1:
            return "tie"
        return "local" if self.l1 > self.g1 else "global"


def compare_sections(spatial_size, head_dim, num_heads) -> list[SectionComparison]:
    """Every split with ``1 <= A + B <= n``, ordered by ``A`` then ``B``.

    Args:
        spatial_size: ``H*W``.
        head_dim: ``d``.
        num_heads: ``n``.

    Returns:
        ``(n + 1)(n + 2)/2 - 1`` comparisons (``A = B = 0`` is undefined and left out).
    """
    n = _heads(num_heads)
    global_value = g1(spatial_size, head_dim)
    return [
        SectionComparison(a, b, n - a - b, l1(spatial_size, head_dim, n, a, b), global_value,
                          l2(a, b), g2())
        for a in range(n + 1)
        for b in range(n + 1 - a)
        if a + b > 0
    ]


def global_favoured_sections(spatial_size, head_dim, num_heads) -> list[tuple[int, int]]:
    """The ``(A, B)`` with L1 < G1, i.e. where the global head is more efficient."""
    return [
        (row.single_sections, row.double_sections)
        for row in compare_sections(spatial_size, head_dim, num_heads)
        if row.favoured == "global"
    ]


def paper_block_thresholds(blocks: Iterable[tuple[int, int, int]]) -> list[dict]:
    """Threshold ``k`` of every LHC block from its actual ``(HW, n, d)``.

    Args:
        blocks: ``(spatial_size, num_heads, head_dim)`` per block, e.g. from
            ``lhc.models.lhc_feature_shapes`` and ``lhc.models.PAPER_BLOCKS``.

    Returns:
        One dict per block: ``spatial_size``, ``num_heads``, ``head_dim``, ``dim_ratio``
        (``d/(HW/n)``) and ``threshold`` (``None`` when L1 > G1 never holds).
    """
    return [
        {
            "spatial_size": hw,
            "num_heads": n,
            "head_dim": d,
            "dim_ratio": Fraction(d * n, hw),
            "threshold": l1_exceeds_g1_threshold_at(hw, d, n),
        }
        for hw, n, d in blocks
    ]


def _finding(claim: str, holds: bool, detail: str) -> dict:
    return {"claim": claim, "holds": bool(holds), "detail": detail}


def _pairs(num_heads: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(num_heads + 1) for b in range(num_heads + 1 - a) if a + b]


def _derivation_lines(spatial_size: Fraction) -> list[tuple[str, object, object]]:
    """The printed lines of the worked derivation as (label, lhs(A, B), rhs(A, B))."""
    n, hw = PAPER_WORKED_HEADS, spatial_size
    d = hw / (2 * n)
    band = hw / n
    half = Fraction(1, 2)
    return [
        ("line 1", lambda a, b: (a * band * d / (2 * (band + d)) + b * band * d / (2 * (band + d) * 3))
         / (a + b), lambda a, b: hw * d / (3 * (hw + d) * 2)),
        ("line 2", lambda a, b: a * Fraction(1, n) / (2 * (band * (1 + half)))
         + b * Fraction(1, n) / (6 * band * (1 + half)),
         lambda a, b: (a + b) / (6 * hw * (1 + Fraction(1, 2 * n)))),
        ("line 3", lambda a, b: a / (2 * (1 + half)) + b / (6 * (1 + half)),
         lambda a, b: (a + b) / (6 * (1 + Fraction(1, 16)))),
        ("line 4", lambda a, b: Fraction(a, 3) + Fraction(b, 9),
         lambda a, b: Fraction(16 * a + 16 * b, 102)),
        ("line 5", lambda a, b: Fraction(3 * a + b),
         lambda a, b: Fraction(144 * a + 144 * b, 102)),
    ]


def check_paper_derivation(spatial_size=3136) -> list[dict]:
    """Check eqs. 21-26 and the worked case (``n = 8``, ``d = HW/(2n)``) step by step.

    Every check is exact (fractions) over all ``(A, B)`` with ``1 <= A + B <= 8``.

    Args:
        spatial_size: ``H*W`` used for the worked case (the paper's first blocks: 3136);
            the independence of ``HW`` is checked on further sizes as well.

    Returns:
        A list of ``{"claim": str, "holds": bool, "detail": str}``.
    """
    hw = _positive(spatial_size, "spatial_size")
    n, r = PAPER_WORKED_HEADS, PAPER_WORKED_RATIO
    d = hw / (2 * n)
    pairs = _pairs(n)
    findings = []

    eq22_printed = hw * d / (3 * (hw * d) * 2)
    findings.append(_finding(
        "Eq. 22: HWd / (3(HWd)2) = 1/6, so '3(...)2' in eqs. 21-23 means 3 * (...) * 2",
        eq22_printed == g2(),
        f"HWd / (3 HWd 2) = {eq22_printed} at HW = {hw}, d = {d}; the factor 2 is the number "
        "of constraints"))

    band = hw / n
    eq24_ok = all((a * band * d / (2 * band * d) + b * band * d / (3 * band * d * 2)) / (a + b)
                  == l2(a, b) for a, b in pairs)
    findings.append(_finding(
        "Eq. 24: the first line simplifies to (A/2 + B/6)/(A + B)", eq24_ok,
        f"equal for all {len(pairs)} (A, B) with 1 <= A + B <= {n}"))

    strict = all((l2(a, b) > g2()) == (a > 0) for a, b in pairs)
    equal = [(a, b) for a, b in pairs if l2(a, b) == g2()]
    findings.append(_finding(
        "Eqs. 25-26: L2 >= G2, with equality iff A = 0", strict and all(a == 0 for a, _ in equal),
        "(A/2 + B/6)/(A + B) - 1/6 = A / (3(A + B)) >= 0; equality exactly at "
        f"{equal} (every B, any C)"))

    lines = _derivation_lines(hw)
    line1_ok = all(lines[0][1](a, b) == l1(hw, d, n, a, b) and lines[0][2](a, b) == g1(hw, d)
                   for a, b in pairs)
    findings.append(_finding(
        "Derivation line 1 is eq. 23 > eq. 21 (its B term prints 2(...)3 for eq. 23's 3(...)2)",
        line1_ok, "same values for every (A, B): 2*3 = 3*2"))
    factor_notes = {
        "line 2": "multiplied by (A + B)/(HWd); uses d/(HW/n) = 1/2 and d/HW = 1/(2n)",
        "line 3": "multiplied by HW; 1 + 1/(2n) = 1 + 1/16 at n = 8",
        "line 4": "1/(2 * 3/2) = 1/3, 1/(6 * 3/2) = 1/9, 1/(6 * 17/16) = 16/102",
        "line 5": "multiplied by 9",
    }
    for (label_prev, lhs_prev, rhs_prev), (label, lhs, rhs) in zip(lines, lines[1:], strict=False):
        # Two lines are the same inequality when both sides scale by one positive factor.
        ratios = [(lhs(a, b) / lhs_prev(a, b), rhs(a, b) / rhs_prev(a, b)) for a, b in pairs]
        same = all(left == right > 0 for left, right in ratios)
        bad = [(pair, left, right) for pair, (left, right) in zip(pairs, ratios, strict=True)
               if not left == right > 0]
        findings.append(_finding(
            f"Derivation step {label_prev} -> {label} is an equivalence", same,
            factor_notes[label] if same else f"sides scale differently at {bad[:3]}"))

    exact = l1_exceeds_g1_threshold(n, r)
    decisions_agree = all((lines[4][1](a, b) > lines[4][2](a, b)) == (a > exact * b)
                          == (a > PAPER_ROUNDED_THRESHOLD * b) for a, b in pairs)
    findings.append(_finding(
        "Line 5 gives A > 0.26 B", decisions_agree and round(float(exact), 2) == 0.26,
        f"exactly A > {exact} B = {float(exact):.6f} B (3 - 24/17 = 27/17, 24/17 - 1 = 7/17); "
        f"0.26 is {exact} rounded to 2 decimals (up by {float(PAPER_ROUNDED_THRESHOLD - exact):.1e}); "
        f"for integer A, B with A + B <= {n} both give the same decisions"))

    sizes = sorted({2 * n, 6 * n, 784, 3136, 50176, hw})
    per_size = {size: l1_exceeds_g1_threshold_at(size, Fraction(size) / (2 * n), n)
                for size in sizes}
    findings.append(_finding(
        "The threshold does not depend on HW", all(k == exact for k in per_size.values()),
        f"k from eqs. 21/23 is {exact} at HW in {[str(s) for s in sizes]}; HW cancels, only "
        "n and r = d/(HW/n) remain"))

    grid = [(heads, ratio, size) for heads in (1, 2, 3, 7, 8, 16, 64)
            for ratio in (Fraction(1, 8), Fraction(1, 2), Fraction(1), Fraction(3), Fraction(5))
            for size in (heads * 12, heads * 4096)]
    closed_ok = all(l1_exceeds_g1_threshold(heads, ratio)
                    == l1_exceeds_g1_threshold_at(size, ratio * size / heads, heads)
                    for heads, ratio, size in grid)
    findings.append(_finding(
        "Closed form k(n, r) = r(n - 1)/(2n + 3r - nr) agrees with eqs. 21/23", closed_ok,
        f"checked exactly on {len(grid)} (n, r, HW); k(n, 1/2) = (n - 1)/(3(n + 1)) -> 1/3 as "
        "n grows; L1 > G1 never holds once r >= 2n/(n - 3) (r >= 16/5 at n = 8)"))

    favoured = set(global_favoured_sections(hw, d, n))
    full = {pair for pair in favoured if sum(pair) == n}
    partial = sorted(pair for pair in favoured if sum(pair) < n)
    findings.append(_finding(
        "Among A + B = 8 (C = 0) only A = 0, B = 8 and A = 1, B = 7 favour the global head",
        full == PAPER_GLOBAL_FAVOURED, f"global-favoured with C = 0: {sorted(full)}"))
    findings.append(_finding(
        "Among all A + B <= 8 only those two favour the global head", not partial,
        f"{len(partial)} more with C > 0: {partial}; L1 depends only on the share A/(A + B), so "
        f"every split with A/(A + B) < {single_share_threshold(n, r)} favours the global head"))

    a0 = {l1(hw, d, n, 0, b) for b in range(1, n + 1)}
    findings.append(_finding(
        "A = 0 with C > 0: L1 and L2 do not depend on C (nor on B)", len(a0) == 1,
        f"L1(0, B) = {a0.pop()} < G1 = {g1(hw, d)} and L2 = G2 for every B = 1..{n}: the "
        "measures average over the A + B active bands only, so bands where the pattern cannot "
        "occur neither cost nor earn; a pattern confined to one band, (0, 1), scores the same as "
        "one possible in every band, (0, 8)"))

    findings.append(_finding(
        "'A single band with one possible activation makes local heads more effective'",
        all(l2(a, b) > g2() for a, b in pairs if a >= 1)
        and all(row.favoured == "local" for row in compare_sections(hw, d, n)
                if row.single_sections >= 1),
        "true for L2 (eqs. 25-26); false for L1: "
        f"{sorted(pair for pair in favoured if pair[0] >= 1)} have A >= 1 and favour the global head"))

    try:
        (0 * band * d / (2 * (band + d)) + 0 * band * d / (3 * (band + d) * 2)) / Fraction(0)
        defined = True
    except ZeroDivisionError:
        defined = False
    findings.append(_finding(
        "Eqs. 23-24 are defined for every split A + B + C = n", defined,
        "A = B = 0 (C = n: no band can show either filter) divides 0 by A + B = 0; "
        "the pattern then cannot occur and L1, L2 are undefined"))
    return findings


def findings_table(findings: Sequence[dict], width: int = 100) -> str:
    """Plain-text table of :func:`check_paper_derivation` findings, wrapped at ``width``."""
    import textwrap

    lines = []
    for index, finding in enumerate(findings, 1):
        mark = "holds" if finding["holds"] else "FAILS"
        lines.append(f"{index:2d}. [{mark}] {finding['claim']}")
        lines.extend(textwrap.wrap(finding["detail"], width, initial_indent=" " * 13,
                                   subsequent_indent=" " * 13))
    return "\n".join(lines)


# The box behind a hatched cell's number: white, borderless, tight around the text.
_HATCHED_LABEL_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none",
                     "alpha": 0.9}


def plot_section_map(spatial_size, head_dim, num_heads):
    """Map of L1/G1 over every ``(A, B)`` with ``A + B <= n``; global-favoured cells hatched.

    Each cell's number is written on it; on hatched cells over a white box
    (``_HATCHED_LABEL_BOX``), as hatch lines through the digits make them unreadable.

    Args:
        spatial_size: ``H*W``.
        head_dim: ``d``.
        num_heads: ``n``.

    Returns:
        A matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    apply_style()
    n = _heads(num_heads)
    log_ratio = np.full((n + 1, n + 1), np.nan)  # (B, A)
    rows = compare_sections(spatial_size, head_dim, n)
    for row in rows:
        log_ratio[row.double_sections, row.single_sections] = np.log2(float(row.l1 / row.g1))
    bound = np.nanmax(np.abs(log_ratio))
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    image = ax.imshow(log_ratio, origin="lower", cmap="PuOr",
                      norm=TwoSlopeNorm(vcenter=0.0, vmin=-bound, vmax=bound))
    for row in rows:
        a, b = row.single_sections, row.double_sections
        hatched = row.favoured == "global"
        # White text where the colour is dark enough to hide black text; on a hatched cell,
        # black text on a white box, which the hatch lines cannot cross.
        colour = "white" if abs(log_ratio[b, a]) > 0.6 * bound and not hatched else "black"
        box = _HATCHED_LABEL_BOX if hatched else None
        ax.text(a, b, f"{float(row.l1 / row.g1):.2f}", ha="center", va="center", fontsize=8,
                color=colour, bbox=box, zorder=4)
        if hatched:
            ax.add_patch(plt.Rectangle((a - 0.5, b - 0.5), 1, 1, fill=False, hatch="///",
                                       edgecolor="black", linewidth=0.0, zorder=3))
    ax.add_patch(plt.Rectangle((0, 0), 0, 0, fill=False, hatch="///", edgecolor="black",
                               linewidth=0.0, label="L1 < G1: global head more efficient"))
    ax.text(0, 0, "undef.", ha="center", va="center", fontsize=7)
    threshold = l1_exceeds_g1_threshold_at(spatial_size, head_dim, n)
    if threshold is not None and threshold > 0:
        b_line = np.linspace(0, n, 50)
        ax.plot(float(threshold) * b_line, b_line, color="black", linewidth=1.2,
                label=f"A = {float(threshold):.3f} B (L1 = G1)")
    ax.plot([0, n], [n, 0], color="grey", linestyle="--", linewidth=1.0, label="A + B = n (C = 0)")
    ax.set(xlabel="A (bands with one possible activation)",
           ylabel="B (bands with both)", xlim=(-0.5, n + 0.5), ylim=(-0.5, n + 0.5),
           title=f"L1/G1 over (A, B): n = {n}, HW = {spatial_size}, d = {head_dim}")
    ax.set_xticks(range(n + 1))
    ax.set_yticks(range(n + 1))
    ax.grid(False)
    ax.legend(loc="upper right", fontsize=8)
    fig.colorbar(image, ax=ax, label="log2(L1/G1)  (> 0: local heads more efficient)")
    return fig


def plot_threshold_sweeps(max_heads: int = 32, ratio_heads: Sequence[int] = (2, 4, 7, 8, 16),
                          max_ratio: float = 4.0):
    """Threshold against ``n`` at ``d = HW/(2n)``, and critical share against ``d/(HW/n)``.

    Args:
        max_heads: largest ``n`` of the left panel.
        ratio_heads: one curve per ``n`` in the right panel.
        max_ratio: largest ``r = d/(HW/n)`` of the right panel.

    Returns:
        A matplotlib Figure with two panels.
    """
    import matplotlib.pyplot as plt

    apply_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    heads = np.arange(1, max_heads + 1)
    thresholds = [float(l1_exceeds_g1_threshold(int(h))) for h in heads]
    left.plot(heads, thresholds, marker="o", markersize=3, label="k(n) = (n - 1)/(3(n + 1))")
    left.axhline(1 / 3, color="grey", linestyle=":", label="limit 1/3")
    paper_k = float(l1_exceeds_g1_threshold(PAPER_WORKED_HEADS))
    left.scatter([PAPER_WORKED_HEADS], [paper_k], color="black", zorder=3,
                 label=f"paper, n = 8: {paper_k:.4f} (0.26)")
    left.set(xlabel="number of heads n", ylabel="k: L1 > G1 iff A > k B",
             title="d = HW/(2n): threshold against n")
    left.legend(fontsize=8)

    ratios = np.linspace(max_ratio / 400, max_ratio, 400)
    for n in ratio_heads:
        share = np.array([float(single_share_threshold(n, Fraction(float(x)))) for x in ratios])
        right.plot(ratios, np.minimum(share, 1.0), label=f"n = {n}")
    right.axvline(float(PAPER_WORKED_RATIO), color="grey", linestyle=":", label="d = HW/(2n)")
    right.axhline(1.0, color="black", linewidth=0.8)
    right.set(xlabel="r = d / (HW/n)", ylabel="A/(A + B) needed for L1 > G1",
              title="critical share of single-activation bands (1: never)", ylim=(0, 1.05))
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
