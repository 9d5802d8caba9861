"""The attack's per-sample CSV: final distance per (method, test-split index), and the best
distance found within each query budget (``d_<budget>`` columns, empty while none was found).

A sample the attack did not fool has distance ``inf``: censored, kept by every reader here.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError

BEST = "best"  # the rows holding each sample's best distance over all methods
REQUIRED = ("index", "distance")


def _float(text: str) -> float:
    try:
        return float(text) if text != "" else math.nan
    except ValueError:
        return math.nan


def _read(path: Path) -> dict[str, dict[int, float]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise PipelineError(
                f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(columns)})"
            )
        out: dict[str, dict[int, float]] = {}
        for line, row in enumerate(reader, start=2):
            try:
                index = int(row["index"])
            except ValueError:
                msg = f"{path}, line {line}: index {row['index']!r} is not an integer"
                raise PipelineError(msg) from None
            # A file without a method column holds one attack's rows: they are also the best.
            method = row.get("method") or BEST
            out.setdefault(method, {})[index] = _float(row["distance"])
    return out


def read_budget_means(path: Path | None, method: str = BEST) -> dict[int, float]:
    """Budget -> mean over ``method``'s samples of the best distance found within it; NaN where
    some sample had not been fooled within that budget (its distance is not yet measured)."""
    if path is None:
        return {}
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        budgets = [
            int(c[2:]) for c in reader.fieldnames or [] if c.startswith("d_") and c[2:].isdigit()
        ]
        values: dict[int, list[float]] = {b: [] for b in budgets}
        for row in reader:
            if (row.get("method") or BEST) != method:
                continue
            for b in budgets:
                values[b].append(_float(row[f"d_{b}"]))
    return {
        b: float(np.mean(v)) if v and np.isfinite(v).all() else math.nan for b, v in values.items()
    }


def read_distances(path: Path | None, method: str = BEST) -> dict[int, float]:
    """Test-split index -> final distance of ``method`` (``best``: best over methods); {} if none."""
    if path is None:
        return {}
    return dict(_read(Path(path)).get(method, {}))
