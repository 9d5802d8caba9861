"""Batched binary search: tolerance, returned end tested adversarial, budget, steps."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.attacks import binary_search, search_steps


def test_finds_a_linear_boundary_to_the_tolerance_for_every_row():
    # Adversarial iff the first coordinate exceeds a per-row threshold c: boundary at α* = c.
    c = torch.tensor([0.3, 0.55, 0.9, 0.01])
    x = torch.zeros(4, 6)
    x_adv = torch.ones(4, 6)
    tested = []

    def is_adv(points, idx):
        tested.append(points.clone())
        return points[:, 0] > c[idx]

    theta = 1e-4
    res = binary_search(is_adv, x, x_adv, theta)
    assert torch.all(res.alpha > c.double())
    assert torch.all(res.alpha - c.double() <= theta)
    assert torch.all(res.points[:, 0] > c)  # the adversarial end, never the midpoint below
    assert res.queries.tolist() == [search_steps(theta)] * 4
    # Every returned point is one the oracle actually labelled (bit for bit).
    seen = torch.cat(tested)
    for p in res.points:
        assert bool((seen == p).all(dim=1).any())


def test_per_row_tolerance_sets_per_row_work():
    x, x_adv = torch.zeros(2, 3), torch.ones(2, 3)
    res = binary_search(lambda p, i: p[:, 0] > 0.5, x, x_adv, torch.tensor([1e-2, 1e-5]))
    assert res.queries.tolist() == [search_steps(1e-2), search_steps(1e-5)]


def test_budget_stops_early_and_keeps_the_adversarial_end():
    x, x_adv = torch.zeros(3, 2), torch.ones(3, 2)
    res = binary_search(
        lambda p, i: p[:, 0] > 0.2, x, x_adv, 1e-6, budget=torch.tensor([0, 2, 100])
    )
    assert res.queries.tolist() == [0, 2, search_steps(1e-6)]
    assert torch.equal(res.points[0], x_adv[0])  # no query: the given end
    assert res.alpha[1] == 0.25  # 1 → 0.5 → 0.25, both adversarial
    assert torch.all(res.points[:, 0] > 0.2)


def test_idx_is_passed_through_and_box_clamps():
    seen = []

    def is_adv(points, idx):
        seen.append(idx.clone())
        assert points.min() >= 0.1 and points.max() <= 0.9
        return points[:, 0] > 0.5

    x = torch.full((2, 2), 0.1)
    x_adv = torch.full((2, 2), 0.9)
    binary_search(is_adv, x, x_adv, 0.01, idx=torch.tensor([7, 3]), box=(0.1, 0.9))
    assert all(s.tolist() == [7, 3] for s in seen)


def test_steps_shrink_the_interval_below_theta():
    for d in (64, 100, 3072, 150528):
        theta = 1 / (d * math.sqrt(d))
        n = search_steps(theta)
        assert 2.0**-n <= theta < 2.0 ** -(n - 1)
    with pytest.raises(ValueError):
        search_steps(0.0)
