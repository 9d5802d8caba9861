"""Build a :class:`SplitModel` from a :class:`~pipeline.core.config.ModelSpec`, and save/load it.

ResNet18/50 come from timm; "small" variants swap the ImageNet stem (7×7 stride-2 conv + max
pool) for a 3×3 stride-1 conv, the usual change for 32-pixel inputs, so that small images are
not downsampled fourfold before the first block. ``small_resnet`` (the default) is timm's
network rebuilt in torch alone (:mod:`pipeline.models.resnet`), so it needs no timm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from pipeline.core.config import ModelSpec
from pipeline.core.errors import ArtifactError, ConfigError, DatasetError
from pipeline.models.resnet import SmallResNet
from pipeline.models.split import SplitModel
from pipeline.models.torch_files import atomic_torch_save, load_torch_file

MODEL_FORMAT = 1


def _small_stem(net: nn.Module, in_chans: int) -> None:
    out = net.bn1.num_features
    net.conv1 = nn.Conv2d(in_chans, out, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()


def _timm_backbone(arch: str, in_chans: int) -> tuple[nn.Module, int]:
    # Imported only for these architectures: timm imports torchvision, ~4 s per process.
    import timm

    if arch == "resnet18_small":
        net = timm.create_model("resnet18", pretrained=False, num_classes=0, in_chans=in_chans)
        _small_stem(net, in_chans)
    else:  # resnet18, resnet50: the standard ImageNet networks, never downloaded
        net = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_chans)
    return net, net.num_features


class MLPBackbone(nn.Module):
    """Flatten, then hidden layers with an activation; the last hidden layer is Φ(x)."""

    def __init__(self, in_features: int, hidden: list[int], activation: str):
        super().__init__()
        act = {"relu": nn.ReLU, "gelu": nn.GELU}[activation]
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        self.net = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_model(
    spec: Any,
    in_chans: int,
    num_classes: int,
    image_size: int,
    mean: tuple[float, ...] = (0.0,),
    std: tuple[float, ...] = (1.0,),
) -> SplitModel:
    """A fresh, randomly initialised model (weights depend on the global torch seed)."""
    if spec.arch == "mlp":
        backbone = MLPBackbone(in_chans * image_size * image_size, spec.hidden, spec.activation)
        dim = backbone.out_features
    elif spec.arch == "small_resnet":
        backbone = SmallResNet(in_chans, spec.widths, spec.blocks)
        dim = backbone.num_features
    elif spec.arch in ("resnet18_small", "resnet18", "resnet50"):
        backbone, dim = _timm_backbone(spec.arch, in_chans)
    else:
        raise ConfigError(f"model.arch: unknown architecture {spec.arch!r}")
    if len(mean) == 1 and in_chans > 1:
        mean, std = mean * in_chans, std * in_chans
    return SplitModel(backbone, dim, num_classes, mean=mean[:in_chans], std=std[:in_chans])


def save_model(model: SplitModel, path: str | Path, meta: dict[str, Any]) -> None:
    """``meta`` must hold what :func:`load_model` needs: model spec, in_chans, image_size, classes."""
    payload = {"format": MODEL_FORMAT, "meta": meta, "state_dict": _plain_state(model)}
    atomic_torch_save(payload, path)


def _plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # Unwrap DDP / torch.compile wrappers so a saved model loads anywhere.
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    return {k: v.detach().cpu() for k, v in inner.state_dict().items()}


def _check_finite(state: dict, path: Path) -> None:
    """A NaN or infinite weight makes every prediction garbage (an attack would then "measure"
    a robustness of nothing): refuse the file, naming the first such tensor."""
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                bad = value[~finite]
                raise ArtifactError(
                    f"model file {path} has non-finite weights: {name} holds "
                    f"{int(bad.isnan().sum())} NaN and {int(bad.isinf().sum())} infinite of "
                    f"{value.numel()} values (a diverged run?): train it again"
                )


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[SplitModel, dict]:
    """Rebuild a saved model; the returned ``meta`` carries classes, image size and provenance.

    The file is read with ``weights_only=True`` (data only, never code), and anything that is
    not a model this module saved, or whose weights do not fit its recorded architecture, is an
    :class:`ArtifactError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"model file not found: {path} (run the stage that produces it first)")
    payload = load_torch_file(path, "model file", map_location)

    def foreign(why: str) -> ArtifactError:
        return ArtifactError(f"model file {path} is not a pipeline model: {why}")

    if not isinstance(payload, dict) or not {"format", "meta", "state_dict"} <= payload.keys():
        raise foreign("expected a dict with format, meta and state_dict")
    if payload["format"] != MODEL_FORMAT:
        raise foreign(f"format {payload['format']!r}, this code reads format {MODEL_FORMAT}")
    meta, state = payload["meta"], payload["state_dict"]
    if not isinstance(meta, dict) or not {"model", "in_chans", "image_size"} <= meta.keys():
        raise foreign("meta lacks model, in_chans or image_size")
    head = state.get("head.weight") if isinstance(state, dict) else None
    if not isinstance(head, torch.Tensor) or head.ndim != 2:
        raise foreign("state_dict has no 2-D head.weight")
    _check_finite(state, path)
    try:
        spec = ModelSpec.model_validate(meta["model"])
        model = build_model(spec, int(meta["in_chans"]), head.shape[0], int(meta["image_size"]))
        model.load_state_dict(state)
    except (ValidationError, ConfigError, RuntimeError, TypeError, ValueError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise foreign(f"its weights do not fit its recorded architecture ({first})") from None
    return model, meta
