"""Inference of the report at the level of training runs (pure numpy/scipy; no torch, no I/O).

The unit of replication is the *pretraining seed*: it fixes the initialisation and the data order of
every variant alike, so variants are paired by seed. Finetuning seeds ("cells") and test samples are
nested inside it. Tests and intervals here treat the seeds as the sample of the population the claim
is about; resampling test samples with the trained networks held fixed (``samples_only_interval``)
answers a narrower, conditional question and is kept only to be reported as such.

Failed attacks (sample not fooled within the query budget) are *censored*: their distance is +inf,
meaning "at least as large as anything found". They are never dropped (see ``unit_statistic``).
See ``docs/methods.md`` ("Inference") for the methods and their checks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

STATISTICS = ("log_ratio_mean_delta", "log_ratio_median_delta")
TESTS = ("t", "wilcoxon")
ALTERNATIVES = ("greater", "less", "two-sided")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (Holm 1979), in the order given.

    With the m non-NaN p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of
    p_(i) is max_{j <= i} min(1, (m - j + 1) p_(j)); rejecting where it is <= alpha controls the
    family-wise error at alpha under any dependence. NaN stays NaN and does not count in m.
    """
    p = np.asarray([float(x) for x in pvalues], dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
        out[order] = np.maximum.accumulate(scaled)  # monotone: never below an earlier step
    return [float(x) for x in out]


@dataclass(frozen=True)
class TestResult:
    """A paired test over replication units with its interval; see ``paired_test``."""

    __test__ = False  # not a pytest class despite the name

    statistic: str
    alternative: str
    test: str  # "t" or "wilcoxon"
    estimate: float  # mean over units of the unit statistics
    low: float  # two-sided `confidence` interval for the estimate (NaN if < 2 units)
    high: float
    p: float  # p-value of the declared alternative against `null`, over units (NaN if < 2 units)
    units: int  # replication units (pretraining seeds) used
    samples: int = 0  # shared samples, all units and cells together
    censored_variant: int = 0  # samples with Δ = inf in the variant arm (kept, never dropped)
    censored_baseline: int = 0
    interval: str = ""  # one phrase saying what the interval is and what it is conditional on


def _check(alternative: str, test: str, confidence: float) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _signed_rank_counts(n: int) -> np.ndarray:
    """counts[s] = number of subsets of {1..n} with sum s: the exact null law of W+ times 2^n."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for k in range(1, n + 1):
        counts[k:] = counts[k:] + counts[:-k].copy()
    return counts


def walsh_interval(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Exact distribution-free interval for the centre of a symmetric law (Hodges-Lehmann).

    The interval [W_(k), W_(N+1-k)] of the N = n(n+1)/2 sorted Walsh averages (x_i + x_j)/2,
    i <= j, where k is the largest integer with P(W+ <= k - 1) <= (1 - confidence)/2 under the
    exact signed-rank null law: the inversion of the exact two-sided Wilcoxon test (Hollander &
    Wolfe, *Nonparametric Statistical Methods*, ch. 3). Its coverage is >= ``confidence``. When no
    such k >= 1 exists (n <= 5 at 95%: even [min, max] has only 1 - 2/2^n) the bounds are
    (-inf, inf): no finite interval reaches the requested confidence.
    """
    x = np.sort(np.asarray(x, dtype=float))
    n = x.size
    if n < 2:
        return math.nan, math.nan
    cdf = np.cumsum(_signed_rank_counts(n)) / 2.0**n
    k = int(np.searchsorted(cdf, (1.0 - confidence) / 2.0, side="right"))  # #{c: cdf[c] <= a/2}
    if k < 1:
        return -math.inf, math.inf
    i, j = np.triu_indices(n)
    walsh = np.sort((x[i] + x[j]) / 2.0)
    return float(walsh[k - 1]), float(walsh[walsh.size - k])


def paired_seed_test(
    diffs: Sequence[float],
    *,
    alternative: str = "greater",
    test: str = "t",
    null: float = 0.0,
    confidence: float = 0.95,
) -> TestResult:
    """Test one value per replication unit (e.g. per-seed accuracy difference or log ratio).

    * ``t``: one-sample Student t of ``diffs`` against ``null`` (``scipy.stats.ttest_1samp``) with
      the two-sided t-interval mean ± t_{(1+c)/2, n-1} s/sqrt(n).
    * ``wilcoxon``: signed-rank test of ``diffs - null`` (``scipy.stats.wilcoxon``, method "auto":
      exact null law when n <= 50 without ties or zeros, else the normal approximation with tie
      correction); interval: exact Walsh-average (Hodges-Lehmann) bounds, see ``walsh_interval``
      (infinite when no finite interval reaches ``confidence``, e.g. n <= 5 at 95%).

    ``estimate`` is the mean of the values in both cases. NaN values are dropped (a unit without a
    value); ±inf are kept: the rank test handles them, the t-test then gives NaN p and bounds.
    With fewer than two units, ``p``, ``low`` and ``high`` are NaN. ``statistic`` is "paired".
    """
    _check(alternative, test, confidence)
    x = np.asarray([float(v) for v in diffs], dtype=float)
    x = x[~np.isnan(x)]
    n = x.size
    est = float(x.mean()) if n else math.nan
    nan = math.nan
    if n < 2:
        return TestResult(
            "paired", alternative, test, est, nan, nan, nan, n, interval="none (< 2 units)"
        )
    if test == "t":
        if not np.all(np.isfinite(x)):
            return TestResult(
                "paired",
                alternative,
                test,
                est,
                nan,
                nan,
                nan,
                n,
                interval="none (non-finite unit values)",
            )
        p = float(stats.ttest_1samp(x, popmean=null, alternative=alternative).pvalue)
        half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
        low, high = est - half, est + half
        phrase = f"{confidence:.0%} t-interval over {n} seeds"
    else:
        d = x - null
        if np.all(d == 0):
            p = 1.0  # no evidence either way; scipy refuses all-zero input
        else:
            p = float(stats.wilcoxon(d, alternative=alternative, method="auto").pvalue)
        low, high = walsh_interval(x, confidence)
        phrase = f"exact {confidence:.0%} Walsh-average (Hodges-Lehmann) interval over {n} seeds"
        if not math.isfinite(low):
            phrase += " (unbounded: too few seeds for this confidence)"
    return TestResult("paired", alternative, test, est, low, high, p, n, interval=phrase)


# ---------------------------------------------------------------- unit statistics


@dataclass(frozen=True)
class Unit:
    """One pretraining seed: its cells (finetuning seeds), each a (variant, baseline) pair of
    aligned per-sample distance arrays on the samples both attacked; inf = censored."""

    seed: int
    cells: tuple[tuple[np.ndarray, np.ndarray], ...]

    def __post_init__(self) -> None:
        cells = []
        for k, (v, b) in enumerate(self.cells):
            v = np.asarray(v, dtype=float).ravel()
            b = np.asarray(b, dtype=float).ravel()
            if v.shape != b.shape:
                raise ValueError(
                    f"seed {self.seed} cell {k}: arms not aligned, {v.size} vs {b.size}"
                )
            if np.isnan(v).any() or np.isnan(b).any():
                raise ValueError(f"seed {self.seed} cell {k}: NaN distance (censored is +inf)")
            cells.append((v, b))
        object.__setattr__(self, "cells", tuple(cells))


def _check_statistic(statistic: str) -> None:
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")


def _cell_statistics(v: np.ndarray, b: np.ndarray, statistic: str) -> np.ndarray:
    """Per-cell statistic of each row of aligned (R, m) arrays (rows: resamples of one cell)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if statistic == "log_ratio_median_delta":
            # np.median sorts inf last: finite while fewer than half of an arm are censored
            return np.log(np.median(v, axis=1) / np.median(b, axis=1))
        fv, fb = np.isfinite(v), np.isfinite(b)
        top = np.maximum(np.where(fv, v, -np.inf).max(axis=1), np.where(fb, b, -np.inf).max(axis=1))
        top = np.where(np.isfinite(top), top, np.nan)[:, None]  # no finite distance: no value
        mv = np.where(fv, v, top).mean(axis=1)
        mb = np.where(fb, b, top).mean(axis=1)
        return np.log(mv / mb)


def _mean_over_cells(per_cell: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN cells (a cell without a value); NaN if none has one."""
    ok = ~np.isnan(per_cell)
    n = ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(ok, per_cell, 0.0).sum(axis=-1) / n
    return np.where(n > 0, s, np.nan)


def unit_statistic(unit: Unit, statistic: str = "log_ratio_mean_delta") -> float:
    """Mean over the unit's cells of the per-cell statistic log(variant / baseline).

    Censoring (Δ = +inf: the attack found no adversarial within its budget), never dropped:

    * ``log_ratio_mean_delta``: log(mean Δ_variant / mean Δ_baseline) where every censored value,
      in either arm, is replaced by the largest finite distance observed in that cell (either
      arm): the sample counts as at least as hard as the hardest one measured. A sample censored
      in both arms counts with the fill value in both. It is a restricted mean with the cap at the
      cell's largest measurement; it can only understate how much harder censored samples are.
      Censoring one more variant sample never lowers the statistic (nor one more baseline sample
      raises it) *unless that sample's own finite value was larger than every remaining finite
      distance of its cell*: then the fill falls below it. No finite fill computed from the
      observed data can avoid this (a single-sample cell: the fill cannot exceed an arbitrarily
      large unseen value), so the exception is documented rather than hidden.
    * ``log_ratio_median_delta``: inf kept as +inf. An arm's median is exact while fewer than half
      of its samples are censored, else +inf; the cell value is then +inf (variant arm), -inf
      (baseline arm) or NaN (both arms).

    A cell with no finite distance at all (or no samples) has no value (NaN) and is left out of
    the mean over cells; a unit none of whose cells has a value is NaN. +inf and -inf cells in one
    unit give NaN.
    """
    _check_statistic(statistic)
    vals = [_cell_statistics(v[None], b[None], statistic)[0] for v, b in unit.cells if v.size]
    return float(_mean_over_cells(np.asarray(vals, dtype=float))) if vals else math.nan


def _resampled_unit_statistics(
    unit: Unit, count: int, statistic: str, rng: np.random.Generator
) -> np.ndarray:
    """``count`` independent unit statistics, samples drawn with replacement within each cell."""
    per_cell = []
    for v, b in unit.cells:
        if not v.size:
            continue
        idx = rng.integers(0, v.size, size=(count, v.size))
        if statistic == "log_ratio_mean_delta" and np.isfinite(v).all() and np.isfinite(b).all():
            # fast path, same value: nothing censored, nothing to fill
            per_cell.append(np.log(v[idx].mean(axis=1) / b[idx].mean(axis=1)))
        else:
            per_cell.append(_cell_statistics(v[idx], b[idx], statistic))
    if not per_cell:
        return np.full(count, np.nan)
    return _mean_over_cells(np.stack(per_cell, axis=-1))


def _counts(units: Sequence[Unit]) -> tuple[int, int, int]:
    samples = sum(v.size for u in units for v, _ in u.cells)
    cv = sum(int(np.isinf(v).sum()) for u in units for v, _ in u.cells)
    cb = sum(int(np.isinf(b).sum()) for u in units for _, b in u.cells)
    return samples, cv, cb


def _widening(n: int, confidence: float) -> float:
    """t/normal quantile ratio times sqrt(n/(n-1)) (the bootstrap's variance of a mean of n is
    (n-1)/n times the unbiased one): makes the percentile half-widths those of a t-interval."""
    q = (1 + confidence) / 2
    return float(stats.t.ppf(q, n - 1) / stats.norm.ppf(q) * math.sqrt(n / (n - 1)))


def hierarchical_bootstrap(
    units: Sequence[Unit], *, statistic: str, resamples: int, seed: int
) -> np.ndarray:
    """``resamples`` bootstrap replicates of the mean of unit statistics: units drawn with
    replacement, then samples with replacement within each cell of each drawn unit (a unit drawn
    twice gets two independent within-cell resamples)."""
    rng = np.random.default_rng(seed)
    n = len(units)
    drawn = rng.integers(0, n, size=(resamples, n))
    slots = np.empty((resamples, n))
    for k, unit in enumerate(units):
        where = drawn == k
        slots[where] = _resampled_unit_statistics(unit, int(where.sum()), statistic, rng)
    with np.errstate(invalid="ignore"):
        return slots.mean(axis=1)


def paired_test(
    units: Sequence[Unit],
    *,
    statistic: str = "log_ratio_mean_delta",
    alternative: str = "greater",
    test: str = "t",
    null: float = 0.0,
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
) -> TestResult:
    """Variant vs baseline over pretraining seeds (the replication unit, paired by seed).

    ``estimate``: mean over units of ``unit_statistic``. ``p``: the declared test over the unit
    statistics (``paired_seed_test``). Interval: hierarchical bootstrap (``hierarchical_bootstrap``)
    with a small-sample correction: the percentile distances from the estimate, θ̂ - q_lo and
    q_hi - θ̂, are widened by t_{(1+c)/2, n-1} / z_{(1+c)/2} · sqrt(n/(n-1)), so that when the
    seed-to-seed variance dominates it has the width of the t-interval over seeds while keeping
    the bootstrap's asymmetry and the within-seed sampling noise; the plain percentile interval
    over 5-10 units under-covers (see the tests and ``docs/methods.md``). Units whose statistic
    is NaN are left out. Fewer than two units: ``low``, ``high``, ``p`` are NaN. Deterministic for
    a given ``seed``.
    """
    _check_statistic(statistic)
    _check(alternative, test, confidence)
    kept = [(u, unit_statistic(u, statistic)) for u in units]
    units = [u for u, x in kept if not math.isnan(x)]
    values = [x for _, x in kept if not math.isnan(x)]
    base = paired_seed_test(
        values, alternative=alternative, test=test, null=null, confidence=confidence
    )
    samples, cv, cb = _counts(units)
    n = len(units)
    low = high = math.nan
    phrase = "none (< 2 seeds)"
    if n >= 2:
        est = base.estimate
        boot = hierarchical_bootstrap(units, statistic=statistic, resamples=resamples, seed=seed)
        a = (1 - confidence) / 2
        f = _widening(n, confidence)
        # A replicate whose resampled cells have no finite distance has no value (NaN): left out
        # and counted, so one such draw does not empty the interval.
        missing = int(np.isnan(boot).sum())
        with np.errstate(invalid="ignore"):  # inf unit values (median statistic) give inf/NaN
            if missing < boot.size:
                q_lo, q_hi = np.nanquantile(boot, [a, 1 - a])
                low, high = float(est - f * (est - q_lo)), float(est + f * (q_hi - est))
        phrase = (
            f"{confidence:.0%} hierarchical bootstrap over {n} pretraining seeds and their samples "
            "(t-widened percentile): about runs of this training recipe, not conditional on "
            "these trained networks"
        ) + (f"; {missing} of {boot.size} replicates without a value left out" if missing else "")
    return TestResult(
        statistic, alternative, test, base.estimate, low, high, base.p, n, samples, cv, cb, phrase
    )


def samples_only_interval(
    units: Sequence[Unit],
    *,
    statistic: str = "log_ratio_mean_delta",
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
) -> tuple[float, float]:
    """The old, conditional interval: percentile bootstrap of the mean of unit statistics that
    resamples samples within cells with the units (trained networks) held fixed. It describes
    test-sample noise given these networks only; report it as "conditional on these trained
    networks", never as the interval of the claim."""
    _check_statistic(statistic)
    units = [u for u in units if not math.isnan(unit_statistic(u, statistic))]
    if not units:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    slots = np.stack(
        [_resampled_unit_statistics(u, resamples, statistic, rng) for u in units], axis=1
    )
    a = (1 - confidence) / 2
    with np.errstate(invalid="ignore"):
        q_lo, q_hi = np.quantile(slots.mean(axis=1), [a, 1 - a])
    return float(q_lo), float(q_hi)


# ---------------------------------------------------------------- non-inferiority, power, budget


@dataclass(frozen=True)
class NonInferiority:
    """One-sided test that the variant is not worse than the baseline by more than ``margin``."""

    estimate: float
    lower: float  # one-sided (1 - alpha) lower confidence bound (t over units)
    margin: float
    units: int
    passed: bool  # passed iff lower > -margin


def non_inferiority(diffs: Sequence[float], margin: float, alpha: float = 0.05) -> NonInferiority:
    """diffs: per-unit accuracy difference variant - baseline (NaN units dropped). The bound is
    mean - t_{1-alpha, n-1} s / sqrt(n); with fewer than two units it is NaN and the test fails."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x = np.asarray([float(v) for v in diffs], dtype=float)
    x = x[~np.isnan(x)]
    n = x.size
    est = float(x.mean()) if n else math.nan
    if n < 2:
        return NonInferiority(est, math.nan, margin, n, False)
    lower = est - float(stats.t.ppf(1 - alpha, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return NonInferiority(est, lower, margin, n, bool(lower > -margin))


def power_paired_t(
    n_units: int, effect: float, sd: float, alpha: float = 0.05, alternative: str = "greater"
) -> float:
    """Exact power of the one-sample (paired) t-test over ``n_units`` with true mean ``effect`` and
    unit sd ``sd``: the statistic follows a noncentral t with n-1 degrees of freedom and
    noncentrality effect·sqrt(n)/sd (``scipy.stats.nct``). NaN for fewer than two units."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    if n_units < 2:
        return math.nan
    df, ncp = n_units - 1, effect * math.sqrt(n_units) / sd
    if alternative == "greater":
        return float(stats.nct.sf(stats.t.ppf(1 - alpha, df), df, ncp))
    if alternative == "less":
        return float(stats.nct.cdf(stats.t.ppf(alpha, df), df, ncp))
    c = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(c, df, ncp) + stats.nct.cdf(-c, df, ncp))


