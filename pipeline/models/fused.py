"""An inference copy of a model with every BatchNorm folded into the conv before it.

In eval mode ``BN(conv(x))`` is one conv with rescaled kernel and a bias, so the copy computes
the same function with one pass over each feature map instead of two; the attack oracle spends
almost all of its time in these forward passes. The copy is checked against the original on an
example batch before use; where it disagrees beyond float rounding (a conv output that feeds
something besides its BatchNorm, say), the original is used unchanged.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pipeline.models.dataflow import find_batchnorm_after

log = logging.getLogger(__name__)


def fuse_batchnorm(
    model: nn.Module, example: torch.Tensor, *, rtol: float = 1e-4, atol: float = 1e-5
) -> nn.Module:
    """An eval-mode copy of ``model`` with conv→BatchNorm pairs fused; ``model`` is untouched.

    Returns ``model`` itself (in eval mode) when it has no such pair or when the fused copy's
    outputs on ``example`` differ from the original's beyond ``rtol``/``atol``.
    """
    model.eval()
    fused = copy.deepcopy(model)
    convs = {n: m for n, m in fused.named_modules() if isinstance(m, nn.Conv2d)}
    pairs = find_batchnorm_after(fused, convs, example)
    if not pairs:
        return model
    for conv_name, (bn_name, bn) in pairs.items():
        fused.set_submodule(conv_name, fuse_conv_bn_eval(convs[conv_name], bn))
        fused.set_submodule(bn_name, nn.Identity())
    with torch.no_grad():
        want, got = model(example), fused(example)
    if not torch.allclose(got, want, rtol=rtol, atol=atol):
        log.warning("folding BatchNorm into convs changed the outputs; using the model as is")
        return model
    return fused
