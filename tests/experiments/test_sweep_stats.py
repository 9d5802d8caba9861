"""The strength sweep's intervals over seeds and its restricted, exploratory choice of γ."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pipeline.experiments import render, sweep_stats

RNG = np.random.default_rng(7)
SEEDS = (0, 1, 2, 3)


def _row(seed, mode, strength, target, pretrain, distance, diverged=False) -> dict:
    if diverged:
        target = pretrain = distance = math.nan
    else:
        target += RNG.normal(0, 0.002)
        pretrain += RNG.normal(0, 0.001)
        distance *= 1 + RNG.normal(0, 0.01)
    return {"seed": seed, "mode": mode, "strength": strength, "target_acc": target,
            "pretrain_acc": pretrain, "mean_distance": distance, "sum_sigma_sq_plain": 10.0,
            "sum_sigma_sq_folded": 20.0, "diverged": diverged}  # fmt: skip


def sweep_rows(seeds=SEEDS) -> list[dict]:
    """γ = 0.1 buys the largest Δ in both modes, but collapses an accuracy or diverges."""
    rows = []
    for s in seeds:
        rows += [
            _row(s, "none", 0.0, 0.90, 0.996, 1.0),
            _row(s, "plain", 0.01, 0.895, 0.995, 1.15),
            _row(s, "plain", 0.1, 0.89, 0.675, 1.8),  # pretraining accuracy collapsed
            _row(s, "folded", 0.01, 0.899, 0.996, 1.05),
            _row(s, "folded", 0.03, 0.75, 0.99, 1.4),  # target accuracy collapsed
            _row(s, "folded", 0.1, 0.90, 0.99, 2.0, diverged=s == 0),
        ]
    return rows


def test_intervals_over_seeds_match_scipy():
    rows = sweep_rows()
    curves = sweep_stats.curves(rows, ("plain", "folded"), margin=0.02)
    base = curves["plain"][0]
    acc = [r["target_acc"] for r in rows if r["strength"] == 0]
    low, high = stats.t.interval(0.95, len(acc) - 1, loc=np.mean(acc), scale=stats.sem(acc))
    assert (base["target_acc_low"], base["target_acc_high"]) == pytest.approx((low, high))
    assert base["strength"] == 0 and base["seeds"] == 4 and "gain" not in base
    # Paired by seed: the one-sided 95% lower bound of pretrain acc(γ) − acc(0), from scipy.
    p = curves["plain"][1]
    d = [a["pretrain_acc"] - b["pretrain_acc"]
         for a in rows if a["mode"] == "plain" and a["strength"] == 0.01
         for b in rows if b["strength"] == 0 and b["seed"] == a["seed"]]  # fmt: skip
    bound = np.mean(d) - stats.t.ppf(0.95, 3) * stats.sem(d)
    assert p["pretrain_acc_diff_lower"] == pytest.approx(bound)
    assert p["pretrain_acc_noninferior"] and p["target_acc_noninferior"]


def test_recommended_gamma_never_collapsed_or_diverged():
    curves = sweep_stats.curves(sweep_rows(), ("plain", "folded"), margin=0.02)
    by = {(p["mode"], p["strength"]): p for pts in curves.values() for p in pts}
    assert not by[("plain", 0.1)]["pretrain_acc_noninferior"]  # 0.996 → 0.675
    assert not by[("folded", 0.03)]["target_acc_noninferior"]
    assert by[("folded", 0.1)]["diverged"] == 1
    plain, folded = (sweep_stats.recommend(curves[m]) for m in ("plain", "folded"))
    assert plain["strength"] == 0.01 and plain["gain"] == pytest.approx(0.15, abs=0.02)
    assert folded["strength"] == 0.01  # not 0.03 (target collapsed), not 0.1 (diverged)
    # One seed: nothing can be shown non-inferior, so nothing is recommended.
    one = sweep_stats.curves(sweep_rows(seeds=(0,)), ("plain", "folded"), margin=0.02)
    assert all(sweep_stats.recommend(pts) is None for pts in one.values())


def _metrics(rows, seeds) -> dict:
    return {
        "settings": {"accuracy_budget": 0.02, "distance_gain": 0.1, "seeds": list(seeds),
                     "modes": ["plain", "folded"], "epochs": 12, "burn_in": 6, "n_attack": 32,
                     "attack": {"iterations": 10}},
        "runs": rows,
    }  # fmt: skip


def test_sweep_section_says_the_choice_is_exploratory():
    text = render.sweep_section(_metrics(sweep_rows(), SEEDS))
    assert (
        "Exploratory (γ chosen on the same data" in text
        and "at CPU scale? Yes, for plain**" in text
    )
    assert "plain: γ = 0.01, mean Δ +1" in text and "folded: γ = 0.01" in text
    assert "gain ≥ 10% not shown" in text  # folded's +5%
    row = next(line for line in text.splitlines() if line.startswith("| plain | 0.1 |"))
    assert "| 0.675 [" in row  # the collapsed pretraining accuracy sits beside its γ
    one = render.sweep_section(_metrics(sweep_rows(seeds=(0,)), (0,)))
    assert "CPU scale? Not shown**" in one and "no γ > 0 is shown non-inferior" in one