@dataclass(frozen=True)
class Convergence:
    """Whether the mean distance has settled with the query budget."""

    budget: int  # the last budget
    previous: int | None  # the largest budget <= budget/2 (None: no earlier budget)
    drop: float  # (m_previous - m_last) / m_previous; NaN when not computable
    converged: bool  # drop < threshold


def convergence(means_by_budget: Mapping[int, float], threshold: float = 0.05) -> Convergence:
    """Relative fall of the mean Δ from the largest budget <= half the last one to the last one.

    Not converged when no such earlier budget exists or either mean is NaN/inf (some sample not
    fooled yet at that budget, so the mean is not measured) or the earlier mean is not positive.
    """
    if not means_by_budget:
        raise ValueError("no budgets")
    budgets = sorted(int(b) for b in means_by_budget)
    last = budgets[-1]
    earlier = [b for b in budgets if 2 * b <= last]
    if not earlier:
        return Convergence(last, None, math.nan, False)
    prev = earlier[-1]
    m_prev, m_last = float(means_by_budget[prev]), float(means_by_budget[last])
    if not (math.isfinite(m_prev) and math.isfinite(m_last)) or m_prev <= 0:
        return Convergence(last, prev, math.nan, False)
    drop = (m_prev - m_last) / m_prev
    return Convergence(last, prev, drop, bool(drop < threshold))
