"""BatchNorm-folded rep-spectral: ground truth, scale invariance, gradients, pairing, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.core.config import ModelSpec
from pipeline.core.errors import ConfigError
from pipeline.models import build_model
from pipeline.models.split import SplitModel
from pipeline.regularizers import (
    LLSpectral,
    RepSpectral,
    StepContext,
    build_regularizer,
    parse_regularizer_configs,
    spectral_summary,
)


def _conv_bn_model(kernel: int, stride: int, c_in=3, c_out=5, seed=0) -> SplitModel:
    """conv (circular padding) → BN with random γ and running statistics, in float64."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False, padding_mode="circular")
    bn = nn.BatchNorm2d(c_out)
    with torch.no_grad():
        bn.weight.uniform_(0.3, 2.0)
        bn.bias.uniform_(-1, 1)
        bn.running_var.uniform_(0.05, 3.0)
        bn.running_mean.uniform_(-1, 1)
    backbone = nn.Sequential(conv, bn, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return SplitModel(backbone, c_out, 2).double()


def _composed_operator(model: SplitModel, hw: tuple[int, int]) -> torch.Tensor:
    """The Jacobian of ``x ↦ BN(conv(x))`` in eval mode: the composed linear operator, densely."""
    conv, bn = model.backbone[0], model.backbone[1]
    model.eval()
    x = torch.zeros(1, conv.in_channels, *hw, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: bn(conv(t)), x)
    return jac.reshape(-1, x.numel())


@pytest.mark.parametrize(
    ("kernel", "stride", "hw"), [(3, 1, (6, 6)), (3, 2, (8, 6)), (1, 2, (4, 4))]
)
def test_folded_sigma_max_equals_dense_svd_of_conv_then_batchnorm(kernel, stride, hw):
    model = _conv_bn_model(kernel, stride)
    dense = torch.linalg.svdvals(_composed_operator(model, hw))[0].item()
    example = torch.rand(2, 3, *hw, dtype=torch.float64)
    reg = RepSpectral(fold_bn=True, init_power_steps=2000)
    reg.attach(model, example)
    assert reg.batchnorm_pairs == {"0": "1"}
    assert reg.exact_sigma_max()["0"] == pytest.approx(dense, rel=1e-6)
    # The amortized estimator (power iteration on the folded kernel) converges to it too.
    value = reg.penalty(StepContext(step=0, epoch=0)) / (0.5 * reg.strength)
    assert value.sqrt().item() == pytest.approx(dense, rel=1e-6)
    # Unfolded, the same conv has a different norm (γ/std is far from 1 here).
    plain = RepSpectral()
    plain.attach(model, example)
    assert abs(plain.exact_sigma_max()["0"] - dense) > 1e-3 * dense


def _reestimate_statistics(model: SplitModel, x: torch.Tensor) -> None:
    """Fresh running statistics as the cumulative average over batches (momentum=None)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for batch in x.split(16):
            model.representation(batch)
    model.eval()


def _small_resnet(seed=0) -> SplitModel:
    torch.manual_seed(seed)
    spec = ModelSpec(arch="small_resnet", widths=[4, 8, 8, 8], blocks=[1, 1, 1, 1])
    return build_model(spec, 1, 3, 8).double()


def test_folded_sigma_max_ignores_a_rescaled_kernel_while_the_plain_one_scales():
    model = _small_resnet()
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _reestimate_statistics(model, x)
    layer = "layer1.0.conv1"

    def sigmas():
        folded, plain = RepSpectral(fold_bn=True), RepSpectral()
        folded.attach(model, x)
        plain.attach(model, x)
        return folded.exact_sigma_max()[layer], plain.exact_sigma_max()[layer]

    folded_before, plain_before = sigmas()
    with torch.no_grad():
        model.backbone.layer1[0].conv1.weight.mul_(7.0)
    _reestimate_statistics(model, x)
    folded_after, plain_after = sigmas()
    assert plain_after == pytest.approx(7.0 * plain_before, rel=1e-9)
    # Only BN's ε breaks exact invariance (running variances here are O(0.1-1), ε = 1e-5).
    assert folded_after == pytest.approx(folded_before, rel=1e-3)
    assert abs(folded_after / folded_before - 1) < 0.01 * abs(plain_after / plain_before - 1)


def test_gradients_reach_conv_weight_and_batchnorm_gamma_only():
    model = _conv_bn_model(3, 1)
    model.train()
    reg = LLSpectral(fold_bn=True)
    reg.attach(model, torch.rand(2, 3, 6, 6, dtype=torch.float64))
    reg.penalty(StepContext(step=0, epoch=0)).backward()
    conv, bn = model.backbone[0], model.backbone[1]
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0
    assert bn.bias.grad is None  # the shift is not part of the operator
    assert model.head.weight.grad.abs().sum() > 0  # ll: the readout, unfolded


def test_pairs_follow_the_data_flow_of_timm_resnets():
    model = _small_resnet()
    reg = RepSpectral(fold_bn=True)
    reg.attach(model, torch.rand(2, 1, 8, 8, dtype=torch.float64))
    pairs = reg.batchnorm_pairs
    assert pairs["conv1"] == "bn1"
    assert pairs["layer1.0.conv1"] == "layer1.0.bn1"
    assert pairs["layer1.0.conv2"] == "layer1.0.bn2"
    assert pairs["layer2.0.downsample.0"] == "layer2.0.downsample.1"
    assert set(pairs) == set(reg.layer_names)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_pairs_of_standard_resnets_include_stem_bottleneck_and_downsample(arch):
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch=arch), 3, 2, 32)
    reg = RepSpectral(fold_bn=True, layers=["conv1", "layer1.0"])
    reg.attach(model, torch.rand(2, 3, 32, 32))
    pairs = reg.batchnorm_pairs
    expected = {"conv1": "bn1", "layer1.0.conv1": "layer1.0.bn1", "layer1.0.conv2": "layer1.0.bn2"}
    if arch == "resnet50":
        expected |= {
            "layer1.0.conv3": "layer1.0.bn3",
            "layer1.0.downsample.0": "layer1.0.downsample.1",
        }
    assert pairs == expected


def test_conv_without_batchnorm_is_a_config_error_naming_it():
    backbone = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 4, 3, padding=1),  # "2": no BN after it
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    model = SplitModel(backbone, 4, 2)
    with pytest.raises(ConfigError, match=r"fold_bn.*after 2 "):
        RepSpectral(fold_bn=True).attach(model, torch.rand(2, 1, 6, 6))
    RepSpectral(fold_bn=True, layers=["0"]).attach(model, torch.rand(2, 1, 6, 6))  # restricted: ok


def test_fold_bn_is_a_config_field_and_summary_reports_both_spectra():
    (cfg,) = parse_regularizer_configs([{"name": "rep_spectral", "fold_bn": True}])
    assert build_regularizer(cfg).fold_bn
    model = _conv_bn_model(3, 1)
    example = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    folded = spectral_summary(model, example, fold_bn=True)
    plain = spectral_summary(model, example)
    dense = torch.linalg.svdvals(_composed_operator(model, (6, 6)))[0].item()
    assert folded["layers"] == plain["layers"] == 1
    assert folded["max_sigma_max"] == pytest.approx(dense, rel=1e-6)
    assert folded["sum_sigma_max_sq"] == pytest.approx(dense**2, rel=1e-6)
    assert plain["max_sigma_max"] != pytest.approx(dense, rel=1e-3)
