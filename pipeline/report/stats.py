"""Summary statistics of the report: mean ± std over seeds and 95% intervals (via scipy.stats).

Data come in *strata*, one array per seed (the samples one model attacked, or per-sample paired
differences). The estimate is the mean over strata of each stratum's mean, so every seed weighs the
same, as in the "mean ± std over seeds" tables. Two intervals (see ``docs/methods.md``):

* ``bootstrap``: percentile bootstrap (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993)
  that resamples values *within* each stratum (``scipy.stats.bootstrap`` with ``paired=False``
  over the strata), with a fixed seed so the report is reproducible;
* ``t``: Student's t-interval (``scipy.stats.ttest_1samp``) of the stratum means when there are at
  least two strata (seeds are the replication unit), else of the values of the single stratum.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

INTERVALS = ("bootstrap", "t")


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for one value); None and non-finite dropped."""
    a = np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))])
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided interval; ``low``/``high`` are NaN when none can be given."""

    estimate: float
    low: float
    high: float
    n: int  # values, all strata together
    strata: int

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def excludes_zero(self) -> bool:
        return self.has_interval and (self.low > 0 or self.high < 0)


def _finite_strata(strata: Sequence[Iterable[float]]) -> list[np.ndarray]:
    out = []
    for s in strata:
        a = np.asarray(list(s), dtype=float)
        a = a[np.isfinite(a)]
        if a.size:
            out.append(a)
    return out


def _mean_of_means(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean([s.mean(axis=axis) for s in samples], axis=0)


def _rng_kwarg(seed: int) -> dict:
    """scipy >= 1.15 calls the generator ``rng``; older versions ``random_state``."""
    name = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def stratified_mean_interval(
    strata: Sequence[Iterable[float]],
    method: str = "bootstrap",
    *,
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
) -> Interval:
    """Mean over strata of the stratum means, with a ``confidence`` interval (see module doc).

    Non-finite values and empty strata are dropped. With fewer than two values in all, or an
    interval the method cannot give (a t-interval of one stratum mean), the bounds are NaN; with
    all values equal, the interval is that value.
    """
    if method not in INTERVALS:
        raise ValueError(f"interval method {method!r}; allowed: {', '.join(INTERVALS)}")
    data = _finite_strata(strata)
    n = int(sum(a.size for a in data))
    if not data:
        return Interval(math.nan, math.nan, math.nan, 0, 0)
    estimate = float(_mean_of_means(*data))
    nan = Interval(estimate, math.nan, math.nan, n, len(data))
    pooled = np.concatenate(data)
    if n < 2:
        return nan
    if np.all(pooled == pooled[0]):  # degenerate: scipy would return NaN or warn
        return Interval(estimate, estimate, estimate, n, len(data))
    if method == "t":
        values = np.array([a.mean() for a in data]) if len(data) >= 2 else data[0]
        if values.size < 2:
            return nan
        if np.all(values == values[0]):
            return Interval(estimate, estimate, estimate, n, len(data))
        ci = stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    else:
        ci = stats.bootstrap(
            tuple(data),
            _mean_of_means,
            paired=False,
            vectorized=True,
            n_resamples=resamples,
            batch=max(1, min(resamples, 2_000_000 // n)),  # bounds memory for large samples
            confidence_level=confidence,
            method="percentile",
            **_rng_kwarg(seed),
        ).confidence_interval
    return Interval(estimate, float(ci.low), float(ci.high), n, len(data))


@dataclass(frozen=True)
class IntervalOptions:
    """How the report's intervals are computed (``report`` section of params.yaml)."""

    method: str = "bootstrap"
    confidence: float = 0.95
    resamples: int = 9999
    seed: int = 0

    def __call__(self, strata: Sequence[Iterable[float]]) -> Interval:
        return stratified_mean_interval(
            strata,
            self.method,
            confidence=self.confidence,
            resamples=self.resamples,
            seed=self.seed,
        )

    def describe(self) -> str:
        """One sentence for the report saying how the intervals were computed."""
        level = f"{self.confidence:.0%}"
        if self.method == "t":
            return (
                f"Intervals are {level} Student t-intervals: over the seeds' means when a variant "
                "has two or more seeds, else over the samples of the single seed."
            )
        return (
            f"Intervals are {level} percentile-bootstrap intervals ({self.resamples} resamples, "
            f"seed {self.seed}) that resample the samples within each seed; seeds are held fixed."
        )
