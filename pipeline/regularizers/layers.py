"""Which weight layers of a backbone a regularizer acts on.

One walk shared by every weight-based regularizer, so "all layers" means the same thing for
each of them: every ``nn.Conv2d`` and ``nn.Linear`` found recursively by ``named_modules``
(nested blocks included), never normalization layers, never the readout (it is not inside the
backbone). A public implementation regularized only the readout because it did not recurse into
nested modules; the recursive walk and the prefix check below exist to rule that out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.models.dataflow import probe_forward

WEIGHT_LAYER_TYPES = (nn.Conv2d, nn.Linear)


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, or the one wrapped by DistributedDataParallel / DataParallel."""
    if not hasattr(model, "backbone") and isinstance(getattr(model, "module", None), nn.Module):
        return model.module
    return model


def backbone_of(model: nn.Module) -> nn.Module:
    """``model.backbone`` (the feature map Φ of a :class:`~pipeline.models.split.SplitModel`)."""
    model = unwrap(model)
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ConfigError(
            f"a weight regularizer needs a model with a `.backbone` module (a SplitModel); "
            f"got {type(model).__name__}"
        )
    return backbone


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def select_weight_layers(
    backbone: nn.Module, prefixes: Sequence[str] = ()
) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the Conv2d/Linear layers of ``backbone`` under the given prefixes.

    A prefix selects a module and everything nested in it (``"layer1"`` selects
    ``layer1.0.conv1``; ``"layer1.0"`` selects only that block). An empty list selects every
    weight layer. A prefix that selects nothing is a configuration error, so a typo cannot
    silently turn a per-stage ablation into an unregularized run.
    """
    layers = [
        (name, module)
        for name, module in backbone.named_modules()
        if isinstance(module, WEIGHT_LAYER_TYPES) and getattr(module, "weight", None) is not None
    ]
    if not prefixes:
        return layers
    top_level = [name for name, _ in backbone.named_children()]
    for prefix in prefixes:
        if not any(_matches(name, prefix) for name, _ in layers):
            raise ConfigError(
                f"layer prefix {prefix!r} matches no Conv2d/Linear layer of the backbone; "
                f"top-level modules are: {', '.join(top_level) or '(none)'}"
            )
    return [(n, m) for n, m in layers if any(_matches(n, p) for p in prefixes)]


def weight_matrix(weight: torch.Tensor) -> torch.Tensor:
    """A weight as a matrix ``c_out × (c_in·k·k)``: a conv kernel's rows are its flattened filters."""
    return weight.reshape(weight.shape[0], -1)


def record_input_sizes(
    root: nn.Module, layers: dict[str, nn.Module], example_inputs: torch.Tensor
) -> dict[str, tuple[int, int]]:
    """Spatial size ``(h, w)`` of the input each layer sees in one forward pass of ``root``.

    A conv's operator norm depends on the image size it acts on, which differs per layer and
    per dataset resolution, so it is measured rather than assumed. Layers that the forward pass
    never calls are absent from the result. A layer called several times keeps its first size.
    """
    sizes: dict[str, tuple[int, int]] = {}
    handles = []

    def make_hook(name: str):
        def hook(_module, inputs):
            if name not in sizes:
                sizes[name] = (int(inputs[0].shape[-2]), int(inputs[0].shape[-1]))

        return hook

    for name, module in layers.items():
        handles.append(module.register_forward_pre_hook(make_hook(name)))
    probe_forward(root, example_inputs, handles)
    return sizes
