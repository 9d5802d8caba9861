"""Effective rank / effective sparsity (nuclear-norm paper eqs. 2-3) and the per-layer report."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.analysis import as_matrix, effective_rank, effective_sparsity, weight_report


@pytest.mark.parametrize("n", [1, 4, 9, 30])
def test_identity_has_effective_rank_sqrt_n(n):
    assert effective_rank(torch.eye(n)) == pytest.approx(math.sqrt(n))
    assert effective_sparsity(torch.eye(n)) == pytest.approx(math.sqrt(n))


def test_rank_one_matrix_has_effective_rank_one():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(12, generator=g, dtype=torch.float64)
    v = torch.randn(7, generator=g, dtype=torch.float64)
    assert effective_rank(torch.outer(u, v)) == pytest.approx(1.0, abs=1e-9)
    # Rounding a rank-1 matrix to float32 leaves tiny extra singular values (~1e-7 relative).
    assert effective_rank(torch.outer(u, v).float()) == pytest.approx(1.0, abs=1e-5)
    assert effective_rank(torch.ones(5, 8)) == pytest.approx(1.0, abs=1e-9)


def test_one_hot_and_all_ones_sparsity():
    one_hot = torch.zeros(6, 9)
    one_hot[2, 5] = -3.0
    assert effective_sparsity(one_hot) == pytest.approx(1.0)
    assert effective_sparsity(torch.ones(6, 9)) == pytest.approx(math.sqrt(54))


def test_bounds_on_random_matrices():
    g = torch.Generator().manual_seed(1)
    for shape in [(10, 3), (3, 10), (16, 16)]:
        w = torch.randn(*shape, generator=g)
        assert 1.0 <= effective_rank(w) <= math.sqrt(min(shape)) + 1e-9
        assert 1.0 <= effective_sparsity(w) <= math.sqrt(w.numel()) + 1e-9
    # A rank-r matrix with r equal singular values reaches the upper bound sqrt(r).
    q, _ = torch.linalg.qr(torch.randn(20, 3, generator=g, dtype=torch.float64))
    assert effective_rank(q @ q.T) == pytest.approx(math.sqrt(3))


def test_conv_kernel_is_reshaped_to_cout_by_cin_k_k():
    g = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(3, 5, kernel_size=3)
    assert as_matrix(conv.weight).shape == (5, 27)
    # All output filters equal: the c_out x (c_in k k) matrix has rank 1; a different reshape,
    # e.g. (c_out c_in) x (k k) with distinct per-channel kernels, would not.
    kernel = torch.randn(1, 3, 3, 3, generator=g)
    with torch.no_grad():
        conv.weight.copy_(kernel.expand(5, 3, 3, 3))
    assert effective_rank(conv.weight) == pytest.approx(1.0, abs=1e-6)
    assert effective_rank(conv.weight.reshape(15, 9)) > 1.2
    w = conv.weight.detach()
    assert effective_sparsity(conv.weight) == pytest.approx(
        float(w.abs().sum() / w.norm()), rel=1e-6
    )


def test_zero_matrix_gives_nan():
    assert math.isnan(effective_rank(torch.zeros(3, 4)))
    assert math.isnan(effective_sparsity(torch.zeros(3, 4)))
    with pytest.raises(ValueError):
        effective_rank(torch.ones(4))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Sequential(nn.Conv2d(4, 6, 3, groups=2, bias=False)),
        )
        self.head = nn.Linear(24, 10)
        self.tied = self.head  # shared layer: reported once


def test_weight_report_covers_every_conv_and_linear():
    torch.manual_seed(0)
    net = _Net()
    with torch.no_grad():
        net.head.weight.zero_()
    rows = weight_report(net)
    assert [r["layer"] for r in rows] == ["features.0", "features.3.0", "head"]
    assert [r["shape"] for r in rows] == [(4, 1, 3, 3), (6, 2, 3, 3), (10, 24)]
    for row in rows:
        assert set(row) == {
            "layer",
            "shape",
            "effective_rank",
            "effective_sparsity",
            "sigma_max_flat",
        }
    for row, layer in zip(rows[:2], [net.features[0], net.features[3][0]]):
        w = layer.weight.detach().double().reshape(layer.weight.shape[0], -1)
        assert row["sigma_max_flat"] == pytest.approx(torch.linalg.matrix_norm(w, ord=2).item())
        assert row["effective_rank"] == pytest.approx(effective_rank(layer.weight))
        assert row["effective_sparsity"] == pytest.approx(effective_sparsity(layer.weight))
        assert isinstance(row["effective_rank"], float)
    head = rows[2]
    assert math.isnan(head["effective_rank"]) and head["sigma_max_flat"] == 0.0
    assert weight_report(nn.Linear(3, 2))[0]["layer"] == ""
