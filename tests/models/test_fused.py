"""BatchNorm folded into convs for inference: same function, fewer modules, original untouched."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.attacks import LabelOracle
from pipeline.models import build_model
from pipeline.models.fused import fuse_batchnorm


class _Spec:
    arch = "small_resnet"
    widths = (4, 8, 8, 16)
    blocks = (1, 1, 1, 1)


def _trained_like(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, as after training."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen))
            m.running_var.copy_(torch.rand(n, generator=gen) * 3 + 0.1)
            m.weight.data.copy_(torch.randn(n, generator=gen))
            m.bias.data.copy_(torch.randn(n, generator=gen))
    return model.eval()


def test_fused_copy_computes_the_same_logits_without_batchnorm():
    torch.manual_seed(0)
    model = _trained_like(build_model(_Spec(), in_chans=3, num_classes=5, image_size=16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(64, 3, 16, 16)
    fused = fuse_batchnorm(model, x[:8])
    assert fused is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the original is not modified


class _SharedConvOutput(nn.Module):
    """A conv whose output feeds its BatchNorm and a skip: folding would change the skip."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return (self.bn(y) + y).flatten(1)


def test_a_conv_output_used_beyond_its_batchnorm_keeps_the_model_as_is():
    torch.manual_seed(0)
    model = _trained_like(_SharedConvOutput())
    x = torch.rand(4, 3, 8, 8)
    assert fuse_batchnorm(model, x) is model


def test_oracle_labels_do_not_depend_on_the_thread_count():
    """What lets the attack take every core under ``dvc repro`` and one under the flow."""
    torch.manual_seed(0)
    model = _trained_like(build_model(_Spec(), in_chans=1, num_classes=10, image_size=16))
    x = torch.rand(2048, 1, 16, 16)
    model = fuse_batchnorm(model, x[:8]).to(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    logits = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.no_grad():
                logits[n] = model(x.contiguous(memory_format=torch.channels_last))
            oracle = LabelOracle(model, channels_last=True)
            logits[f"labels{n}"] = oracle(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(logits[1], logits[2])
    assert torch.equal(logits["labels1"], logits["labels2"])
