"""Paired comparisons: which samples pair, and the paired difference on a hand-computed case."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.report.collect import collect_results
from pipeline.report.compare import compare_with_baseline, paired_differences
from pipeline.report.stats import IntervalOptions
from tests.report.synthetic import write_model

T = "t1"
T_OPTS = IntervalOptions(method="t")


def _ft(metrics, backbone, seed, tangent, hsja=None, acc=0.9, reg="none"):
    dist = {"tangent": tangent, **({"hsja": hsja} if hsja else {})}
    write_model(metrics, "finetune", T, backbone, dist, regularizer=reg, seed=seed, acc=acc)


def _models(metrics, backbone, reg="none"):
    return [
        m
        for m in collect_results(metrics)["models"]
        if (m.backbone, m.regularizer) == (backbone, reg)
    ]


def test_paired_difference_is_hand_computed(tmp_path):
    # Seed 0: common indices 2, 3 -> 2.5 - 2, 4 - 3. Seed 1: 5, 6, 7 -> 1, 2, 3.
    _ft(tmp_path, "none", 0, {1: 1.0, 2: 2.0, 3: 3.0}, acc=0.90)
    _ft(tmp_path, "rep", 0, {2: 2.5, 3: 4.0, 4: 9.0}, acc=0.88)
    _ft(tmp_path, "none", 1, {5: 1.0, 6: 1.0, 7: 1.0}, acc=0.92)
    _ft(tmp_path, "rep", 1, {5: 2.0, 6: 3.0, 7: 4.0}, acc=0.91)
    _ft(tmp_path, "rep", 2, {1: 5.0}, acc=0.5)  # no baseline for seed 2: not paired

    diffs = paired_differences(_models(tmp_path, "rep"), _models(tmp_path, "none"))
    assert [d.tolist() for d in diffs] == [[0.5, 1.0], [1.0, 2.0, 3.0]]

    results = collect_results(tmp_path)
    (best, tangent) = compare_with_baseline(results["models"], results["methods"], T_OPTS)
    assert (best.variant, best.baseline, best.method) == ("rep/none", "none/none", "best")
    assert tangent.method == "tangent" and tangent.delta == best.delta
    # Mean over seeds of the seed means (0.75 and 2), not the pooled mean 1.5.
    assert best.delta.estimate == pytest.approx(1.375)
    assert (best.delta.n, best.delta.strata) == (5, 2)
    # Accuracy: differences -0.02 and -0.01 over the two common seeds.
    assert best.accuracy.estimate == pytest.approx(-0.015)
    assert best.accuracy.strata == 2 and best.accuracy.has_interval


def test_each_method_pairs_its_own_distances(tmp_path):
    idx = range(6)
    _ft(tmp_path, "none", 0, {i: 1.0 for i in idx}, {i: 3.0 for i in idx})
    _ft(tmp_path, "rep", 0, {i: 1.5 + 0.1 * i for i in idx}, {i: 2.0 for i in idx})
    results = collect_results(tmp_path)
    assert results["methods"] == ["tangent", "hsja"]
    rows = {
        c.method: c for c in compare_with_baseline(results["models"], ["tangent", "hsja"], T_OPTS)
    }
    # best: per sample min(tangent, hsja) -> rep 1.5 + 0.1 i vs none 1.0.
    assert rows["best"].delta.estimate == pytest.approx(0.5 + 0.1 * np.mean(idx))
    assert rows["tangent"].delta.estimate == pytest.approx(0.5 + 0.1 * np.mean(idx))
    assert rows["hsja"].delta.estimate == pytest.approx(-1.0)
    assert rows["hsja"].delta.excludes_zero and rows["hsja"].delta.high < 0


def test_non_finite_distances_and_readouts(tmp_path):
    dist = {"tangent": {0: 1.0, 1: math.inf, 2: 2.0}}
    write_model(tmp_path, "readout", T, "none", dist)
    write_model(tmp_path, "readout", T, "rep", {"tangent": {0: 2.0, 1: 2.0, 2: 2.5}})
    results = collect_results(tmp_path)
    (best, _) = compare_with_baseline(results["models"], results["methods"], T_OPTS)
    assert (best.kind, best.variant, best.baseline) == ("readout", "rep", "none")
    assert best.delta.n == 2 and best.delta.estimate == pytest.approx(0.75)
    assert best.accuracy.strata == 1 and not best.accuracy.has_interval


def test_no_baseline_no_comparison(tmp_path):
    _ft(tmp_path, "rep", 0, {0: 1.0, 1: 2.0})
    _ft(tmp_path, "lr", 0, {0: 1.0, 1: 2.0})
    results = collect_results(tmp_path)
    assert compare_with_baseline(results["models"], results["methods"], T_OPTS) == []
