"""BSS against numpy's SVD; nuclear-norm and ℓ1 penalties and their diagnostics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.errors import ConfigError
from pipeline.regularizers import (
    BatchSpectralShrinkage,
    L1Norm,
    NuclearNorm,
    StepContext,
    bss_penalty,
    effective_rank,
    effective_sparsity,
)


def _features(n=10, d=6, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape,k", [((10, 6), 1), ((10, 6), 3), ((4, 9), 2), ((4, 9), 10)])
def test_bss_matches_numpy_svd(shape, k):
    F = _features(*shape)
    sigma = np.linalg.svd(F.numpy(), compute_uv=False)  # descending
    expected = float((sigma[-min(k, len(sigma)) :] ** 2).sum())
    assert bss_penalty(F, k).item() == pytest.approx(expected, rel=1e-10)
    reg = BatchSpectralShrinkage(strength=0.1, k=k)
    assert reg.penalty(StepContext(step=0, epoch=0, features=F)).item() == pytest.approx(
        0.1 * expected, rel=1e-10
    )
    assert reg.diagnostics()["penalty_value"] == pytest.approx(0.1 * expected, rel=1e-10)


def test_gradcheck_bss():
    F = _features(7, 4, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda f: bss_penalty(f, 2), (F,))


def test_bss_needs_features():
    with pytest.raises(RuntimeError, match="features"):
        BatchSpectralShrinkage().penalty(StepContext(step=0, epoch=0))


def test_effective_rank_and_sparsity_values():
    assert effective_rank(torch.eye(4)) == pytest.approx(2.0)  # ‖I‖_* / ‖I‖_F = 4 / 2
    rank_one = torch.outer(torch.arange(1.0, 4.0), torch.ones(5))
    assert effective_rank(rank_one) == pytest.approx(1.0)
    sparse = torch.zeros(3, 3)
    sparse[0, 0], sparse[2, 1] = 3.0, 4.0
    assert effective_sparsity(sparse) == pytest.approx(7.0 / 5.0)


def test_zero_weight_is_nan_in_both_places_and_one_definition():
    """0/0 is undefined: the diagnostics and the analysis report NaN, from one function."""
    import math

    import numpy as np

    from pipeline import analysis

    assert analysis.effective_rank is effective_rank
    assert analysis.effective_sparsity is effective_sparsity
    for f in (effective_rank, effective_sparsity):
        assert math.isnan(f(torch.zeros(3, 4)))
        assert math.isnan(f(torch.zeros(2, 3, 3, 3)))
    # Against numpy on a random matrix (an independent SVD).
    w = np.random.default_rng(0).normal(size=(5, 7))
    fro = np.linalg.norm(w)
    assert effective_rank(torch.from_numpy(w)) == pytest.approx(
        np.linalg.svd(w, compute_uv=False).sum() / fro, rel=1e-12
    )
    assert effective_sparsity(torch.from_numpy(w)) == pytest.approx(np.abs(w).sum() / fro)


def test_diagnostics_of_a_zeroed_layer_are_nan(tiny_model):
    import math

    model = tiny_model()
    reg = NuclearNorm(strength=0.05)
    reg.attach(model, torch.randn(2, 3, 8, 8))
    name, layer = reg._targets[0]
    with torch.no_grad():
        layer.weight.zero_()
    diag = reg.diagnostics()
    assert math.isnan(diag[f"effective_rank/{name}"])
    assert math.isnan(diag[f"effective_sparsity/{name}"])
    other, _ = reg._targets[1]
    assert diag[f"effective_rank/{other}"] >= 1.0


def test_conv_kernel_is_reshaped_to_filters_by_inputs():
    kernel = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(2))
    matrix = kernel.reshape(4, 27).double()
    nuclear = torch.linalg.svdvals(matrix).sum() / torch.linalg.matrix_norm(matrix)
    assert effective_rank(kernel) == pytest.approx(nuclear.item(), rel=1e-9)


@pytest.mark.parametrize("cls", [NuclearNorm, L1Norm])
def test_weight_norm_penalties_sum_over_backbone_layers(cls, tiny_model):
    model = tiny_model()
    reg = cls(strength=0.05)
    reg.attach(model, torch.randn(2, 3, 8, 8))
    names = [n for n, _ in reg._targets]
    assert names == ["stem", "stages.0.body.0", "stages.0.proj", "stages.1.body.0", "stages.1.proj"]
    expected = 0.0
    for _, module in reg._targets:
        W = module.weight.detach().double().reshape(module.weight.shape[0], -1).numpy()
        if cls is NuclearNorm:
            expected += np.linalg.svd(W, compute_uv=False).sum()
        else:
            expected += np.abs(W).sum()
    value = reg.penalty(StepContext(step=0, epoch=0))
    assert value.item() == pytest.approx(0.05 * expected, rel=1e-5)
    value.backward()
    assert model.backbone.stages[1].body[0].weight.grad.abs().sum() > 0
    assert model.head.weight.grad is None
    diag = reg.diagnostics()
    assert diag["penalty_value"] == pytest.approx(0.05 * expected, rel=1e-9)
    assert "effective_rank/stem" in diag and "effective_sparsity/stages.1.proj" in diag


def test_gradcheck_nuclear_norm_penalty(tiny_model):
    reg = NuclearNorm(strength=1.0, layers=["stem"])
    model = tiny_model().double()
    reg.attach(model, torch.randn(2, 3, 8, 8, dtype=torch.float64))
    stem = model.backbone.stem

    def penalty(weight):
        original = stem.weight
        del stem.weight
        stem.weight = weight
        try:
            return reg.penalty(StepContext(step=0, epoch=0)).double()
        finally:
            stem.weight = original

    weight = stem.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(penalty, (weight,))


def test_weight_norm_layer_prefix_errors(tiny_model):
    with pytest.raises(ConfigError, match="nope"):
        L1Norm(layers=["nope"]).attach(tiny_model(), torch.randn(2, 3, 8, 8))
