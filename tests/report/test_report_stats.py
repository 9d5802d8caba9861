"""Intervals of the report against hand-computed values and an independent bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pipeline.report.stats import IntervalOptions, mean_std, stratified_mean_interval

T_975_DF4 = 2.7764451051977987  # Student t quantile 0.975 with 4 degrees of freedom (tables)
T_975_DF2 = 4.302652729911275


def test_mean_std_drops_missing_values():
    assert mean_std([1.0, 2.0, 3.0, None, math.nan]) == (2.0, 1.0)
    assert mean_std([4.0]) == (4.0, 0.0)
    assert all(math.isnan(x) for x in mean_std([None]))


def test_t_interval_of_one_stratum_is_hand_computed():
    i = stratified_mean_interval([[1.0, 2.0, 3.0, 4.0, 5.0]], "t")
    half = T_975_DF4 * math.sqrt(2.5) / math.sqrt(5)
    assert i.estimate == 3.0 and (i.n, i.strata) == (5, 1)
    assert i.low == pytest.approx(3.0 - half, abs=1e-9)
    assert i.high == pytest.approx(3.0 + half, abs=1e-9)


def test_t_interval_over_seeds_uses_the_seed_means():
    # Seed means 2, 5, 8: mean 5, sample std 3, three seeds.
    i = stratified_mean_interval([[1.0, 3.0], [4.0, 6.0], [8.0]], "t")
    half = T_975_DF2 * 3.0 / math.sqrt(3)
    assert i.estimate == 5.0 and (i.n, i.strata) == (5, 3)
    assert (i.low, i.high) == pytest.approx((5.0 - half, 5.0 + half), abs=1e-9)


def test_bootstrap_of_one_stratum_matches_scipy():
    x = np.random.default_rng(1).exponential(size=40)
    ours = stratified_mean_interval([x], "bootstrap", resamples=2000, seed=7)
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(7)
    ).confidence_interval
    assert (ours.low, ours.high) == pytest.approx((ref.low, ref.high), rel=1e-12)
    assert ours.estimate == pytest.approx(x.mean())


def test_bootstrap_resamples_within_strata():
    """Two seeds whose means differ by 10: only the within-seed spread may widen the interval."""
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.0, 1.0, 60), rng.normal(10.0, 1.0, 40)
    i = stratified_mean_interval([a, b], "bootstrap", resamples=4000, seed=0)
    # Independent check: the normal interval of (mean a + mean b) / 2 from its standard error.
    se = 0.5 * math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    center = (a.mean() + b.mean()) / 2
    assert i.estimate == pytest.approx(center)
    assert i.high - i.low == pytest.approx(2 * 1.959964 * se, rel=0.1)
    assert i.low < center < i.high
    # Resampling the pooled values instead would mix the seeds: far wider (pooled std ~ 5).
    pooled_width = 2 * 1.96 * np.concatenate([a, b]).std() / 10
    assert i.high - i.low < 0.5 * pooled_width


def test_bootstrap_agrees_with_t_on_a_large_normal_sample():
    x = np.random.default_rng(3).normal(1.0, 2.0, 500)
    boot = stratified_mean_interval([x], "bootstrap", resamples=5000, seed=0)
    t = stratified_mean_interval([x], "t")
    width = t.high - t.low
    assert abs(boot.low - t.low) < 0.06 * width and abs(boot.high - t.high) < 0.06 * width


def test_degenerate_and_empty_input():
    same = stratified_mean_interval([[0.5, 0.5], [0.5]], "bootstrap")
    assert (same.estimate, same.low, same.high) == (0.5, 0.5, 0.5) and same.excludes_zero
    one = stratified_mean_interval([[2.0], [math.inf]], "t")
    assert one.estimate == 2.0 and one.n == 1 and not one.has_interval
    none = stratified_mean_interval([[], [math.nan]], "bootstrap")
    assert none.n == 0 and math.isnan(none.estimate)
    # One value per seed under the bootstrap: nothing to resample within a seed.
    t1 = stratified_mean_interval([[1.0], [3.0]], "t")
    assert t1.has_interval and t1.low < 2.0 < t1.high
    with pytest.raises(ValueError, match="allowed: bootstrap, t"):
        stratified_mean_interval([[1.0, 2.0]], "wald")


def test_fixed_seed_is_reproducible_and_excludes_zero():
    x = np.random.default_rng(4).normal(0.3, 1.0, 200)
    opts = IntervalOptions(resamples=1000, seed=5)
    first, second = opts([x[:100], x[100:]]), opts([x[:100], x[100:]])
    assert first == second
    assert first.excludes_zero == (first.low > 0)
    centered = opts([x - x.mean()])
    assert not centered.excludes_zero
