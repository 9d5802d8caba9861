"""The summary states a claim as reproduced or not from the numbers it is given."""

from __future__ import annotations

import math

import numpy as np

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


XOR_KEYS = ["xor_fig2", "xor_fig2_exact", "xor_fig3a_margin", "xor_fig3a_ll", "xor_fig3b",
            "xor_fig4"]  # fmt: skip
DIGITS_KEYS = ["digits_fig5_acc", "digits_fig5_tradeoff", "digits_fig5_distance",
               "digits_fig6_acc", "digits_fig6_distance"]  # fmt: skip


def _verdicts(claims):
    return {c.key: c.verdict for c in S.judge(claims, 0.05)}


def _xor(order, margin=None):
    return {"runs": xor_runs(order, margin), "feature_layers": ["backbone.net.1"]}


def test_xor_claims_reproduced_when_rep_spectral_is_largest():
    claims = S.xor_claims(_xor({"none": 0.7, "ll_spectral": 0.72, "rep_spectral": 0.9}))
    assert [c.key for c in claims] == XOR_KEYS  # every claim, in order: not vacuously "all"
    v = _verdicts(claims)
    assert all(v[k] == S.REPRODUCED for k in XOR_KEYS)
    fig2 = claims[0]
    # The primary is declared: rep − none and rep − ll at both weight decays, all four parts.
    assert [c.label for c in fig2.primary.parts] == [
        "wd=0 Δ rep − none",
        "wd=0.0001 Δ rep − none",
        "wd=0 Δ rep − ll",
        "wd=0.0001 Δ rep − ll",
    ]
    assert all(c.n == len(SEEDS) for c in fig2.primary.parts)
    assert fig2.p_primary < 1e-6
    fig4 = claims[-1]
    assert len(fig4.subclaims) == 3 and "primary test passed" in fig4.reason


def test_xor_claims_not_reproduced_when_rep_spectral_is_smallest():
    v = _verdicts(S.xor_claims(_xor({"none": 0.9, "ll_spectral": 0.8, "rep_spectral": 0.6})))
    assert v["xor_fig2"] == S.CONTRADICTED and v["xor_fig2_exact"] == S.CONTRADICTED
    assert v["xor_fig3b"] == S.REPRODUCED  # the volume data still say so


def test_a_tie_with_one_baseline_is_not_reproduced_however_clear_the_other():
    # rep beats none clearly but ties ll within noise: the declared conjunction fails.
    runs = xor_runs({"none": 0.5, "ll_spectral": 0.9, "rep_spectral": 0.9})
    claim = S.judge(S.xor_claims({"runs": runs}), 0.05)[0]
    assert claim.key == "xor_fig2" and claim.verdict in (S.NOT, S.CONTRADICTED)
    assert claim.verdict != S.PARTLY


def test_xor_fig4_partly_when_the_sub_claims_fail():
    # ll does not shrink the readout here: the σ primary (rep lowers the feature layer) holds.
    rows = xor_runs({"none": 0.7, "ll_spectral": 0.72, "rep_spectral": 0.9})
    for r in rows:
        if r["variant"] == "ll_spectral":
            r["sigma_final/head"] = 8.0 + 1.0 + _noise()
    claim = {c.key: c for c in S.judge(S.xor_claims({"runs": rows}), 0.05)}["xor_fig4"]
    assert claim.verdict == S.PARTLY
    assert "not shown: ll Δσ(readout)" in claim.reason
    assert "sub-claims passed: rep Δσ(readout), ll Δσ(feature) − rep Δσ(feature)" in claim.reason


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
    claims = S.digits_claims({"runs": paper_like}, tolerance=0.01)
    assert [c.key for c in claims] == DIGITS_KEYS
    v = _verdicts(claims)
    assert all(v[k] == S.REPRODUCED for k in DIGITS_KEYS)

    opposite = digits_runs(
        acc={"none": 0.95, "ll_spectral": 0.98, "rep_spectral": 0.96},
        dist={"none": 0.7, "ll_spectral": 0.62, "rep_spectral": 0.6},
        ro_acc={"none": 0.98, "ll_spectral": 0.97, "rep_spectral": 0.95},
        ro_dist={"none": 0.7, "ll_spectral": 0.62, "rep_spectral": 0.6},
    )
    v = _verdicts(S.digits_claims({"runs": opposite}, tolerance=0.01))
    assert all(v[k] == S.CONTRADICTED for k in DIGITS_KEYS)


def test_readout_accuracy_non_inferiority():
    # rep 0.5 points below none: non-inferior within a 1-point margin, not within 0.1 point.
    runs = digits_runs(
        acc=dict.fromkeys(("none", "ll_spectral", "rep_spectral"), 0.97),
        dist=dict.fromkeys(("none", "ll_spectral", "rep_spectral"), 0.6),
        ro_acc={"none": 0.98, "ll_spectral": 0.98, "rep_spectral": 0.975},
        ro_dist=dict.fromkeys(("none", "ll_spectral", "rep_spectral"), 0.6),
    )
    loose = _verdicts(S.digits_claims({"runs": runs}, tolerance=0.01))
    strict = _verdicts(S.digits_claims({"runs": runs}, tolerance=0.001))
    assert loose["digits_fig6_acc"] == S.REPRODUCED
    assert strict["digits_fig6_acc"] == S.CONTRADICTED  # clearly more than 0.1 point worse
    # Equal means but seeds scattered by ±3 points: "does not hurt" is not shown.
    for r in runs:
        if r["variant"] == "rep_spectral":
            r["readout_test_acc"] = 0.98 + (0.03 if r["seed"] % 2 else -0.03)
    assert _verdicts(S.digits_claims({"runs": runs}, tolerance=0.01))["digits_fig6_acc"] == S.NOT


