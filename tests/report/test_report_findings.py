"""Ranking agreement between attacks, computed from synthetic metrics."""

from __future__ import annotations

import pytest
from scipy import stats

from pipeline.report.collect import collect_results
from pipeline.report.findings import rank_variants, ranking_sentence
from pipeline.report.variants import summarize_variants
from tests.report.synthetic import write_model

T = "t1"
IDX = range(20)


def _write(metrics, backbone, tangent: float, hsja: float | None, acc: float = 0.9, reg="none"):
    dist = {"tangent": {i: tangent + 0.01 * i for i in IDX}}
    if hsja is not None:
        dist["hsja"] = {i: hsja + 0.01 * i for i in IDX}
    write_model(metrics, "finetune", T, backbone, dist, regularizer=reg, seed=0, acc=acc)


def _variants(metrics):
    r = collect_results(metrics)
    models = r["models"]
    return summarize_variants(models, r["methods"], r["budgets"], "tangent"), None


def test_rank_variants_orders_by_mean_and_skips_missing():
    assert rank_variants({"a": 1.0, "b": 3.0, "c": float("nan"), "d": None, "e": 2.0}) == [
        "b",
        "e",
        "a",
    ]


def test_ranking_sentence_flips_when_one_models_delta_is_swapped(tmp_path):
    for backbone, d in (("none", 1.0), ("rep", 1.5), ("ll", 1.2)):
        _write(tmp_path, backbone, d, d + 0.1)
    variants, _ = _variants(tmp_path)
    same = ranking_sentence("finetune", T, variants, ["tangent", "hsja"])
    assert "the ranking of the 3 variants by mean Δ is the same under tangent and hsja" in same
    assert "rep/none > ll/none > none/none" in same

    # hsja now finds rep/none closest to the boundary: its ranking changes.
    _write(tmp_path, "rep", 1.5, 0.5)
    variants, _ = _variants(tmp_path)
    differs = ranking_sentence("finetune", T, variants, ["tangent", "hsja"])
    assert "differs between the attacks" in differs
    assert "tangent ranks the variants rep/none > ll/none > none/none" in differs
    assert "hsja ranks them ll/none > none/none > rep/none (different" in differs
    tau = stats.kendalltau([1.5, 1.2, 1.0], [0.5, 1.3, 1.1]).statistic
    assert tau == pytest.approx(-1 / 3)
    assert f"Kendall τ = {tau:.4g}" in differs


def test_ranking_sentence_with_one_method(tmp_path):
    for backbone, d in (("none", 1.0), ("rep", 1.5)):
        _write(tmp_path, backbone, d, None)
    variants, _ = _variants(tmp_path)
    text = ranking_sentence("finetune", T, variants, ["tangent"])
    assert text == (
        f"Finetuning on {T}: only one attack method (tangent) was run, "
        "so there is no ranking to compare."
    )
