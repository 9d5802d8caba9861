"""Descriptive summaries of the report."""

from __future__ import annotations

import math

from pipeline.report.stats import mean_std

T_975_DF4 = 2.7764451051977987  # Student t quantile 0.975 with 4 degrees of freedom (tables)
T_975_DF2 = 4.302652729911275


def test_mean_std_drops_missing_values():
    assert mean_std([1.0, 2.0, 3.0, None, math.nan]) == (2.0, 1.0)
    assert mean_std([4.0]) == (4.0, 0.0)
    assert all(math.isnan(x) for x in mean_std([None]))
