"""rep-spectral / ll-spectral: layer selection, input sizes, refresh schedule, state, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.core.errors import ConfigError
from pipeline.regularizers import LLSpectral, RepSpectral, StepContext, conv_sigma_max

BACKBONE_LAYERS = [
    "stem",
    "stages.0.body.0",
    "stages.0.proj",
    "stages.1.body.0",
    "stages.1.proj",
]


def _inputs(n=4, size=8, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_rep_spectral_walks_nested_modules_and_excludes_head(tiny_model):
    reg = RepSpectral()
    reg.attach(tiny_model(), _inputs())
    assert reg.layer_names == BACKBONE_LAYERS


def test_ll_spectral_adds_the_head(tiny_model):
    model = tiny_model()
    reg = LLSpectral()
    reg.attach(model, _inputs())
    assert reg.layer_names == [*BACKBONE_LAYERS, "head"]
    sigma = reg.diagnostics()["sigma_max/head"]
    assert sigma == pytest.approx(torch.linalg.svdvals(model.head.weight)[0].item(), rel=1e-5)


def test_layer_prefixes_select_stages(tiny_model):
    reg = RepSpectral(layers=["stages.1", "stem"])
    reg.attach(tiny_model(), _inputs())
    assert reg.layer_names == ["stem", "stages.1.body.0", "stages.1.proj"]


def test_unknown_prefix_is_a_config_error_listing_top_level_names(tiny_model):
    reg = RepSpectral(layers=["layer9"])
    with pytest.raises(ConfigError, match="layer9") as err:
        reg.attach(tiny_model(), _inputs())
    assert "stem" in str(err.value) and "stages" in str(err.value)
    with pytest.raises(ConfigError, match="bn"):  # a module with no weight layer in it
        RepSpectral(layers=["bn"]).attach(tiny_model(), _inputs())


def test_records_real_input_sizes_and_keeps_batchnorm_statistics(tiny_model):
    model = tiny_model()
    model.train()
    running = model.backbone.bn.running_mean.clone()
    reg = RepSpectral()
    reg.attach(model, _inputs(size=10))
    geoms = {
        k.replace(":", "."): e.geom.input_hw
        for k, e in reg.estimators.items()
        if hasattr(e, "geom")
    }
    assert geoms == {"stem": (10, 10), "stages.0.body.0": (10, 10), "stages.1.body.0": (5, 5)}
    assert torch.equal(model.backbone.bn.running_mean, running)
    assert model.training and model.backbone.bn.training


def test_penalty_is_half_gamma_sum_of_sigma_squared(tiny_model):
    model = tiny_model().double()
    reg = RepSpectral(strength=0.3, init_power_steps=500)
    reg.attach(model, _inputs().double())
    penalty = reg.penalty(StepContext(step=0, epoch=0))
    diag = reg.diagnostics()
    assert penalty.item() == pytest.approx(diag["penalty_value"], rel=1e-4)
    stem = model.backbone.stem.weight
    assert diag["sigma_max/stem"] == pytest.approx(conv_sigma_max(stem, (8, 8)).item(), rel=1e-9)
    penalty.backward()
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    assert model.head.weight.grad is None


def test_refresh_schedule(tiny_model, monkeypatch):
    reg = RepSpectral(refresh_every=3)
    reg.attach(tiny_model(), _inputs())
    calls = []
    original = reg.refresh
    monkeypatch.setattr(reg, "refresh", lambda: (calls.append(1), original())[1])
    refreshed_at = []
    for step in range(8):
        before = len(calls)
        reg.penalty(StepContext(step=step, epoch=0))
        if len(calls) > before:
            refreshed_at.append(step)
    assert refreshed_at == [0, 3, 6]
    assert int(reg.last_refresh) == 6


def test_state_dict_round_trip_resumes_exactly(tiny_model):
    model = tiny_model()
    reg = RepSpectral(refresh_every=5)
    reg.attach(model, _inputs())
    for step in range(3):
        reg.penalty(StepContext(step=step, epoch=0))
    state = reg.state_dict()
    assert any(key.endswith(".v") for key in state) and "last_refresh" in state

    restored = RepSpectral(refresh_every=5)
    restored.attach(model, _inputs())
    restored.to("cpu")  # the loop moves regularizers to the training device
    restored.load_state_dict(state)
    for key, value in state.items():
        assert torch.equal(restored.state_dict()[key], value), key
    a = reg.penalty(StepContext(step=3, epoch=0))
    b = restored.penalty(StepContext(step=3, epoch=0))
    assert a.item() == b.item()


def _train(model, regularizer, steps=40):
    x = _inputs(32, 8, seed=1)
    y = torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if regularizer is not None:
        regularizer.attach(model, x)
    for step in range(steps):
        features = model.representation(x)
        loss = F.cross_entropy(model.head(features), y)
        ctx = StepContext(step=step, epoch=0, features=features)
        if regularizer is not None and regularizer.active(0):
            loss = loss + regularizer.penalty(ctx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    probe = RepSpectral()
    probe.attach(model, x)
    return sum(v**2 for k, v in probe.diagnostics().items() if k.startswith("sigma_max/"))


def test_training_with_rep_spectral_lowers_sum_of_squared_sigmas(tiny_model):
    plain = _train(tiny_model(seed=4), None)
    regularized = _train(tiny_model(seed=4), RepSpectral(strength=0.5, refresh_every=10))
    assert regularized < 0.7 * plain


def test_penalty_before_attach_fails_clearly():
    with pytest.raises(RuntimeError, match="attach"):
        RepSpectral().penalty(StepContext(step=0, epoch=0))
