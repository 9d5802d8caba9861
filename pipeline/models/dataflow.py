"""What one forward pass reveals about a model's structure: the layers that run, and which
BatchNorm consumes which conv's output. Shared by the regularizers (spectral norms of the folded
operator) and inference (convs with their BatchNorm folded in).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def frozen_eval(module: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for a probing forward pass; every module's own mode is restored.

    A probe in train mode would update BatchNorm running statistics with the example batch.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def probe_forward(root: nn.Module, example_inputs: torch.Tensor, hooks: list) -> None:
    """One frozen forward pass of two examples through ``root``; the ``hooks`` (handles of
    hooks registered for it) are removed afterwards, even when the pass fails."""
    try:
        with frozen_eval(root):
            root(example_inputs[:2])
    finally:
        for handle in hooks:
            handle.remove()


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
