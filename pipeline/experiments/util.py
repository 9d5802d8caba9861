"""Small helpers with no heavy imports (the summary stage uses them too)."""

from __future__ import annotations

import math
import resource
from collections.abc import Iterable

import numpy as np
import torch


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value), NaNs dropped."""
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (imports included), for the cost report."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 1)
