"""Per-sample rows and summary statistics of attack results (the attack stage's outputs).

Per sample, the "best" of several methods is the smallest final distance any of them found (the
tightest upper bound on the sample's true distance to the boundary); its queries are those of
the method that found it. Distances at a query budget are the best found within that many
queries of the sample (see :class:`~pipeline.attacks.boundary.AttackResult`).
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.attacks.boundary import AttackResult

BEST = "best"


def distance_stats(distances: np.ndarray, success: np.ndarray, queries: np.ndarray) -> dict:
    """Mean, median, std and a normal-approximation 95% CI of the mean over fooled samples;
    the success rate, mean queries and ``censored`` (samples not fooled within the budget: their
    Δ is at least anything measured, and the report keeps them) over all samples."""
    d = distances[success]
    n = int(d.size)
    std = float(d.std(ddof=1)) if n > 1 else 0.0
    mean = float(d.mean()) if n else math.nan
    half = 1.96 * std / math.sqrt(n) if n > 1 else math.nan
    return {
        "mean_distance": mean,
        "median_distance": float(np.median(d)) if n else math.nan,
        "std_distance": std,
        "ci95_low": mean - half,
        "ci95_high": mean + half,
        "success_rate": float(success.mean()) if success.size else math.nan,
        "censored": int((~success.astype(bool)).sum()),
        "mean_queries": float(queries.mean()) if queries.size else math.nan,
    }


def _arrays(result: AttackResult) -> dict[str, np.ndarray]:
    return {
        "distance": result.distances.double().cpu().numpy(),
        "queries": result.queries.cpu().numpy(),
        "success": result.success.cpu().numpy(),
        "at": result.at_queries.double().cpu().numpy(),
    }


def best_of(results: dict[str, AttackResult]) -> dict[str, np.ndarray]:
    """Per sample the smallest final distance over methods, its method's queries, and the
    smallest distance at each budget over methods."""
    per = [_arrays(r) for r in results.values()]
    dist = np.stack([p["distance"] for p in per])
    winner = dist.argmin(axis=0)
    cols = np.arange(dist.shape[1])
    return {
        "distance": dist[winner, cols],
        "queries": np.stack([p["queries"] for p in per])[winner, cols],
        "success": np.stack([p["success"] for p in per]).any(axis=0),
        "at": np.stack([p["at"] for p in per]).min(axis=0),
    }


def _at_budgets(arrays: dict[str, np.ndarray], budgets: list[int]) -> dict[str, float]:
    """Mean best distance within each budget over the successful samples; NaN (null in JSON)
    while any of them has not yet found an adversarial point within that budget."""
    at = arrays["at"][arrays["success"]]
    return {
        str(b): float(at[:, k].mean()) if at.size and np.isfinite(at[:, k]).all() else math.nan
        for k, b in enumerate(budgets)
    }


def summarize(results: dict[str, AttackResult], budgets: list[int]) -> dict:
    """Headline statistics over the per-sample best, and the same per method under
    ``by_method`` with ``at_queries`` (mean distance within each budget)."""
    best = best_of(results)
    by_method = {}
    for name, result in results.items():
        a = _arrays(result)
        stats = distance_stats(a["distance"], a["success"], a["queries"])
        by_method[name] = {**stats, "at_queries": _at_budgets(a, budgets)}
    return {
        "n_samples": int(best["distance"].size),
        "methods": list(results),
        "budgets": list(budgets),
        **distance_stats(best["distance"], best["success"], best["queries"]),
        "by_method": by_method,
    }


def sample_rows(
    indices: np.ndarray, labels: np.ndarray, results: dict[str, AttackResult], budgets: list[int]
) -> list[dict]:
    """Long format: per sample one row per method, then one ``best`` row; ``d_<budget>`` is
    empty while no adversarial point had been found within that budget."""
    tables = [(name, _arrays(r)) for name, r in results.items()] + [(BEST, best_of(results))]
    rows = []
    for i, (index, label) in enumerate(zip(indices.tolist(), labels.tolist(), strict=True)):
        for name, a in tables:
            row = {
                "index": int(index),
                "label": int(label),
                "method": name,
                "distance": float(a["distance"][i]),
                "queries": int(a["queries"][i]),
                "success": bool(a["success"][i]),
            }
            for k, b in enumerate(budgets):
                v = float(a["at"][i, k])
                row[f"d_{b}"] = v if math.isfinite(v) else ""
            rows.append(row)
    return rows
