"""Synthetic metrics trees in the attack stage's schema, for the report tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

BUDGETS = (1000, 2000, 5000, 10000)


def _stats(d: np.ndarray) -> dict:
    d = d[np.isfinite(d)]
    n = d.size
    half = 1.96 * d.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
    return {
        "mean_distance": float(d.mean()),
        "median_distance": float(np.median(d)),
        "std_distance": float(d.std(ddof=1)) if n > 1 else 0.0,
        "ci95_low": float(d.mean() - half),
        "ci95_high": float(d.mean() + half),
        "success_rate": 1.0,
        "mean_queries": 1000.0,
    }


def _at(d: float, budget: int) -> float:
    """A distance that shrinks as the budget grows and reaches ``d`` at the largest budget."""
    return d * (1.0 + 1000.0 / budget - 1000.0 / BUDGETS[-1])


def write_model(
    metrics: Path,
    kind: str,
    target: str,
    backbone: str,
    distances: dict[str, dict[int, float]],
    *,
    regularizer: str | None = None,
    seed: int | None = None,
    acc: float = 0.9,
) -> str:
    """A trained model's summary plus its attack summary and samples.csv; returns the run id.

    ``distances``: method -> test-split index -> final distance (every method the same indices).
    """
    if kind == "finetune":
        run_id = f"{target}/{backbone}/{regularizer}/seed{seed}"
        own = {"target": target, "backbone": backbone, "regularizer": regularizer, "seed": seed}
    else:
        run_id = f"{target}/{backbone}"
        own = {"target": target, "backbone": backbone}
    run_dir = metrics / kind / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps({**own, "test_acc": acc, "epochs": 2}))

    methods = list(distances)
    indices = sorted(distances[methods[0]])
    best = {i: min(distances[m][i] for m in methods) for i in indices}
    by_method = {}
    for m in methods:
        d = np.array([distances[m][i] for i in indices])
        by_method[m] = {
            **_stats(d),
            "at_queries": {str(b): float(np.mean([_at(x, b) for x in d])) for b in BUDGETS},
        }
    summary = {
        "kind": kind,
        "target": target,
        "backbone": backbone,
        "regularizer": regularizer if kind == "finetune" else None,
        "seed": seed if kind == "finetune" else None,
        "test_acc": acc,
        "n_samples": len(indices),
        "methods": methods,
        "budgets": list(BUDGETS),
        **_stats(np.array([best[i] for i in indices])),
        "by_method": by_method,
    }
    attack_dir = metrics / "attack" / kind / run_id
    attack_dir.mkdir(parents=True, exist_ok=True)
    (attack_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    columns = ["index", "label", "method", "distance", "queries", "success"]
    columns += [f"d_{b}" for b in BUDGETS]
    with (attack_dir / "samples.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i in indices:
            for m, d in [(m, distances[m][i]) for m in methods] + [("best", best[i])]:
                writer.writerow([i, i % 5, m, d, 1000, True, *(_at(d, b) for b in BUDGETS)])
    return run_id


def write_pretrain(metrics: Path, variant: str, acc: float = 0.8) -> None:
    out = metrics / "pretrain" / variant
    out.mkdir(parents=True, exist_ok=True)
    summary = {"variant": variant, "test_acc": acc, "sum_sigma_max_sq": 3.0, "max_sigma_max": 1.5}
    (out / "summary.json").write_text(json.dumps({**summary, "epochs": 2}))
    history = [{"epoch": e, "sum_sigma_max_sq": 3.0 + e} for e in (1, 2)]
    (out / "history.json").write_text(json.dumps(history))
