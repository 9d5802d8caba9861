"""Tangent Attack finds the exact distance on boundaries where it is known analytically."""

from __future__ import annotations

import pytest
import torch

from pipeline.attacks import tangent_attack, tangent_point


def test_tangent_point_is_tangent_on_the_upper_hemisphere():
    g = torch.Generator().manual_seed(0)
    n, d = 64, 10
    center = torch.rand(n, d, generator=g)
    normal = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    # x below the tangent plane (on the non-adversarial side) and farther than the radius.
    x = center - 0.5 * normal + 0.3 * torch.randn(n, d, generator=g)
    x = torch.where(((x - center) * normal).sum(1, keepdim=True) < 0, x, 2 * center - x)
    radius = 0.3 * torch.linalg.vector_norm(x - center, dim=1)
    k = tangent_point(x, center, normal, radius)
    ok, ox = k - center, x - center
    torch.testing.assert_close(torch.linalg.vector_norm(ok, dim=1), radius)  # on the sphere
    torch.testing.assert_close((ok * (k - x)).sum(1), torch.zeros(n), atol=1e-5, rtol=0)
    assert torch.all((ok * normal).sum(1) > 0)  # upper hemisphere, towards the normal
    # In the plane of x − centre and the normal: no component outside it.
    basis = torch.stack([torch.nn.functional.normalize(ox, dim=1), normal], dim=2)
    q, _ = torch.linalg.qr(basis)
    residual = ok - (q @ (q.transpose(1, 2) @ ok.unsqueeze(2))).squeeze(2)
    assert float(residual.abs().max()) < 1e-5


def test_linear_d100_default_t40_within_1_percent(linear_binary):
    model = linear_binary(100, seed=0)
    x = model.points(16, dist=0.3)
    y = model(x)
    res = tangent_attack(model, x, y)  # T = 40, the paper's setting
    assert res.success.all()
    exact = model.distance(x)
    ratio = float(res.distances.mean() / exact.mean())
    assert 1.0 <= ratio < 1.01, ratio  # never below the truth: every point is adversarial
    torch.testing.assert_close(res.distances, torch.linalg.vector_norm(res.adversarial - x, dim=1))


def test_linear_d3072_t200_within_2_percent(linear_binary):
    """CIFAR-sized input (3×32×32): T = 200 iterations (≈ 193 000 queries per sample)."""
    model = linear_binary(3072, seed=0)
    x = model.points(2, dist=0.3).view(2, 3, 32, 32)
    res = tangent_attack(model, x, model(x), iterations=200)
    assert res.success.all() and res.adversarial.shape == x.shape
    ratio = float(res.distances.mean() / model.distance(x).mean())
    assert 1.0 <= ratio < 1.02, ratio


@pytest.mark.parametrize("inside", [True, False], ids=["from-inside", "from-outside"])
def test_sphere_within_5_percent(ball, inside):
    """Inside: noise is adversarial. Outside: noise never is, so starts come from the pool."""
    model = ball(50, radius=0.4)
    x = model.points(12, (0.1, 0.3) if inside else (0.5, 0.7))
    y = model(x)
    pool = model.points(32, (0.0, 0.3), seed=5)
    res = tangent_attack(model, x, y, init_tries=50, fallback_pool=(pool, model(pool)))
    assert res.success.all()
    ratio = float(res.distances.mean() / model.distance(x).mean())
    assert 1.0 <= ratio < 1.05, ratio
    if not inside:  # noise alone never fools this model: the starts really came from the pool
        assert not tangent_attack(model, x, y, iterations=0, init_tries=50).success.any()
