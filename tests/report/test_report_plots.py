"""The overlay charts ``dvc plots show`` draws: the report's plot data checked against the raw
per-sample distances and histories it was read from, and DVC rendering each chart with one
colour per variant (``.dvc/plots`` templates, ``dvc.yaml``'s top-level ``plots``)."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from pipeline.dvcyaml import render
from pipeline.report.plot_data import ACCURACY_VS_DELTA, DELTA_VS_QUERIES, SIGMA_OVER_TRAINING
from pipeline.stages import report
from tests.conftest import REPO
from tests.report.synthetic import BUDGETS
from tests.report.test_report_stage import SEEDS, _cfg, build_tree


@pytest.fixture
def reported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_tree(tmp_path / "metrics")
    report.run(_cfg())
    return tmp_path


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _tangent_means(metrics: Path) -> dict[str, float]:
    """Per attacked model (its run id): the mean of its fooled samples' tangent distances,
    from ``samples.csv`` itself."""
    means = {}
    for samples in (metrics / "attack").rglob("samples.csv"):
        kind_dir = samples.relative_to(metrics / "attack").parts[0]
        run_id = str(samples.parent.relative_to(metrics / "attack" / kind_dir))
        d = [float(r["distance"]) for r in _rows(samples)
             if r["method"] == "tangent" and r["distance"] not in ("", "inf")]  # fmt: skip
        means[run_id] = sum(d) / len(d)
    return means


def test_accuracy_against_delta_has_every_attacked_model_at_its_own_mean(reported):
    rows = _rows(ACCURACY_VS_DELTA)
    truth = _tangent_means(reported / "metrics")
    assert len(rows) == len(truth) == (4 + 2) * len(SEEDS)  # finetuned and readout models
    for row in rows:
        assert math.isclose(float(row["mean_delta"]), truth[row["run"]], rel_tol=1e-9), row
    variants = {r["variant"] for r in rows}
    assert "finetune digits_5to9 rep_spectral/none" in variants and len(variants) == 6
    by_variant = defaultdict(int)
    for r in rows:
        by_variant[r["variant"]] += 1
    assert set(by_variant.values()) == {len(SEEDS)}  # one point per pretraining seed


def test_delta_against_queries_falls_to_the_final_mean_at_the_largest_budget(reported):
    rows = _rows(DELTA_VS_QUERIES)
    truth = _tangent_means(reported / "metrics")
    per_run = defaultdict(dict)
    for r in rows:
        per_run[r["run"]][int(r["queries"])] = float(r["mean_delta"])
    assert set(per_run) == set(truth)
    for run, curve in per_run.items():
        assert sorted(curve) == list(BUDGETS)
        values = [curve[b] for b in BUDGETS]
        assert values == sorted(values, reverse=True), run  # more queries, smaller Δ
        assert math.isclose(values[-1], truth[run], rel_tol=1e-9)


def test_sigma_over_training_has_every_pretraining_run_and_epoch(reported):
    rows = _rows(SIGMA_OVER_TRAINING)
    runs = {r["run"] for r in rows}
    assert runs == {f"pretrain/{v}/seed{s}" for v in ("none", "rep_spectral") for s in SEEDS}
    for r in rows:  # the synthetic histories hold 3 + epoch
        assert float(r["sum_sigma_max_sq"]) == 3.0 + float(r["epoch"])


def test_dvc_draws_each_overlay_with_one_colour_per_variant(reported):
    run = [sys.executable, "-m", "dvc"]
    subprocess.run([*run, "init", "--no-scm", "-q"], cwd=reported, check=True)
    shutil.copytree(REPO / ".dvc" / "plots", reported / ".dvc" / "plots")
    plots = render().split("\nplots:\n", 1)[1]  # the top-level plots of the real dvc.yaml
    (reported / "dvc.yaml").write_text("plots:\n" + plots)
    out = subprocess.run([*run, "plots", "show", "--json"], cwd=reported, check=True,
                         capture_output=True, text=True)  # fmt: skip
    shown = json.loads(out.stdout)["data"]
    for path, n_variants in ((ACCURACY_VS_DELTA, 6), (DELTA_VS_QUERIES, 6),
                             (SIGMA_OVER_TRAINING, 2)):  # fmt: skip
        (chart,) = shown[str(path)]
        spec = chart["content"]
        assert spec["encoding"]["color"]["field"] == "variant", path
        values = spec["data"]["values"]
        assert len({v["variant"] for v in values}) == n_variants, path
        assert len(values) == len(_rows(path)), path
