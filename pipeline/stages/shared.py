"""Glue shared by the stages: names given on the command line, backbones, run setup.

Datasets from a DataSpec are :mod:`pipeline.data.splits`. It never imports the training loop or
the regularizers, so stages that only load models (readout, attack) do not re-run when
training code changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from pipeline.core import paths
from pipeline.core.errors import ConfigError
from pipeline.models import load_model
from pipeline.runtime import device as runtime
from pipeline.runtime.distributed import DistInfo, init_distributed

log = logging.getLogger(__name__)


def check_names(cfg, target: str, backbone: str, regularizer: str | None = None) -> None:
    """A finetune target, backbone and finetune regularizer named on the command line exist."""
    ft = cfg.finetune
    if target not in ft.targets:
        raise ConfigError(
            f"--target {target!r} is not in finetune.targets; allowed: {', '.join(ft.targets)}"
        )
    cfg.backbone_kind(backbone)  # raises with the allowed names
    if regularizer is not None and regularizer not in ft.regularizers:
        raise ConfigError(
            f"--regularizer {regularizer!r} is not in finetune.regularizers; "
            f"allowed: {', '.join(ft.regularizers)}"
        )


def load_backbone_for(target_channels: int, backbone: str, backbone_seed: int):
    """A pretrained backbone's model, metadata and path, checked against the target's channels."""
    path = paths.backbone_model(paths.backbone_id(backbone, backbone_seed))
    model, meta = load_model(path)
    if meta["in_chans"] != target_channels:
        raise ConfigError(
            f"backbone {backbone!r} takes {meta['in_chans']}-channel images but the target has "
            f"{target_channels}; pretrain on data with the same channels"
        )
    return model, meta, path


@dataclass
class StageRun:
    device: torch.device
    dist: DistInfo


def start(cfg, seed: int) -> StageRun:
    """Pick the device, join DDP if launched by torchrun, and seed (rank-offset-free: DDP syncs)."""
    device = runtime.pick_device(cfg.run.device)
    if device.type == "cpu" and cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    info = init_distributed(device)
    runtime.seed_everything(seed)
    return StageRun(device=device, dist=info)
