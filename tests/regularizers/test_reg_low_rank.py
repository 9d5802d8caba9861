"""LR: ensembled Nyström projection and the virtual layer's losses, hooks, schedule and state."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.errors import ConfigError
from pipeline.regularizers import LowRank, StepContext, nystrom_project
from pipeline.regularizers import low_rank as low_rank_module


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _is_symmetric_psd(W, tol=1e-8):
    assert torch.allclose(W, W.T, atol=tol * W.abs().max())
    evals = torch.linalg.eigvalsh(W.double())
    return bool(evals.min() >= -tol * evals.abs().max())


@pytest.mark.parametrize("runs", [1, 4])
def test_nystrom_output_is_symmetric_psd_with_rank_at_most_r(runs):
    A = torch.randn(30, 30, generator=_gen(1), dtype=torch.float64)
    W = (A + A.T) / 2  # symmetric but indefinite
    out = nystrom_project(W, rank=5, runs=runs, generator=_gen(2))
    assert _is_symmetric_psd(out)
    assert torch.linalg.matrix_rank(out, hermitian=True) <= 5


def test_nystrom_reconstructs_a_rank_r_psd_matrix_exactly():
    F = torch.randn(40, 6, generator=_gen(3), dtype=torch.float64)
    W = F @ F.T
    out = nystrom_project(W, rank=6, runs=3, generator=_gen(4))
    torch.testing.assert_close(out, W, rtol=1e-9, atol=1e-9)


def test_nystrom_keeps_the_dominant_subspace_of_a_noisy_low_rank_matrix():
    F = torch.randn(50, 3, generator=_gen(5), dtype=torch.float64) * 10
    noise = torch.randn(50, 50, generator=_gen(6), dtype=torch.float64) * 1e-3
    W = F @ F.T + noise @ noise.T
    out = nystrom_project(W, rank=3, runs=5, generator=_gen(7))
    assert torch.linalg.matrix_rank(out, hermitian=True) == 3
    assert (out - F @ F.T).norm() / (F @ F.T).norm() < 1e-3


def test_nystrom_adds_jitter_when_the_eigensolver_fails(monkeypatch):
    real_eigh = torch.linalg.eigh
    seen = []

    def flaky(matrix):
        seen.append(matrix.diagonal().clone())
        if len(seen) == 1:
            raise torch.linalg.LinAlgError("did not converge")
        return real_eigh(matrix)

    monkeypatch.setattr(low_rank_module.torch.linalg, "eigh", flaky)
    W = torch.eye(8, dtype=torch.float64)
    out = nystrom_project(W, rank=4, runs=1, generator=_gen(0))
    assert torch.allclose(seen[1] - seen[0], torch.full_like(seen[0], 0.01))
    assert torch.linalg.matrix_rank(out, hermitian=True) <= 4


def test_nystrom_rejects_bad_input():
    with pytest.raises(ValueError):
        nystrom_project(torch.randn(3, 4), 2)
    with pytest.raises(ValueError):
        nystrom_project(torch.full((3, 3), float("nan")), 2)


def _x(n=6, size=8, seed=0):
    return torch.randn(n, 3, size, size, generator=_gen(seed))


def test_attach_infers_dimensions_pooled_and_flattened(tiny_model):
    model = tiny_model(width=6)
    pooled = LowRank(at=["features", "stages.0"], rank=[2, 3])
    pooled.attach(model, _x(size=8))
    assert [site.Ws.shape[0] for site in pooled.sites] == [6, 6]
    flat = LowRank(at=["stages.0"], pool=False, rank=4)
    flat.attach(model, _x(size=8))
    assert flat.sites[0].Ws.shape[0] == 6 * 4 * 4
    assert len(list(flat.parameters())) == 2


def test_unknown_site_is_a_config_error(tiny_model):
    with pytest.raises(ConfigError, match="layer3"):
        LowRank(at=["features", "layer3"]).attach(tiny_model(), _x())


def test_penalty_matches_the_formula_and_reaches_network_and_W(tiny_model):
    model = tiny_model()
    reg = LowRank(projection_weight=0.7, norm_weight=0.2, at=["features", "stages.1"], rank=2)
    reg.attach(model, _x())
    with torch.no_grad():
        for site in reg.sites:
            site.Ws.normal_(generator=_gen(9))
            site.b.normal_(generator=_gen(10))
    features = model.representation(_x(seed=1))
    value = reg.penalty(StepContext(step=0, epoch=0, features=features))

    expected = 0.0
    for site, a in zip(reg.sites, [features, None]):
        if a is None:
            a = model.backbone.stages[1](
                model.backbone.stages[0](
                    torch.relu(model.backbone.bn(model.backbone.stem(_x(seed=1))))
                )
            ).mean(dim=(2, 3))
        W = (site.Ws + site.Ws.T) / 2
        z = a + site.b
        projection = ((W.T @ z.T).T - z).pow(2).sum(1).mean()
        norm = (1 - a.norm(dim=1)).abs().mean()
        expected = expected + 0.7 * projection + 0.2 * norm
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)

    value.backward()
    assert reg.sites[0].Ws.grad.abs().sum() > 0 and reg.sites[1].b.grad.abs().sum() > 0
    assert model.backbone.stem.weight.grad.abs().sum() > 0
    diag = reg.diagnostics()
    assert {"lr/features/projection_loss", "lr/stages.1/norm_loss", "penalty_value"} <= set(diag)


def test_gradcheck_lr_losses():
    site = low_rank_module.LowRankSite(4).double()
    a = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    Ws = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def total(a, Ws, b):
        projection, norm = torch.func.functional_call(site, {"Ws": Ws, "b": b}, (a,))
        return projection + 0.5 * norm

    assert torch.autograd.gradcheck(total, (a, Ws, b))


def test_projection_schedule_burn_in_and_rank(tiny_model):
    model = tiny_model()
    reg = LowRank(rank=2, project_every=3, burn_in=1, at=["features"])
    reg.attach(model, _x())
    initial = reg.sites[0].W.detach().clone()
    for step in range(6):  # epoch 0: before burn-in, never projected
        reg.after_step(StepContext(step=step, epoch=0))
    assert torch.equal(reg.sites[0].W.detach(), initial)
    reg.after_step(StepContext(step=6, epoch=1))  # (6 + 1) % 3 != 0
    assert torch.equal(reg.sites[0].W.detach(), initial)
    reg.after_step(StepContext(step=8, epoch=1))
    W = reg.sites[0].W.detach()
    assert torch.linalg.matrix_rank(W, hermitian=True) == 2
    assert torch.allclose(reg.sites[0].Ws, reg.sites[0].Ws.T)
    assert reg.diagnostics()["lr/features/rank"] == 2


def test_state_dict_round_trip(tiny_model):
    model = tiny_model()
    reg = LowRank(at=["features", "stages.0"], rank=2)
    reg.attach(model, _x())
    reg.project(step=4)
    restored = LowRank(at=["features", "stages.0"], rank=2)
    restored.attach(model, _x())
    restored.load_state_dict(reg.state_dict())
    for a, b in zip(reg.parameters(), restored.parameters()):
        assert torch.equal(a, b)


def test_penalty_without_forward_fails_clearly(tiny_model):
    reg = LowRank(at=["stages.0"], rank=2)
    reg.attach(tiny_model(), _x())
    with pytest.raises(RuntimeError, match="forward"):
        reg.penalty(StepContext(step=0, epoch=0))
