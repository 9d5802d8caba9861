"""Inference over training runs against hand computations, scipy and simulations with known truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pipeline.report.inference import holm, paired_seed_test, walsh_interval

# ---------------------------------------------------------------- Holm


def test_holm_hand_computed():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN stays in place and does not count in m (m = 2 here)
    out = holm([0.01, math.nan, 0.04])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1, monotone
    assert holm([]) == []
    assert holm([0.2]) == [0.2]


def test_holm_controls_family_wise_error_under_global_null():
    rng = np.random.default_rng(1)
    fams, m, alpha = 2000, 4, 0.05
    p = rng.uniform(size=(fams, m))
    any_holm = np.mean([min(holm(row)) <= alpha for row in p])
    any_raw = np.mean((p <= alpha).any(axis=1))
    se = math.sqrt(alpha * (1 - alpha) / fams)
    # exact FWER for independent p's is 1 - (1 - alpha/m)^m = 0.0491
    assert any_holm <= alpha + 2.5 * se
    assert any_holm > 0.03  # not vacuously conservative
    assert any_raw > 0.15  # the unadjusted family errs ~18.5% of the time


def test_holm_is_uniformly_more_powerful_than_bonferroni():
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 0.1, size=(500, 5))
    for row in p:
        h = np.asarray(holm(row))
        assert np.all(h <= np.minimum(1, 5 * row) + 1e-15)
        assert np.all(h >= row)


# ---------------------------------------------------------------- paired_seed_test


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_paired_seed_t_matches_scipy(alternative):
    x = np.array([0.12, 0.03, 0.2, -0.05, 0.08, 0.15])
    r = paired_seed_test(x, alternative=alternative, test="t", null=0.01)
    ref = stats.ttest_1samp(x, popmean=0.01, alternative=alternative)
    ci = stats.ttest_1samp(x, popmean=0.01).confidence_interval(0.95)
    assert r.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert (r.low, r.high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert r.estimate == pytest.approx(x.mean()) and r.units == 6 and r.statistic == "paired"
    assert r.test == "t" and r.alternative == alternative and "t-interval" in r.interval


@pytest.mark.parametrize("n", [3, 4, 5, 6])
@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_paired_seed_wilcoxon_matches_scipy_exact(n, alternative):
    rng = np.random.default_rng(n)
    x = rng.normal(0.1, 0.1, size=n)
    r = paired_seed_test(x, alternative=alternative, test="wilcoxon", null=0.02)
    ref = stats.wilcoxon(x - 0.02, alternative=alternative, method="exact")
    assert r.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert r.estimate == pytest.approx(x.mean()) and r.units == n
    if n <= 5:  # even [min, max] of the Walsh averages has confidence 1 - 2/2^n < 95%
        assert (r.low, r.high) == (-math.inf, math.inf)
    else:  # n = 6: k = 1, the full range of Walsh averages (confidence 1 - 2/64)
        assert (r.low, r.high) == pytest.approx((x.min(), x.max()))


@pytest.mark.parametrize("n", [6, 8, 11, 15])
def test_walsh_interval_inverts_scipy_exact_wilcoxon(n):
    # ground truth: theta lies in the interval iff scipy's exact two-sided test at x - theta does
    # not reject at 5%; checked on a grid that avoids the Walsh averages themselves
    rng = np.random.default_rng(10 + n)
    x = rng.normal(size=n)
    low, high = walsh_interval(x, 0.95)
    i, j = np.triu_indices(n)
    w = np.sort((x[i] + x[j]) / 2)
    grid = np.concatenate([(w[1:] + w[:-1]) / 2, [w[0] - 1, w[-1] + 1]])
    for theta in grid:
        keep = stats.wilcoxon(x - theta, method="exact").pvalue > 0.05
        assert keep == (low < theta < high), theta


def test_paired_seed_test_edge_cases():
    one = paired_seed_test([0.3])
    assert one.units == 1 and one.estimate == 0.3
    assert math.isnan(one.p) and math.isnan(one.low) and math.isnan(one.high)
    r = paired_seed_test([0.1, math.nan, 0.2, 0.3])
    assert r.units == 3  # NaN = a unit without a value
    z = paired_seed_test([0.0, 0.0, 0.0], test="wilcoxon")
    assert z.p == 1.0
    inf = paired_seed_test([0.1, math.inf, 0.2], test="t")
    assert math.isnan(inf.p) and inf.estimate == math.inf
    with pytest.raises(ValueError):
        paired_seed_test([0.1, 0.2], alternative="bigger")
    with pytest.raises(ValueError):
        paired_seed_test([0.1, 0.2], test="z")


@pytest.mark.parametrize("test", ["t", "wilcoxon"])
def test_paired_seed_test_type_one_error(test):
    # null true (symmetric around 0.05): rejection rate at 5% ~ alpha (wilcoxon exact: <= alpha)
    rng = np.random.default_rng(3)
    reps, n = 2000, 8
    x = rng.normal(0.05, 0.2, size=(reps, n))
    rej = np.mean([paired_seed_test(row, test=test, null=0.05).p <= 0.05 for row in x])
    se = math.sqrt(0.05 * 0.95 / reps)
    assert abs(rej - 0.05) < 3 * se if test == "t" else 0.025 < rej < 0.05 + 3 * se
