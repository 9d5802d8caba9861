"""Synthetic metrics trees in the attack stage's schema, for the report tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

BUDGETS = (1000, 2000, 4000, 8000)


def _stats(d: np.ndarray) -> dict:
    censored = int((~np.isfinite(d)).sum())
    d = d[np.isfinite(d)]
    n = d.size
    half = 1.96 * d.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
    return {
        "mean_distance": float(d.mean()),
        "median_distance": float(np.median(d)),
        "std_distance": float(d.std(ddof=1)) if n > 1 else 0.0,
        "ci95_low": float(d.mean() - half),
        "ci95_high": float(d.mean() + half),
        "success_rate": 1.0 - censored / (d.size + censored),
        "censored": censored,
        "mean_queries": 1000.0,
    }


def _at(d: float, budget: int, settle: float = 40.0) -> float | str:
    """A distance that shrinks as the budget grows and reaches ``d`` at the largest budget:
    by ``settle``/budget of itself (the default drops 0.5% over the last doubling: converged);
    empty (not fooled yet) for a censored sample."""
    if not np.isfinite(d):
        return ""
    return d * (1.0 + settle / budget - settle / BUDGETS[-1])


def write_model(
    metrics: Path,
    kind: str,
    target: str,
    backbone: str,
    distances: dict[str, dict[int, float]],
    *,
    regularizer: str | None = None,
    seed: int | None = None,
    backbone_seed: int = 0,
    acc: float = 0.9,
    settle: float = 40.0,
) -> str:
    """A trained model's summary plus its attack summary and samples.csv; returns the run id.

    ``distances``: method -> test-split index -> final distance (every method the same indices).
    """
    own = {"target": target, "backbone": backbone, "backbone_seed": backbone_seed}
    if kind == "finetune":
        run_id = f"{target}/{backbone}/backbone_seed{backbone_seed}/{regularizer}/seed{seed}"
        own = {**own, "regularizer": regularizer, "seed": seed}
    else:
        run_id = f"{target}/{backbone}/backbone_seed{backbone_seed}"
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
            "at_queries": {
                str(b): float(np.mean([_at(x, b, settle) or np.nan for x in d])) for b in BUDGETS
            },
        }
    summary = {
        "kind": kind,
        "target": target,
        "backbone": backbone,
        "backbone_seed": backbone_seed,
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
                at = [_at(d, b, settle) for b in BUDGETS]
                writer.writerow([i, i % 5, m, d, 1000, bool(np.isfinite(d)), *at])
    return run_id


def write_pretrain(metrics: Path, variant: str, acc: float = 0.8, seed: int = 0) -> None:
    out = metrics / "pretrain" / variant / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "variant": variant,
        "seed": seed,
        "test_acc": acc,
        "sum_sigma_max_sq": 3.0,
        "max_sigma_max": 1.5,
    }
    (out / "summary.json").write_text(json.dumps({**summary, "epochs": 2}))
    history = [{"epoch": e, "sum_sigma_max_sq": 3.0 + e} for e in (1, 2)]
    (out / "history.json").write_text(json.dumps(history))
