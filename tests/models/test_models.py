"""Backbones: the Φ/f split, small-input stems, head replacement, save/load round trip."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest
import torch

from pipeline.core.config import ModelSpec
from pipeline.models import build_model, load_model, save_model


@pytest.mark.parametrize(
    ("spec", "chans", "size", "dim"),
    [
        (ModelSpec(arch="small_resnet", widths=[8, 16, 32, 64]), 1, 16, 64),
        (ModelSpec(arch="resnet18_small"), 3, 32, 512),
        (ModelSpec(arch="mlp", hidden=[50, 20]), 1, 8, 20),
    ],
)
def test_backbone_head_split(spec, chans, size, dim):
    model = build_model(spec, chans, 7, size)
    x = torch.rand(2, chans, size, size)
    feats = model.representation(x)
    assert feats.shape == (2, dim) and model.feature_dim == dim
    assert torch.allclose(model(x), model.head(feats))
    assert not any(m is model.head for m in model.backbone.modules())


def test_small_input_stem_keeps_resolution():
    model = build_model(ModelSpec(arch="resnet18_small"), 3, 10, 32)
    conv1 = model.backbone.conv1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1)
    assert isinstance(model.backbone.maxpool, torch.nn.Identity)


def test_normalization_lives_in_the_model():
    model = build_model(
        NS(arch="mlp", hidden=[4], activation="relu"), 3, 2, 4, mean=(0.5,), std=(0.25,)
    )
    x = torch.rand(1, 3, 4, 4)
    assert torch.allclose(model.normalize(x), (x - 0.5) / 0.25)


def test_save_load_round_trip_and_head_replacement(tmp_path):
    spec = ModelSpec(arch="small_resnet", widths=[4, 4, 8, 8])
    torch.manual_seed(0)
    model = build_model(spec, 1, 5, 16, mean=(0.5,), std=(0.5,)).eval()
    save_model(
        model, tmp_path / "m.pt", {"model": spec.model_dump(), "in_chans": 1, "image_size": 16}
    )
    loaded, meta = load_model(tmp_path / "m.pt")
    loaded.eval()
    x = torch.rand(3, 1, 16, 16)
    assert torch.equal(model(x), loaded(x)) and meta["in_chans"] == 1
    loaded.replace_head(9)
    assert loaded(x).shape == (3, 9)
    assert not list((tmp_path).glob(".*tmp*"))  # atomic write left no temporary file


def _timm_small_resnet(in_chans: int, widths: list[int], blocks: list[int]) -> torch.nn.Module:
    """small_resnet as it was built with timm: a "deep"-stem ResNet whose stem is replaced."""
    from timm.models.resnet import BasicBlock, ResNet

    from pipeline.models.factory import _small_stem

    net = ResNet(
        block=BasicBlock,
        layers=blocks,
        channels=tuple(widths),
        in_chans=in_chans,
        num_classes=0,
        stem_type="deep",
        stem_width=max(1, widths[0] // 2),
    )
    _small_stem(net, in_chans)
    return net


@pytest.mark.parametrize(
    ("chans", "widths", "blocks"),
    [
        (1, [8, 16, 32, 64], [1, 1, 1, 1]),
        (3, [4, 4, 8, 8], [2, 1, 1, 2]),
        (1, [5, 6, 7, 9], [1, 2, 1, 1]),
    ],
)
def test_small_resnet_is_timms_network_without_timm(chans, widths, blocks):
    """Same seed, same weights (in the same order), outputs and gradients as timm's build."""
    from pipeline.models.resnet import SmallResNet

    torch.manual_seed(7)
    ours = SmallResNet(chans, widths, blocks)
    after_ours = torch.rand(3)
    torch.manual_seed(7)
    theirs = _timm_small_resnet(chans, widths, blocks)
    after_theirs = torch.rand(3)
    assert torch.equal(after_ours, after_theirs)  # both drew exactly as many random numbers
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    assert all(torch.equal(ours_state[k], theirs_state[k]) for k in ours_state)
    assert ours.num_features == theirs.num_features == widths[-1]
    x = torch.rand(4, chans, 12, 12)
    for train in (True, False):
        ours.train(train), theirs.train(train)
        a, b = ours(x), theirs(x)
        assert torch.equal(a, b)
        a.square().sum().backward(), b.square().sum().backward()
    grads = {n: p.grad for n, p in theirs.named_parameters()}
    assert all(torch.equal(p.grad, grads[n]) for n, p in ours.named_parameters())
    assert torch.equal(ours.bn1.running_mean, theirs.bn1.running_mean)
