"""SSL objectives: losses go down, views differ, the projector is never regularized."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest
import torch
from PIL import Image

from pipeline.core.config import SSLAugment, SSLSpec
from pipeline.models import build_model
from pipeline.regularizers import RepSpectral, StepContext
from pipeline.training.ssl import SSLModule, view_transform

SPEC = SSLSpec.model_validate(
    {
        "data": {"source": "shards", "root": "x", "image_size": 16},
        "train": {"epochs": 1},
        "simclr": {"projection_dim": 16, "hidden_dim": 32},
        "barlow_twins": {"projection_dim": 32, "hidden_dim": 32},
    }
)


def _model():
    torch.manual_seed(0)
    return build_model(NS(arch="small_resnet", widths=[4, 4, 8, 8], blocks=[1, 1, 1, 1]), 1, 5, 16)


@pytest.mark.parametrize("method", ["simclr", "barlow_twins"])
def test_loss_decreases_over_a_few_steps(method):
    module = SSLModule(_model(), method, SPEC)
    g = torch.Generator().manual_seed(1)
    base = torch.rand(32, 1, 16, 16, generator=g)
    views = torch.stack([base, (base + 0.05 * torch.randn(base.shape, generator=g)).clamp(0, 1)], 1)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        out = module(views, torch.zeros(32, dtype=torch.long))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.9 * losses[0], losses
    assert out.features.shape == (32, module.model.feature_dim)


@pytest.mark.parametrize("method", ["simclr", "barlow_twins"])
def test_transform_returns_two_different_views(method):
    aug = SSLAugment(min_scale=0.3, cj_prob=0.0, gray_scale=0.0, gaussian_blur=0.0, hf_prob=0.5)
    t = view_transform(method, 16, 1, aug)
    img = Image.fromarray((torch.rand(16, 16) * 255).byte().numpy(), mode="L")
    torch.manual_seed(0)
    views = t(img)
    assert views.shape == (2, 1, 16, 16)
    assert float(views.min()) >= 0.0 and float(views.max()) <= 1.0  # pixel space, no normalization
    assert not torch.allclose(views[0], views[1])


def test_projector_never_receives_a_regularizer_gradient():
    module = SSLModule(_model(), "simclr", SPEC)
    reg = RepSpectral(strength=1.0)
    x = torch.rand(4, 2, 1, 16, 16)
    reg.attach(module.model, x[:, 0])
    penalty = reg.penalty(StepContext(step=0, epoch=0, features=None))
    penalty.backward()
    assert all(p.grad is None for p in module.projector.parameters())
    assert all(p.grad is None for p in module.model.head.parameters())
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in module.model.backbone.parameters()
    )
    assert not any(p.requires_grad for p in module.model.head.parameters())


@pytest.mark.slow
def test_short_ssl_run_gives_readout_clearly_above_chance(workdir):
    import json
    from pathlib import Path

    from pipeline.__main__ import main

    assert main(["prepare", "--dataset", "digits_0to4"]) == 0
    assert main(["ssl", "--variant", "simclr", "--seed", "0", "--set", "ssl.train.epochs=3"]) == 0
    summary = json.loads(Path("metrics/ssl/simclr/seed0/summary.json").read_text())
    assert summary["readout_acc"] > 0.5, summary  # 5 classes: chance 0.2
    assert summary["knn_acc"] > 0.4, summary
