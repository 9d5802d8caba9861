"""``small_resnet`` in torch alone: timm's ResNet with BasicBlocks and a small-input stem.

The default DAG trains this network in every model stage. Built with timm, each of those
processes spent ~4 s importing timm (and the torchvision it imports) before any work; built
here it needs torch only. It is the same network as before, module for module: timm's
``ResNet(BasicBlock, stem_type="deep")`` whose three stem convs are then replaced by one 3×3
stride-1 conv with no max pool (``_small_stem`` in :mod:`pipeline.models.factory`). The same
parameter names, forward pass and initialization: parameters are drawn in timm's order, the
draws of the replaced stem included, so a seed gives the weights it gave with timm
(``tests/models/test_models.py`` checks weights and outputs against timm itself).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3×3 conv + BatchNorm layers and a residual connection (1×1 conv when it reshapes)."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        if self.downsample is not None:  # after the main path, as timm: hooks see that order
            shortcut = self.downsample(shortcut)
        x += shortcut
        return self.act2(x)


def _stem_draw(out_chans: int, in_chans: int) -> torch.Tensor:
    """The weights a replaced 3×3 stem conv drew at construction (``nn.Conv2d``'s default)."""
    weight = torch.empty(out_chans, in_chans, 3, 3)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    return weight


class SmallResNet(nn.Module):
    """Four stages of BasicBlocks (``widths`` channels, ``blocks`` blocks each, stride 2 from
    the second stage on) after a 3×3 stride-1 stem; global average pooling gives Φ(x)."""

    def __init__(self, in_chans: int, widths: Sequence[int], blocks: Sequence[int]):
        super().__init__()
        stem_width = max(1, widths[0] // 2)
        stem_out = inplanes = 2 * stem_width  # timm's "deep" stem width, which bn1 keeps
        # conv1 comes first in the module order (parameters, state dict), as in timm; it is
        # created last, after the draws of timm's three-conv stem that it replaced.
        self.register_module("conv1", None)
        replaced = [
            _stem_draw(stem_width, in_chans),
            _stem_draw(stem_width, stem_width),
            _stem_draw(stem_out, stem_width),
        ]
        self.bn1 = nn.BatchNorm2d(stem_out)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        for index, (planes, count) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if index == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes:  # created before the blocks, as in timm
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )
            stage = []
            for b in range(count):
                first = b == 0
                stage.append(
                    BasicBlock(
                        inplanes, planes, stride if first else 1, downsample if first else None
                    )
                )
                inplanes = planes
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
        self.stages = [f"layer{i + 1}" for i in range(len(widths))]
        self.global_pool = nn.Sequential(
            OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1))
        )
        self.num_features = widths[-1]
        # timm's init_weights: every conv He-normal (fan out), in module order (the replaced
        # stem first); the last BatchNorm of each block starts at zero (identity blocks).
        for weight in replaced:
            nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)
        # The small-input stem keeps nn.Conv2d's default initialization, as it did with timm.
        self.conv1 = nn.Conv2d(in_chans, stem_out, 3, stride=1, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for name in self.stages:
            x = getattr(self, name)(x)
        return self.global_pool(x)
