"""The verdict rules: declared primary test, Holm across claims, non-inferiority, no sign votes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pipeline.experiments import verdicts as V

ALPHA = 0.05


def diffs_with_p(p: float, n: int = 6, sd: float = 1.0) -> list[float]:
    """Per-seed differences whose one-sided ("greater") paired t p-value is exactly ``p``."""
    z = np.linspace(-1, 1, n)
    z = (z - z.mean()) / z.std(ddof=1)  # mean 0, sd 1
    t = stats.t.isf(p, n - 1)
    return list(t * sd / math.sqrt(n) + sd * z)


def cmp(label: str, d: list[float], sign: int = 1, margin: float = 0.0) -> V.Comparison:
    return V.Comparison(label, list(d), [0.0] * len(d), sign=sign, margin=margin)


def claim(key: str, primary, subs=(), exploratory=()) -> V.Claim:
    if isinstance(primary, V.Comparison):
        primary = V.AllOf("primary", [primary])
    return V.Claim(key, "src", f"statement {key}", primary, list(subs), list(exploratory))


def test_constructed_p_values_match_scipy():
    d = diffs_with_p(0.03)
    assert stats.ttest_1samp(d, 0.0, alternative="greater").pvalue == pytest.approx(0.03)
    assert cmp("x", d).p(ALPHA) == pytest.approx(0.03)
    assert cmp("x", d, sign=-1).p(ALPHA) == pytest.approx(0.97)
    assert cmp("x", d).p_opposite(ALPHA) == pytest.approx(0.97)


def test_holm_is_applied_across_claims():
    # p = 0.03 passes alone; beside a second claim (p = 0.5) Holm doubles it to 0.06: fails.
    alone = V.judge([claim("a", cmp("a", diffs_with_p(0.03)))], ALPHA)[0]
    assert alone.verdict == V.REPRODUCED and alone.p_primary == pytest.approx(0.03)
    pair = V.judge(
        [claim("a", cmp("a", diffs_with_p(0.03))), claim("b", cmp("b", diffs_with_p(0.5)))],
        ALPHA,
    )
    assert pair[0].p_primary == pytest.approx(0.06) and pair[0].verdict == V.NOT
    assert pair[1].p_primary == pytest.approx(0.5) and pair[1].verdict == V.NOT
    assert "Holm p=0.06 > 0.05" in pair[0].reason
    # Untestable claims (one seed, descriptive, no data) are not part of the family.
    one_seed = claim("c", cmp("c", [1.0]))
    descriptive = V.Claim("d", "s", "t", V.AllOf("p", [cmp("d", [1.0])]), descriptive=True)
    out = V.judge([claim("a", cmp("a", diffs_with_p(0.03))), one_seed, descriptive], ALPHA)
    assert out[0].verdict == V.REPRODUCED and out[0].p_primary == pytest.approx(0.03)


def test_a_failed_primary_cannot_be_rescued_by_other_comparisons():
    strong = diffs_with_p(1e-6)
    weak = diffs_with_p(0.3)
    c = claim("k", cmp("declared", weak), subs=[V.AllOf("sub", [cmp("sub", strong)])],
              exploratory=[cmp("extra", strong), cmp("extra2", strong)])  # fmt: skip
    assert V.judge([c], ALPHA)[0].verdict == V.NOT
    # A conjunction: one part very strong, the other not shown → the primary fails (no "partly").
    both = claim("k", V.AllOf("primary", [cmp("rep − none", strong), cmp("rep − ll", weak)]))
    out = V.judge([both], ALPHA)[0]
    assert out.verdict == V.NOT and out.p_primary == pytest.approx(0.3)


def test_partly_only_when_the_primary_passes_and_names_what_passed():
    strong, weak = diffs_with_p(1e-6), diffs_with_p(0.4)
    c = claim("k", cmp("declared", strong),
              subs=[V.AllOf("readout grows", [cmp("g", strong)]),
                    V.AllOf("ll shrinks readout", [cmp("s", weak)])])  # fmt: skip
    out = V.judge([c], ALPHA)[0]
    assert out.verdict == V.PARTLY
    assert "sub-claims passed: readout grows" in out.reason
    assert "not shown: ll shrinks readout" in out.reason
    c.subclaims[1] = V.AllOf("ll shrinks readout", [cmp("s", strong)])
    assert V.judge([c], ALPHA)[0].verdict == V.REPRODUCED


def test_contradicted_when_the_opposite_direction_is_significant():
    reversed_ = [-x for x in diffs_with_p(1e-4)]
    out = V.judge([claim("k", cmp("x", reversed_))], ALPHA)[0]
    assert out.verdict == V.CONTRADICTED
    # The opposite of a conjunction: any part reversed, Bonferroni over the parts.
    both = V.AllOf("p", [cmp("a", diffs_with_p(1e-6)), cmp("b", reversed_)])
    assert both.p_opposite(ALPHA) == pytest.approx(min(1.0, 2 * cmp("b", reversed_).p_opposite()))
    assert V.judge([claim("k", both)], ALPHA)[0].verdict == V.CONTRADICTED
    # Wrong sign but within noise: not reproduced, not contradicted.
    noisy = [-x for x in diffs_with_p(0.2)]
    assert V.judge([claim("k", cmp("x", noisy))], ALPHA)[0].verdict == V.NOT


def test_non_inferiority_needs_a_tight_interval_not_a_mean_near_zero():
    margin = 0.01
    wide = [0.05, -0.05, 0.04, -0.04, 0.03, -0.03]  # mean 0, lower bound ≈ −0.034 < −0.01
    tight = [0.001, -0.001, 0.0005, -0.0005, 0.002, -0.002]
    c_wide, c_tight = cmp("acc", wide, margin=margin), cmp("acc", tight, margin=margin)
    assert c_wide.mean_diff == pytest.approx(0.0, abs=1e-12)
    # The one-sided 95% lower bound, from scipy: mean − t_{0.95, n−1} s / √n.
    low = -stats.t.ppf(0.95, 5) * np.std(wide, ddof=1) / math.sqrt(6)
    assert c_wide.result(ALPHA).low == pytest.approx(low)
    assert low < -margin and c_wide.p(ALPHA) > ALPHA
    assert V.judge([claim("k", c_wide)], ALPHA)[0].verdict == V.NOT
    assert V.judge([claim("k", c_tight)], ALPHA)[0].verdict == V.REPRODUCED
    # The p of non-inferiority is the t-test against −margin (scipy as ground truth).
    ref = stats.ttest_1samp(tight, -margin, alternative="greater").pvalue
    assert c_tight.p(ALPHA) == pytest.approx(ref)
    # Clearly worse than the margin: the opposite (inferiority) is significant.
    worse = cmp("acc", [x - 0.05 for x in tight], margin=margin)
    assert V.judge([claim("k", worse)], ALPHA)[0].verdict == V.CONTRADICTED


def test_one_run_gets_no_verdict_from_a_sign():
    big = cmp("x", [10.0])  # a huge difference, but one run
    out = V.judge([claim("k", big)], ALPHA)[0]
    assert out.verdict == V.NOT and out.reason == "not testable with 1 seed(s)"
    d = V.Claim("d", "s", "t", V.AllOf("p", [big]), descriptive=True)
    assert V.judge([d], ALPHA)[0].verdict == V.DESCRIPTIVE
    assert "one run, no test" in big.describe()
    assert V.judge([V.Claim("k", "s", "t")], ALPHA)[0].verdict == V.MISSING
    assert V.judge([claim("k", cmp("x", []))], ALPHA)[0].verdict == V.MISSING


def test_identical_runs_are_no_evidence_either_way():
    # All seeds exactly equal (t = 0/0): p = 1 both ways, so "not reproduced", not "untestable".
    tie = cmp("acc none − rep", [0.0] * 6)
    assert tie.p(ALPHA) == 1.0 and tie.p_opposite(ALPHA) == 1.0
    out = V.judge([claim("k", V.AllOf("p", [cmp("a", diffs_with_p(1e-4)), tie]))], ALPHA)[0]
    assert out.verdict == V.NOT and out.p_primary == 1.0


def test_family_wise_error_of_reproduced_under_the_null():
    """All claims null (true difference 0): P(any "reproduced") ≤ α, by simulation."""
    rng = np.random.default_rng(3)
    reps, m, n = 600, 4, 6
    wrong = 0
    for _ in range(reps):
        claims = [claim(f"c{i}", cmp("x", list(rng.normal(0, 1, n)))) for i in range(m)]
        wrong += any(c.verdict == V.REPRODUCED for c in V.judge(claims, ALPHA))
    se = math.sqrt(ALPHA * (1 - ALPHA) / reps)
    assert wrong / reps <= ALPHA + 2.5 * se
    # Without Holm each claim alone errs at α: the family would err ≈ 1 − 0.95⁴ ≈ 19%.
    alone = np.mean([cmp("x", list(rng.normal(0, 1, n))).p() <= ALPHA for _ in range(reps)])
    assert abs(alone - ALPHA) < 3 * se


def test_describe_reports_the_bound_of_the_declared_test():
    d = diffs_with_p(0.01)
    text = cmp("rep − none", d).describe(ALPHA)
    low = np.mean(d) - stats.t.ppf(0.95, 5) * np.std(d, ddof=1) / math.sqrt(6)
    assert f"lower bound {low:+.4g}" in text and "p=0.01" in text and "n=6 seeds" in text
    assert "upper bound" in cmp("x", d, sign=-1).describe(ALPHA)
    with pytest.raises(ValueError):
        V.Comparison("x", [1.0], [0.0], sign=2)