def _diag(dim90: int, acc1: float, noise: float | None) -> dict:
    return {
        "effective_dimension": {"0.9": dim90, "0.99": dim90 + 5},
        "compression_accuracy": {"1": acc1, "10": 0.9},
        "noise_accuracy": None if noise is None else {"0.0": 0.95, "0.4": noise, "1.0": noise},
        "variance_ratio": [0.5, 1.0],
        "weights": [{"layer": "conv", "effective_rank": 2.0, "effective_sparsity": 5.0}],
    }


def test_diagnostics_claims_single_run_get_no_verdict():
    for lr, none in (((3, 0.6, 0.7), (10, 0.4, 0.5)), ((10, 0.4, 0.5), (3, 0.6, 0.7))):
        claims = S.judge(S.diagnostics_claims({"none": _diag(*none), "lr": _diag(*lr)}))
        assert [c.key for c in claims] == ["lr_fig2", "lr_table5", "lr_table4"]
        assert {c.verdict for c in claims} == {S.DESCRIPTIVE}  # whichever way the sign goes
        assert all(math.isnan(c.p_primary) for c in claims)
    skipped = S.judge(
        S.diagnostics_claims({"none": _diag(10, 0.4, None), "lr": _diag(3, 0.6, None)})
    )
    assert skipped[2].verdict == S.MISSING and "skipped" in skipped[2].measured
    assert {c.verdict for c in S.judge(S.diagnostics_claims({}))} == {S.MISSING}


def test_render_states_each_claim_and_verdict():
    claims = S.judge(
        S.xor_claims(_xor({"none": 0.7, "ll_spectral": 0.72, "rep_spectral": 0.9}))
        + S.diagnostics_claims({"none": _diag(10, 0.4, 0.5), "lr": _diag(3, 0.6, 0.7)})
    )
    text = S.render(claims, {"Cost": S.cost_section({"xor": 120.0, "digits_mlp": 300.0}, 30)},
                    ["a deviation"])  # fmt: skip
    assert len(claims) == 9
    for c in claims:
        assert f"`{c.key}`" in text and c.statement in text
    row = next(line for line in text.splitlines() if line.startswith("| `xor_fig2` |"))
    assert "Δ rep − ll > 0 and Δ rep − none > 0" in row and row.endswith("**reproduced** |")
    assert (
        "| `lr_fig2` | LR paper, Fig. 2 | dim90 lr − none < 0 | n/a | **descriptive, one run** |"
        in text
    )
    assert "*Sub-claim* rep Δσ(readout)" in text and "Holm-adjusted p" in text
    assert r"| \|rep − none\| − \|ll − none\| (margin) > 0 |" in text  # escaped in the table
    assert "9 claims: 6 reproduced, 3 descriptive, one run" in text
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


def _readout_claim(claims):
    return next(c for c in claims if c.key == "xor_readout_only")


def test_readout_only_variant_reproducing_the_paper_ordering():
    rows = xor_runs({"none": 0.7, "ll_spectral": 0.95, "rep_spectral": 0.9})
    rows = _with_readout_only(rows, distance=0.75, feature_change=0.3)
    m = {"runs": rows, "feature_layers": ["backbone.net.1"]}
    claims = S.judge(S.xor_claims(m))
    v = {c.key: c.verdict for c in claims}
    assert v["xor_readout_only"] == S.REPRODUCED
    assert v["xor_fig2"] != S.REPRODUCED  # all-layers ll still beats rep
    text = S.readout_only_section(_readout_claim(claims), m, None)
    first = text.splitlines()[0]  # the ranking of the means at weight decay 0
    assert (
        first.index("ll (all layers) 0.9")
        < first.index("> rep 0.")
        < first.index("> readout-only 0.7")
    )
    assert "**Yes**" in text


def test_readout_only_variant_not_reproducing_and_absent():
    rows = xor_runs({"none": 0.7, "ll_spectral": 0.95, "rep_spectral": 0.8})
    rows = _with_readout_only(rows, distance=0.9, feature_change=-3.0)
    m = {"runs": rows, "feature_layers": ["backbone.net.1"]}
    claim = _readout_claim(S.judge(S.xor_claims(m)))
    assert claim.verdict == S.CONTRADICTED
    assert "**No, the opposite**" in S.readout_only_section(claim, m, None)
    # Right sign of the means but within noise: the section does not say yes.
    rows = xor_runs({"none": 0.7, "ll_spectral": 0.95, "rep_spectral": 0.8})
    rows = _with_readout_only(rows, distance=0.8, feature_change=0.3)
    claim = _readout_claim(S.judge(S.xor_claims({"runs": rows})))
    assert claim.verdict == S.NOT
    assert "**No (not shown)**" in S.readout_only_section(claim, {"runs": rows}, None)
    plain = {"runs": xor_runs({"none": 0.7, "ll_spectral": 0.7, "rep_spectral": 0.8})}
    assert "xor_readout_only" not in {c.key for c in S.xor_claims(plain)}
    assert "not run" in S.readout_only_section(None, plain, None)


def test_the_shared_helpers_load_no_torch():
    import subprocess
    import sys

    code = "import sys, pipeline.experiments.util; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
