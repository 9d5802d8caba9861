"""Markdown rendering of the report's tables."""

from __future__ import annotations

import math

from pipeline.report.compare import PairedComparison
from pipeline.report.stats import Interval


def _fmt(value) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """``columns`` is a list of (header, key); ``key`` may be ``a±b`` to show mean ± std."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for _, key in columns:
            if "±" in key:
                m, s = key.split("±")
                cells.append(f"{_fmt(r.get(m, math.nan))} ± {_fmt(r.get(s, math.nan))}")
            else:
                cells.append(_fmt(r.get(key, "")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _interval(i: Interval, signed: bool = False) -> str:
    if not math.isfinite(i.estimate):
        return "–"
    text = f"{i.estimate:+.4g}" if signed else _fmt(i.estimate)
    if i.has_interval:
        text += f" [{i.low:+.4g}, {i.high:+.4g}]" if signed else f" [{_fmt(i.low)}, {_fmt(i.high)}]"
    return text


def comparison_table(comparisons: list[PairedComparison]) -> str:
    """Paired differences with the baseline; ``*`` marks an interval that excludes 0."""
    lines = [
        "| kind | variant | attack | pairs | seeds | Δ − Δ(baseline) [95% CI] | "
        "acc − acc(baseline) [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        mark = " *" if c.delta.excludes_zero else ""
        acc_mark = " *" if c.accuracy.excludes_zero else ""
        lines.append(
            f"| {c.kind} | {c.variant} | {c.method} | {c.delta.n} | {c.delta.strata} | "
            f"{_interval(c.delta, signed=True)}{mark} | "
            f"{_interval(c.accuracy, signed=True)}{acc_mark} |"
        )
    return "\n".join(lines)
