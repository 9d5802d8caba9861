"""Descriptive summaries of the report: mean ± std over replication units.

Inference (tests, intervals at the unit of replication, Holm, non-inferiority) lives in
:mod:`pipeline.report.inference`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for one value); None and non-finite dropped."""
    a = np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))])
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0
