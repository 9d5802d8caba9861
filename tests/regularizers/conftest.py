"""Ground truths and tiny models shared by the regularizer tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.models.split import SplitModel


def dense_conv_operator(
    weight: np.ndarray,
    input_hw: tuple[int, int],
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
) -> np.ndarray:
    """The circular conv as an explicit matrix, built tap by tap from index arithmetic.

    ``y[o, i, j] = Σ K[o, c, a, b] · x[c, (s·i + d·a − p_h) mod h, (s·j + d·b − p_w) mod w]`` with
    PyTorch's cross-correlation convention and "same" offset ``p = d·(k−1)//2``. Sizes not
    divisible by the stride are rounded up to the next multiple (the documented behaviour).
    """
    c_out, c_in_g, kh, kw = weight.shape
    h = math.ceil(input_hw[0] / stride) * stride
    w = math.ceil(input_hw[1] / stride) * stride
    ho, wo = h // stride, w // stride
    c_in = c_in_g * groups
    ph, pw = dilation * (kh - 1) // 2, dilation * (kw - 1) // 2
    op = np.zeros((c_out, ho, wo, c_in, h, w))
    o, c, a, b, i, j = np.meshgrid(
        *(np.arange(n) for n in (c_out, c_in_g, kh, kw, ho, wo)), indexing="ij"
    )
    group = o // (c_out // groups)
    rows = (stride * i + dilation * a - ph) % h
    cols = (stride * j + dilation * b - pw) % w
    np.add.at(op, (o, i, j, group * c_in_g + c, rows, cols), weight[o, c, a, b])
    return op.reshape(c_out * ho * wo, c_in * h * w)


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run many tiny ops; on a shared 2-core machine threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def dense_sigma_max():
    def sigma(weight, input_hw, stride=1, dilation=1, groups=1) -> float:
        op = dense_conv_operator(np.asarray(weight), input_hw, stride, dilation, groups)
        return float(np.linalg.svd(op, compute_uv=False)[0])

    return sigma


class Block(nn.Module):
    """A nested block: the convs sit two levels below the backbone."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.proj = nn.Linear(channels, channels)

    def forward(self, x):
        x = self.body(x)
        return x + self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TinyBackbone(nn.Module):
    def __init__(self, width: int = 6):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.stages = nn.Sequential(Block(width, 2), Block(width, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        return self.pool(self.stages(x)).flatten(1)


@pytest.fixture
def tiny_model():
    def make(seed: int = 0, width: int = 6, classes: int = 3) -> SplitModel:
        torch.manual_seed(seed)
        return SplitModel(TinyBackbone(width), width, classes)

    return make
