"""Statistics of the strength sweep over seeds, and its (exploratory) choice of γ. No torch.

Per mode and γ: the mean over seeds of each metric with its 95% t-interval over seeds. For γ > 0,
the per-seed differences to γ = 0 (all runs of a seed share the plain phase, so they are paired):

* **non-inferiority of accuracy**, target *and* pretraining task: ``H0: acc_γ − acc_0 ≤ −margin``
  by a one-sided paired t over seeds at ``alpha`` (its lower bound must lie above −margin);
* the relative distance gain ``Δ_γ / Δ_0 − 1`` per seed, with its 95% t-interval.

The recommended γ is the largest mean gain among γ with no diverged seed whose two accuracies
are both shown non-inferior. It is picked on the same data it is reported on: exploratory, and
its gain is optimistic (the maximum of noisy estimates).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from pipeline.report.inference import paired_seed_test
from pipeline.report.stats import mean_std

KEYS = ("target_acc", "mean_distance", "pretrain_acc", "sum_sigma_sq_plain", "sum_sigma_sq_folded")
ACCURACIES = ("target_acc", "pretrain_acc")
CONFIDENCE = 0.95


def _values(group: list[dict], key: str) -> dict[int, float]:
    out = {}
    for r in group:
        v = r.get(key)
        out[int(r["seed"])] = math.nan if v is None else float(v)
    return out


def _summary(values, key: str) -> dict:
    """Mean, std and 95% t-interval over seeds (NaN interval with fewer than two)."""
    vals = [v for v in values if math.isfinite(v)]
    mean, std = mean_std(vals)
    n = len(vals)
    half = stats.t.ppf((1 + CONFIDENCE) / 2, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {f"{key}_mean": mean, f"{key}_std": std, f"{key}_low": mean - half,
            f"{key}_high": mean + half}  # fmt: skip


def _paired(group: list[dict], base: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """``key`` of ``group`` and of the baseline on their common seeds."""
    g, b = _values(group, key), _values(base, key)
    seeds = sorted(set(g) & set(b))
    return np.array([g[s] for s in seeds]), np.array([b[s] for s in seeds])


def _noninferior(group, base, key: str, margin: float, alpha: float) -> dict:
    g, b = _paired(group, base, key)
    r = paired_seed_test(g - b, alternative="greater", null=-margin, confidence=1 - 2 * alpha)
    ok = math.isfinite(r.p) and r.p <= alpha
    return {f"{key}_diff": r.estimate, f"{key}_diff_lower": r.low, f"{key}_p": r.p,
            f"{key}_noninferior": bool(ok)}  # fmt: skip


def _gain(group, base) -> dict:
    g, b = _paired(group, base, "mean_distance")
    r = paired_seed_test(g / b - 1, alternative="two-sided", confidence=CONFIDENCE)
    return {"gain": r.estimate, "gain_low": r.low, "gain_high": r.high}


def point(group: list[dict], base: list[dict], margin: float, alpha: float) -> dict:
    """One γ of one mode: summaries over seeds and, for γ > 0, its paired tests against γ = 0."""
    p = {"mode": group[0]["mode"], "strength": group[0]["strength"], "seeds": len(group),
         "diverged": sum(bool(r.get("diverged")) for r in group)}  # fmt: skip
    for k in KEYS:
        p.update(_summary(_values(group, k).values(), k))
    if group is not base:
        for k in ACCURACIES:
            p.update(_noninferior(group, base, k, margin, alpha))
        p.update(_gain(group, base))
    return p


def curves(rows: list[dict], modes, margin: float, alpha: float = 0.05) -> dict[str, list[dict]]:
    """Per mode, one point per γ; γ = 0 (the shared unregularized runs) starts every curve."""
    base = [r for r in rows if r["strength"] == 0]
    out = {}
    for mode in modes:
        points = [point(base, base, margin, alpha)] if base else []
        for strength in sorted({r["strength"] for r in rows if r["mode"] == mode} - {0.0}):
            group = [r for r in rows if r["mode"] == mode and r["strength"] == strength]
            points.append(point(group, base, margin, alpha))
        for p in points:
            p["mode"] = mode
        out[mode] = points
    return out


def eligible(p: dict) -> bool:
    """No diverged seed, and target and pretraining accuracy both shown non-inferior to γ = 0."""
    return (
        p["strength"] > 0
        and p["diverged"] == 0
        and all(p.get(f"{k}_noninferior", False) for k in ACCURACIES)
    )


def recommend(points: list[dict]) -> dict | None:
    """Among eligible γ, the largest mean relative distance gain (exploratory), else None."""
    ok = [p for p in points if eligible(p) and math.isfinite(p["gain"])]
    if not ok:
        return None
    best = max(ok, key=lambda p: p["gain"])
    keys = ("strength", "gain", "gain_low", "gain_high", "target_acc_diff",
            "target_acc_diff_lower", "pretrain_acc_diff", "pretrain_acc_diff_lower")  # fmt: skip
    return {k: best[k] for k in keys}
