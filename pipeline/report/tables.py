"""Aggregation over seeds and markdown rendering."""

from __future__ import annotations

import math
from collections import defaultdict


def _mean_std(values: list) -> tuple[float, float]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
    return mean, math.sqrt(var)


def aggregate(rows: list[dict], keys: tuple[str, ...], values: tuple[str, ...]) -> list[dict]:
    """Group rows by ``keys``; for each value column give mean and std over the group (seeds)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k) for k in keys)].append(r)
    out = []
    for key, members in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        row = dict(zip(keys, key, strict=True))
        row["n"] = len(members)
        for v in values:
            row[f"{v}_mean"], row[f"{v}_std"] = _mean_std([m.get(v) for m in members])
        out.append(row)
    return out


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
