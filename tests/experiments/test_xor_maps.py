"""XOR helpers: data, exact grid margin, decision and volume-element maps over the plane."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.experiments.common import mlp
from pipeline.experiments.config import XorSettings
from pipeline.experiments.xor import grid_margin, model_maps, xor_data


def _settings(**maps) -> XorSettings:
    return XorSettings(
        variants={"none": [], "ll_spectral": [], "rep_spectral": []},
        maps={"window": (-2.0, 2.0), **maps},
    )


def test_xor_labels_are_sign_disagreement():
    x, y = xor_data()
    assert x.shape == (4, 2) and set(map(tuple, x.abs().tolist())) == {(1.0, 1.0)}
    assert y.tolist() == [0, 1, 1, 0]


def test_grid_margin_is_distance_to_a_straight_boundary():
    xs = ys = np.linspace(-2, 2, 401)  # spacing 0.01
    gx, _ = np.meshgrid(xs, ys)
    decisions = (gx > 0.3).astype(int)  # boundary at x = 0.3
    points = np.array([[-1.0, 0.5], [1.5, -1.0]])
    margins = grid_margin(decisions, xs, ys, points, [0, 1])
    assert abs(margins[0] - 1.3) <= 0.011 and abs(margins[1] - 1.2) <= 0.011
    assert grid_margin(np.zeros_like(decisions), xs, ys, points[:1], [0]) == [math.inf]


def test_model_maps_shapes_and_agreement_with_the_model():
    s = _settings(steps=21, center_radius=0.5)
    x, _ = xor_data()
    model = mlp(2, 1, [8], "gelu", 2, seed=0)
    maps = model_maps(model, s, x, steps=21)
    assert maps["decisions"].shape == (21, 21) and maps["volume"].shape == (21, 21)
    assert maps["xs"].shape == (21,) and maps["ys"].shape == (21,)
    assert np.isfinite(maps["volume"]).all() and (maps["volume"] >= 0).all()
    # Row iy, column ix is the point (xs[ix], ys[iy]).
    iy, ix = 3, 17
    point = torch.tensor([[maps["xs"][ix], maps["ys"][iy]]], dtype=torch.float32)
    with torch.no_grad():
        assert model(point).argmax(1).item() == maps["decisions"][iy, ix]
    assert maps["centre_volume_median"] > 0


def test_volume_element_of_a_linear_feature_map_is_its_determinant():
    """With GELU replaced by identity, Φ(x) = Wx + b and √det(JᵀJ) = |det W| everywhere."""
    model = mlp(2, 1, [2], "gelu", 2, seed=0)
    model.backbone.net[2] = torch.nn.Identity()
    with torch.no_grad():
        model.backbone.net[1].weight.copy_(torch.tensor([[2.0, 0.0], [1.0, 3.0]]))
    maps = model_maps(model, _settings(), xor_data()[0], steps=9)
    np.testing.assert_allclose(maps["volume"], 6.0, rtol=1e-5)
    assert maps["centre_volume_median"] == pytest.approx(6.0, rel=1e-5)
