"""Glue shared by the stages: datasets from a DataSpec, names, backbones, evaluation, run setup.

It never imports the training loop or the regularizers, so stages that only load models
(readout, attack) do not re-run when training code changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from pipeline.core import paths
from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data import open_source
from pipeline.data.shards import open_shards
from pipeline.data.transforms import default_stats, to_pixel_tensor
from pipeline.models import load_model
from pipeline.runtime import device as runtime
from pipeline.runtime.distributed import DistInfo, init_distributed

log = logging.getLogger(__name__)


class Limited(Dataset):
    """The first ``n`` samples of a dataset (a deterministic subset for smoke runs)."""

    def __init__(self, dataset, n: int):
        self.dataset, self.n = dataset, min(n, len(dataset))
        for attr in ("classes", "channels", "name"):
            setattr(self, attr, getattr(dataset, attr))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if i >= self.n:
            raise IndexError(i)
        return self.dataset[i]


class Pixels(Dataset):
    """Deterministic (test-time) transform to [0, 1] pixel tensors."""

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, label = self.dataset[i]
        return self.transform(image), label


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


def resolve_root(root: str | None) -> Path | None:
    return None if root is None else Path(root).expanduser()


def open_split(spec, run, split: str):
    """The raw (PIL, label) dataset of ``split`` ('train' or 'test') described by a DataSpec.

    With ``data.stream`` a prepared shard set stays on disk (``ShardDataset``): read by index
    where a stage needs samples, streamed by the training loop.
    """
    name = spec.train_split if split == "train" else spec.test_split
    if spec.source == "shards":
        if not spec.root:
            raise ConfigError("data.root: required for source 'shards' (a prepared shard folder)")
        shard_dir = Path(spec.root) / name
        if not shard_dir.is_dir():
            raise DatasetError(
                f"prepared shards not found at {shard_dir}: expected <root>/{name}/ with "
                "*.tar shards and meta.json (run the prepare stage, or `python -m pipeline shard`)"
            )
        limit = spec.limit_train if split == "train" else spec.limit_test
        if spec.stream:  # read from disk as needed; training streams it
            return open_shards(shard_dir, limit=limit, shuffle_buffer=spec.shuffle_buffer)
        dataset = open_shards(shard_dir, in_memory=True)
    else:
        dataset = open_source(spec.source, resolve_root(spec.root), name, **spec.options)
    limit = spec.limit_train if split == "train" else spec.limit_test
    return Limited(dataset, limit) if limit else dataset


def normalization(spec, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if spec.normalize == "imagenet":
        return default_stats(channels)
    if spec.normalize == "half":
        return (0.5,) * channels, (0.5,) * channels
    return (0.0,) * channels, (1.0,) * channels


def pixel_transform(spec, channels: int, train: bool):
    return to_pixel_tensor(train, spec.image_size, channels, spec.augment)


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


def load_pixels(dataset: Dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(dataset) if limit is None else min(limit, len(dataset))
    xs, ys = zip(*(dataset[i] for i in range(n)), strict=True)
    return torch.stack(xs), torch.tensor(ys)


def example_batch(dataset: Dataset, n: int = 8) -> torch.Tensor:
    """A few inputs at the real resolution, for recording conv input sizes."""
    return torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))])
