"""The operator a conv and the BatchNorm right after it apply together, for spectral penalties.

In eval mode ``BN(conv(x)) = diag(s)·K x + t`` with, per output channel ``c``,
``s_c = γ_c / sqrt(running_var_c + ε)`` and a shift ``t`` that does not change the linear
operator. Its σ_max is therefore that of the conv kernel with output channel ``c`` scaled by
``s_c`` - a row scaling, so the conv operator-norm machinery of
:mod:`pipeline.regularizers.spectral` applies to the scaled kernel unchanged.

Why this matters: a conv followed by BN is scale-invariant (multiplying ``K`` by ``a`` multiplies
the running variance by ``a²``), so penalizing σ_max(K) alone can shrink the kernel without
changing the function the network computes. The folded operator is what the representation
actually sees.

Which statistics: the running ones, as in eval mode. That is the operator of the deployed
network - the one the attack probes and whose Lipschitz constant the rep-spectral bound is
about. In train mode BN uses batch statistics instead, which change every step and make the
operator depend on the batch; the running estimates follow them with a short lag. The
running variance is a buffer and receives no gradient; γ does, so the penalty can also act
through the BN scale.

Pairs are found from the data flow of one forward pass (:mod:`pipeline.models.dataflow`): a
BatchNorm2d whose input *is* the output tensor of a conv (timm ResNets: ``conv1→bn1``,
``conv2→bn2``, ``conv3→bn3``, ``downsample.0→downsample.1`` and the stem ``conv1→bn1``). This
does not rely on names, and a conv whose output reaches a BN only through another operation is
not paired.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.core.errors import ConfigError


def batchnorm_scale(bn: nn.BatchNorm2d, name: str = "") -> torch.Tensor:
    """Per-channel ``γ / sqrt(running_var + ε)``; differentiable in ``γ`` only.

    A BN without running statistics normalizes with batch statistics even in eval mode, so it
    has no fixed operator to fold: that is a :class:`ConfigError`.
    """
    if bn.running_var is None:
        raise ConfigError(
            f"fold_bn: BatchNorm {name or type(bn).__name__!r} keeps no running statistics "
            "(track_running_stats=False), so its eval-mode operator is not fixed; set fold_bn: false"
        )
    inv_std = torch.rsqrt(bn.running_var.detach() + bn.eps)
    return inv_std if bn.weight is None else bn.weight * inv_std


def folded_weight(conv: nn.Conv2d, bn: nn.BatchNorm2d, name: str = "") -> torch.Tensor:
    """The conv kernel with output channel ``c`` scaled by BN's ``s_c`` (gradients reach both)."""
    scale = batchnorm_scale(bn, name)
    return conv.weight * scale.to(conv.weight.dtype).view(-1, 1, 1, 1)
