"""The attack's progress callback: it reports what an independent counter saw, changes nothing."""

from __future__ import annotations

import math

import torch

from pipeline.attacks import tangent_attack
from pipeline.attacks.methods import run_methods
from pipeline.core.progress import Progress
from pipeline.stages.attack import _follow

SETTINGS = dict(iterations=6, max_queries=400, init_probes=20, max_probes=50, seed=3)


def test_progress_reports_the_queries_an_independent_counter_saw(digits_mlp, counting_predict):
    model, x, y = digits_mlp
    x, y = x[:6], y[:6]
    counter = counting_predict(lambda inputs: model(inputs).argmax(1), batch=6)
    seen = []

    def follow(status):
        seen.append((status, counter.total))

    with torch.no_grad():
        res = tangent_attack(counter, x, y, progress=follow, **SETTINGS)
    assert len(seen) >= 3  # after the start, after iterations, at the end
    for status, counted in seen:
        assert status.queries == counted
        assert counted <= status.expected <= 6 * 400
    assert [s.queries for s, _ in seen] == sorted(s.queries for s, _ in seen)
    last = seen[-1][0]
    assert last.done == last.samples == 6
    assert last.expected == last.queries == int(res.queries.sum())
    finite = res.distances[torch.isfinite(res.distances)]
    assert math.isclose(last.mean_distance, float(finite.mean()), rel_tol=1e-6)


def test_progress_changes_no_result(digits_mlp):
    model, x, y = digits_mlp

    def predict(inputs):
        return model(inputs).argmax(1)

    with torch.no_grad():
        plain = tangent_attack(predict, x[:5], y[:5], **SETTINGS)
        watched = tangent_attack(predict, x[:5], y[:5], progress=lambda s: None, **SETTINGS)
    for field in ("adversarial", "distances", "queries", "iterations", "at_queries"):
        assert torch.equal(getattr(plain, field), getattr(watched, field)), field


def test_stage_display_covers_both_methods(digits_mlp, monkeypatch, capsys):
    model, x, y = digits_mlp
    monkeypatch.setenv("PIPELINE_PROGRESS", "attack_readout@t-none-0")
    monkeypatch.setenv("PIPELINE_PROGRESS_EVERY", "0")
    methods = ["tangent", "hsja"]
    with Progress("attack", 2 * 4 * 400, "queries") as progress, torch.no_grad():
        results = run_methods(
            lambda inputs: model(inputs).argmax(1), x[:4], y[:4], methods,
            progress=_follow(progress, methods, 4, 400), **SETTINGS,
        )  # fmt: skip
    lines = [line.split() for line in capsys.readouterr().err.splitlines()]
    assert lines and all(p[:2] == ["PROGRESS", "attack_readout@t-none-0"] for p in lines)
    done = [int(p[2]) for p in lines]
    assert done == sorted(done)
    spent = sum(int(r.queries.sum()) for r in results.values())
    assert int(lines[-1][2]) == int(lines[-1][3]) == spent  # the total shrinks to what was spent
    assert all(int(p[3]) <= 2 * 4 * 400 for p in lines)
    assert "method=hsja" in lines[-1] and "samples=4/4" in lines[-1]
