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

Pairs are found from the data flow of one forward pass: a BatchNorm2d whose input *is* the
output tensor of a conv (timm ResNets: ``conv1→bn1``, ``conv2→bn2``, ``conv3→bn3``,
``downsample.0→downsample.1`` and the stem ``conv1→bn1``). This does not rely on names, and a
conv whose output reaches a BN only through another operation is not paired.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.regularizers.layers import probe_forward


def find_batchnorm_after(
    root: nn.Module, convs: dict[str, nn.Conv2d], example_inputs: torch.Tensor
) -> dict[str, tuple[str, nn.BatchNorm2d]]:
    """For each named conv, the ``(name, module)`` of the BatchNorm2d that consumes its output.

    Runs one forward pass of ``root`` in eval mode without autograd (BN statistics untouched).
    Convs the forward pass never calls, or whose output goes to something else, are absent.
    """
    bn_names = {m: n for n, m in root.named_modules() if isinstance(m, nn.BatchNorm2d)}
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # id(output) -> (conv name, output)
    pairs: dict[str, tuple[str, nn.BatchNorm2d]] = {}
    handles = []

    def conv_hook(name: str):
        def hook(_module, _inputs, output):
            produced[id(output)] = (name, output)  # keeps the tensor alive: ids stay unique

        return hook

    def bn_hook(module: nn.BatchNorm2d):
        def hook(_module, inputs):
            source = produced.get(id(inputs[0]))
            if source is not None and source[1] is inputs[0] and source[0] not in pairs:
                pairs[source[0]] = (bn_names[module], module)

        return hook

    for name, conv in convs.items():
        handles.append(conv.register_forward_hook(conv_hook(name)))
    for module in bn_names:
        handles.append(module.register_forward_pre_hook(bn_hook(module)))
    probe_forward(root, example_inputs, handles)
    return pairs


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
