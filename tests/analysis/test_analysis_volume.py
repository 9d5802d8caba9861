"""Volume element sqrt(det(J^T J)) (rep-spectral Fig. 3b), grids and decision maps."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.analysis import Grid, decision_map, grid, volume_element


def test_linear_map_has_constant_volume_element():
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(2, 5).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(5, 2, generator=g, dtype=torch.float64))
        layer.bias.copy_(torch.randn(5, generator=g, dtype=torch.float64))
    a = layer.weight.detach()
    expected = math.sqrt(torch.linalg.det(a.T @ a).item())
    points = grid((-3, 3), (-2, 2), steps=(7, 5), dtype=torch.float64).points
    vol = volume_element(layer, points)
    assert vol.shape == (35,)
    torch.testing.assert_close(vol, torch.full_like(vol, expected), rtol=1e-10, atol=0)
    assert not vol.requires_grad


def test_polar_coordinates_volume_is_radius():
    def polar(rt: torch.Tensor) -> torch.Tensor:
        r, t = rt[:, 0], rt[:, 1]
        return torch.stack([r * torch.cos(t), r * torch.sin(t)], dim=1)

    g = grid((0.1, 3.0), (-math.pi, math.pi), steps=11, dtype=torch.float64)
    vol = volume_element(polar, g.points)
    torch.testing.assert_close(vol, g.points[:, 0], rtol=1e-10, atol=1e-12)


def test_sphere_parametrization_volume_is_sin_theta_times_radius_squared():
    radius = 2.0

    def sphere(tp: torch.Tensor) -> torch.Tensor:
        t, p = tp[:, 0], tp[:, 1]
        return radius * torch.stack(
            [torch.sin(t) * torch.cos(p), torch.sin(t) * torch.sin(p), torch.cos(t)], dim=1
        )

    g = grid((0.05, math.pi - 0.05), (0.0, 2 * math.pi), steps=(13, 9), dtype=torch.float64)
    vol = volume_element(sphere, g.points)
    expected = radius**2 * torch.sin(g.points[:, 0])
    torch.testing.assert_close(vol, expected, rtol=1e-10, atol=1e-12)
    # Chunked evaluation gives the same values.
    torch.testing.assert_close(volume_element(sphere, g.points, chunk_size=10), vol)


def test_mlp_matches_per_point_autograd_jacobian():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(2, 8), nn.GELU(), nn.Linear(8, 8), nn.Tanh()).double().eval()
    points = torch.randn(20, 2, dtype=torch.float64)
    vol = volume_element(mlp, points)
    for point, v in zip(points, vol):
        jac = torch.autograd.functional.jacobian(lambda q: mlp(q.unsqueeze(0))[0], point)
        assert v.item() == pytest.approx(math.sqrt(torch.linalg.det(jac.T @ jac).item()), rel=1e-8)
    # The map is not linear, so the volume element varies over the input plane.
    assert vol.max() > 1.5 * vol.min()
    assert all(p.grad is None for p in mlp.parameters())


def test_fewer_features_than_inputs_gives_zero_volume():
    vol = volume_element(nn.Linear(2, 1), torch.randn(4, 2))
    assert torch.equal(vol, torch.zeros(4))


def test_grid_layout():
    g = grid((-1, 1), (0, 4), steps=(3, 5))
    assert isinstance(g, Grid)
    assert g.shape == (5, 3)
    assert g.points.shape == (15, 2)
    torch.testing.assert_close(g.xs, torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(g.ys, torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]))
    # x runs fastest; as_image puts y along the rows.
    torch.testing.assert_close(g.points[1], torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(g.points[3], torch.tensor([-1.0, 1.0]))
    x_img = g.as_image(g.points[:, 0])
    y_img = g.as_image(g.points[:, 1])
    torch.testing.assert_close(x_img, g.xs.expand(5, 3))
    torch.testing.assert_close(y_img, g.ys[:, None].expand(5, 3))
    assert g.as_image(g.points).shape == (5, 3, 2)
    with pytest.raises(ValueError):
        grid(steps=0)


def test_decision_map_labels_regions():
    g = grid((-2, 2), (-2, 2), steps=(8, 6))

    def quadrant_xor(x: torch.Tensor) -> torch.Tensor:
        return ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()

    labels = decision_map(quadrant_xor, g, batch_size=7)
    assert labels.shape == (6, 8)
    x_img, y_img = g.as_image(g.points[:, 0]), g.as_image(g.points[:, 1])
    assert torch.equal(labels, ((x_img > 0) ^ (y_img > 0)).long())

    def scores(x: torch.Tensor) -> torch.Tensor:  # class 1 on the right half
        return torch.stack([-x[:, 0], x[:, 0]], dim=1)

    right = decision_map(scores, g)
    assert torch.equal(right, (x_img > 0).long())
