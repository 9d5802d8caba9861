"""The attack's per-sample CSV: final distance per (method, test-split index), and the best
distance found within each query budget (``d_<budget>`` columns, empty while none was found).

A sample the attack did not fool has distance ``inf``: censored, kept by every reader here.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

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


def read_budget_distances(path: Path | None, method: str = BEST) -> dict[int, dict[int, float]]:
    """Budget -> test-split index -> best distance ``method`` found within that many queries;
    NaN while the sample had not been fooled within it. {} without a file or budget columns."""
    if path is None:
        return {}
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        budgets = [
            int(c[2:]) for c in reader.fieldnames or [] if c.startswith("d_") and c[2:].isdigit()
        ]
        values: dict[int, dict[int, float]] = {b: {} for b in budgets}
        for row in reader:
            if (row.get("method") or BEST) != method:
                continue
            for b in budgets:
                values[b][int(row["index"])] = _float(row[f"d_{b}"])
    return values


def read_distances(path: Path | None, method: str = BEST) -> dict[int, float]:
    """Test-split index -> final distance of ``method`` (``best``: best over methods); {} if none."""
    if path is None:
        return {}
    return dict(_read(Path(path)).get(method, {}))
