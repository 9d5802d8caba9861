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
from collections.abc import Sequence
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
