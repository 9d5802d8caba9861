"""readout-spectral: the readout's σ_max only; the backbone receives no gradient."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.errors import ConfigError
from pipeline.regularizers import (
    ReadoutSpectral,
    StepContext,
    build_regularizers,
    parse_regularizer_configs,
)


def test_readout_spectral_touches_no_backbone_gradient(tiny_model):
    model = tiny_model().double()
    (reg,) = build_regularizers([{"name": "readout_spectral", "strength": 0.5}])
    assert isinstance(reg, ReadoutSpectral)
    reg.attach(model, torch.rand(4, 3, 8, 8, dtype=torch.float64))
    assert reg.layer_names == ["head"]
    penalty = reg.penalty(StepContext(step=0, epoch=0))
    penalty.backward()
    for name, p in model.backbone.named_parameters():
        assert p.grad is None or not p.grad.any(), name
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    sigma = torch.linalg.svdvals(model.head.weight.detach())[0].item()
    assert penalty.item() == pytest.approx(0.25 * sigma**2, rel=1e-6)
    assert reg.diagnostics()["sigma_max/head"] == pytest.approx(sigma, rel=1e-9)


def test_readout_spectral_accepts_no_backbone_options():
    with pytest.raises(ConfigError, match="fold_bn"):
        parse_regularizer_configs([{"name": "readout_spectral", "fold_bn": True}])
    with pytest.raises(ConfigError, match="readout"):
        ReadoutSpectral(layers=["stem"])
