"""The summary states a claim as reproduced or not from the numbers it is given."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.experiments import summary as S

SEEDS = range(6)
RNG = np.random.default_rng(0)


def _noise(scale: float = 0.01) -> float:
    return float(RNG.normal(0, scale))


def xor_runs(order: dict[str, float], margin: dict[str, float] | None = None) -> list[dict]:
    """Synthetic XOR runs: mean Δ per variant from ``order``, plus fixed σ and volume data."""
    margin = margin or order
    rows = []
    for wd in (0.0, 1e-4):
        for v in ("none", "ll_spectral", "rep_spectral"):
            for seed in SEEDS:
                feat_drop = {"none": 0.0, "ll_spectral": -0.5, "rep_spectral": -2.0}[v]
                head = {"none": 0.0, "ll_spectral": -2.0, "rep_spectral": 0.5}[v]
                vol = {"none": 3.0, "ll_spectral": 2.5, "rep_spectral": 1.0}[v]
                d = order[v] + _noise()
                rows.append({
                    "weight_decay": wd, "variant": v, "seed": seed,
                    "mean_distance": d, "distances": [d] * 4,
                    "mean_grid_margin": margin[v] + _noise(), "grid_margins": [margin[v]] * 4,
                    "centre_volume_median": vol + _noise(),
                    "sigma_branch/backbone.net.1": 8.0, "sigma_final/backbone.net.1":
                        8.0 + feat_drop + _noise(),
                    "sigma_branch/head": 8.0, "sigma_final/head": 8.0 + head + _noise(),
                })  # fmt: skip
    return rows


def _verdicts(claims):
    return {c.key: c.verdict for c in claims}


def test_xor_claims_reproduced_when_rep_spectral_is_largest():
    m = {"runs": xor_runs({"none": 0.7, "ll_spectral": 0.72, "rep_spectral": 0.9}),
         "feature_layers": ["backbone.net.1"]}  # fmt: skip
    v = _verdicts(S.xor_claims(m, min_t=2.0))
    assert v == {k: S.REPRODUCED for k in v}


def test_xor_claims_not_reproduced_when_rep_spectral_is_smallest():
    order = {"none": 0.9, "ll_spectral": 0.8, "rep_spectral": 0.6}
    m = {"runs": xor_runs(order), "feature_layers": ["backbone.net.1"]}
    v = _verdicts(S.xor_claims(m, min_t=2.0))
    assert v["xor_fig2"] == S.NOT and v["xor_fig2_exact"] == S.NOT
    assert v["xor_fig3b"] == S.REPRODUCED  # the volume data still say so


def test_mixed_and_noisy_evidence():
    # rep beats none clearly but ties ll within noise: partly / weak, never "reproduced".
    runs = xor_runs({"none": 0.5, "ll_spectral": 0.899, "rep_spectral": 0.9})
    claim = S.xor_claims({"runs": runs}, min_t=2.0)[0]
    assert claim.verdict in (S.PARTLY, S.WEAK)
    c = S.Comparison("x", [1.0, 1.2, 0.9], [1.0, 1.0, 1.0])
    assert c.verdict(min_t=2.0) == S.WEAK  # right sign, t < 2
    assert S.Comparison("x", [], []).verdict(2.0) == S.MISSING
    assert S.Claim("k", "s", "t").judge(2.0).verdict == S.MISSING


def test_a_clearly_contradicted_comparison_makes_the_claim_not_reproduced():
    clear_yes = S.Comparison("yes", [2.0, 2.1, 1.9], [1.0, 1.0, 1.0])
    clear_no = S.Comparison("no", [0.5, 0.6, 0.4], [1.0, 1.0, 1.0])
    weak_no = S.Comparison("weak no", [0.9, 1.2, 0.8], [1.0, 1.0, 1.0])
    assert clear_no.verdict(2.0) == S.CONTRADICTED and weak_no.verdict(2.0) == S.NOT
    claim = S.Claim("k", "s", "t", [clear_yes, clear_no]).judge(2.0)
    assert claim.verdict == S.NOT
    assert S.Claim("k", "s", "t", [clear_yes, weak_no]).judge(2.0).verdict == S.PARTLY


def test_comparison_statistics():
    c = S.Comparison("rep − none", [2.0, 3.0, 4.0], [1.0, 1.0, 1.0])
    assert c.mean_diff == pytest.approx(2.0)
    assert c.t == pytest.approx(2.0 / (1.0 / math.sqrt(3)))
    assert c.wins == 3 and c.relative == pytest.approx(2.0)
    assert "+200.0%" in c.describe() and "3/3 seeds" in c.describe()
    assert S.Comparison("lower", [1.0, 1.0], [2.0, 2.0], sign=-1).verdict(2.0) == S.REPRODUCED


def digits_runs(acc: dict, dist: dict, ro_acc: dict, ro_dist: dict) -> list[dict]:
    return [
        {"variant": v, "seed": s, "test_acc": acc[v] + _noise(0.001),
         "mean_distance": dist[v] + _noise(0.002), "readout_test_acc": ro_acc[v] + _noise(0.001),
         "readout_mean_distance": ro_dist[v] + _noise(0.002)}
        for v in ("none", "ll_spectral", "rep_spectral")
        for s in SEEDS
    ]  # fmt: skip


def test_digits_claims_both_ways():
    paper_like = digits_runs(
        acc={"none": 0.98, "ll_spectral": 0.95, "rep_spectral": 0.97},
        dist={"none": 0.6, "ll_spectral": 0.62, "rep_spectral": 0.7},
        ro_acc={"none": 0.98, "ll_spectral": 0.97, "rep_spectral": 0.978},
        ro_dist={"none": 0.6, "ll_spectral": 0.62, "rep_spectral": 0.7},
    )
    v = _verdicts(S.digits_claims({"runs": paper_like}, min_t=2.0, tolerance=0.01))
    assert v == {k: S.REPRODUCED for k in v}

    opposite = digits_runs(
        acc={"none": 0.95, "ll_spectral": 0.98, "rep_spectral": 0.96},
        dist={"none": 0.7, "ll_spectral": 0.62, "rep_spectral": 0.6},
        ro_acc={"none": 0.98, "ll_spectral": 0.97, "rep_spectral": 0.95},
        ro_dist={"none": 0.7, "ll_spectral": 0.62, "rep_spectral": 0.6},
    )
    v = _verdicts(S.digits_claims({"runs": opposite}, min_t=2.0, tolerance=0.01))
    assert v == {k: S.NOT for k in v}


def test_readout_accuracy_tolerance():
    # rep 0.5 points below none: within a 1-point tolerance, outside a 0.1-point one.
    runs = digits_runs(
        acc=dict.fromkeys(("none", "ll_spectral", "rep_spectral"), 0.97),
        dist=dict.fromkeys(("none", "ll_spectral", "rep_spectral"), 0.6),
        ro_acc={"none": 0.98, "ll_spectral": 0.98, "rep_spectral": 0.975},
        ro_dist=dict.fromkeys(("none", "ll_spectral", "rep_spectral"), 0.6),
    )
    loose = _verdicts(S.digits_claims({"runs": runs}, 2.0, tolerance=0.01))
    strict = _verdicts(S.digits_claims({"runs": runs}, 2.0, tolerance=0.001))
    assert loose["digits_fig6_acc"] == S.REPRODUCED and strict["digits_fig6_acc"] == S.NOT


def _diag(dim90: int, acc1: float, noise: float | None) -> dict:
    return {
        "effective_dimension": {"0.9": dim90, "0.99": dim90 + 5},
        "compression_accuracy": {"1": acc1, "10": 0.9},
        "noise_accuracy": None if noise is None else {"0.0": 0.95, "0.4": noise, "1.0": noise},
        "variance_ratio": [0.5, 1.0],
        "weights": [{"layer": "conv", "effective_rank": 2.0, "effective_sparsity": 5.0}],
    }


def test_diagnostics_claims_single_run_are_never_clear():
    good = S.diagnostics_claims({"none": _diag(10, 0.4, 0.5), "lr": _diag(3, 0.6, 0.7)})
    assert {c.verdict for c in good} == {S.WEAK}
    bad = S.diagnostics_claims({"none": _diag(3, 0.6, 0.7), "lr": _diag(10, 0.4, 0.5)})
    assert {c.verdict for c in bad} == {S.NOT}
    skipped = S.diagnostics_claims({"none": _diag(10, 0.4, None), "lr": _diag(3, 0.6, None)})
    assert skipped[2].verdict == S.MISSING and "skipped" in skipped[2].measured
    assert {c.verdict for c in S.diagnostics_claims({})} == {S.MISSING}


def test_render_states_each_claim_and_verdict():
    m = {"runs": xor_runs({"none": 0.7, "ll_spectral": 0.72, "rep_spectral": 0.9})}
    claims = S.xor_claims(m, 2.0) + S.diagnostics_claims({})
    text = S.render(claims, {"Cost": S.cost_section({"xor": 120.0, "digits_mlp": 300.0}, 30)},
                    ["a deviation"])  # fmt: skip
    for c in claims:
        assert f"`{c.key}`" in text and c.statement in text
    assert "| `xor_fig2` | rep-spectral F.1, Fig. 2 | **reproduced** |" in text
    assert "total 7.0 min, within the 30-minute budget" in text
    assert "* a deviation" in text
    assert "OVER" in S.cost_section({"xor": 3600.0}, 30)


def _with_readout_only(rows: list[dict], distance: float, feature_change: float) -> list[dict]:
    """Add readout_spectral runs: given mean Δ and σ change of the feature layer after burn-in."""
    extra = []
    for r in rows:
        if r["variant"] == "none":
            d = distance + _noise()
            extra.append({**r, "variant": "readout_spectral", "mean_distance": d,
                          "mean_grid_margin": d + _noise(),
                          "sigma_final/backbone.net.1": 8.0 + feature_change + _noise()})  # fmt: skip
    return rows + extra


def test_readout_only_variant_reproducing_the_paper_ordering():
    rows = xor_runs({"none": 0.7, "ll_spectral": 0.95, "rep_spectral": 0.9})
    rows = _with_readout_only(rows, distance=0.75, feature_change=0.3)
    m = {"runs": rows, "feature_layers": ["backbone.net.1"]}
    v = _verdicts(S.xor_claims(m, min_t=2.0))
    assert v["xor_readout_only"] == S.REPRODUCED
    assert v["xor_fig2"] != S.REPRODUCED  # all-layers ll still beats rep
    text = S.readout_only_section(m, None)
    assert "**Yes**" in text and "rep 0.9" in text and "readout-only 0.75" in text


def test_readout_only_variant_not_reproducing_and_absent():
    rows = xor_runs({"none": 0.7, "ll_spectral": 0.95, "rep_spectral": 0.8})
    rows = _with_readout_only(rows, distance=0.9, feature_change=-3.0)
    m = {"runs": rows, "feature_layers": ["backbone.net.1"]}
    assert _verdicts(S.xor_claims(m, min_t=2.0))["xor_readout_only"] == S.NOT
    assert "**No**" in S.readout_only_section(m, None)
    plain = {"runs": xor_runs({"none": 0.7, "ll_spectral": 0.7, "rep_spectral": 0.8})}
    assert "xor_readout_only" not in _verdicts(S.xor_claims(plain, min_t=2.0))
    assert "not run" in S.readout_only_section(plain, None)


def _curve(mode: str, accs: list[float], dists: list[float]) -> list[dict]:
    return [
        {"mode": mode, "strength": g, "seeds": 1, "target_acc_mean": a, "target_acc_std": 0.0,
         "mean_distance_mean": d, "mean_distance_std": 0.0}
        for g, a, d in zip([0.0, 0.01, 0.1], accs, dists, strict=True)
    ]  # fmt: skip


def test_sweep_tradeoff_answer():
    from pipeline.experiments.strength_sweep import best_tradeoff

    plain = _curve("plain", [0.90, 0.89, 0.80], [1.0, 1.05, 1.5])  # +50% only at -10 points
    folded = _curve("folded", [0.90, 0.885, 0.85], [1.0, 1.2, 1.6])  # +20% at -1.5 points
    best = {"plain": best_tradeoff(plain, 0.02), "folded": best_tradeoff(folded, 0.02)}
    assert best["plain"]["strength"] == 0.01 and best["plain"]["gain"] == pytest.approx(0.05)
    assert best["folded"]["strength"] == 0.01 and best["folded"]["gain"] == pytest.approx(0.2)
    assert best_tradeoff(_curve("x", [0.9, 0.5, 0.4], [1.0, 2.0, 3.0]), 0.02) is None
    m = {
        "settings": {"accuracy_budget": 0.02, "distance_gain": 0.1, "seeds": [0], "epochs": 12,
                     "burn_in": 6, "n_attack": 32, "attack": {"iterations": 10}},
        "curves": {"plain": plain, "folded": folded},
        "best": best,
    }  # fmt: skip
    text = S.sweep_section(m)
    assert "Yes, for folded**" in text and "+20.0% mean Δ" in text
    best["folded"] = None
    assert "? No**" in S.sweep_section(m)


def test_the_shared_helpers_load_no_torch():
    import subprocess
    import sys

    code = "import sys, pipeline.experiments.util; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
