"""Glue shared by the stages: datasets from a DataSpec, evaluation, features, run setup."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pipeline.data import open_source
from pipeline.data.shards import open_shards
from pipeline.data.transforms import default_stats, to_pixel_tensor
from pipeline.errors import ConfigError, DatasetError
from pipeline.training import runtime
from pipeline.training.checkpoint import file_digest
from pipeline.training.distributed import DistInfo, init_distributed

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


def resolve_root(root: str | None) -> Path | None:
    return None if root is None else Path(root).expanduser()


def open_split(spec, run, split: str):
    """The raw (PIL, label) dataset of ``split`` ('train' or 'test') described by a DataSpec."""
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


@torch.no_grad()
def predict_batches(model: nn.Module, dataset: Dataset, device: torch.device, batch: int = 256):
    """Yield (features, logits, labels) over a dataset of pixel tensors, in eval mode."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch, shuffle=False)
    for x, y in loader:
        x = x.to(device)
        feats = model.forward_features(x)
        yield feats.float().cpu(), model.head(feats).float().cpu(), y


def evaluate_accuracy(model, dataset, device, batch: int = 256) -> dict[str, float]:
    correct, total, loss = 0, 0, 0.0
    for _, logits, y in predict_batches(model, dataset, device, batch):
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    return {"test_acc": correct / max(total, 1), "test_loss": loss / max(total, 1)}


def extract_features(model, dataset, device, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    feats, labels = [], []
    for f, _, y in predict_batches(model, dataset, device, batch):
        feats.append(f.numpy())
        labels.append(y.numpy())
    return np.concatenate(feats), np.concatenate(labels)


def load_pixels(dataset: Dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(dataset) if limit is None else min(limit, len(dataset))
    xs, ys = zip(*(dataset[i] for i in range(n)), strict=True)
    return torch.stack(xs), torch.tensor(ys)


def example_batch(dataset: Dataset, n: int = 8) -> torch.Tensor:
    """A few inputs at the real resolution, for recording conv input sizes."""
    return torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))])


def data_signature(spec, run) -> str:
    """Cheap identity of a dataset on disk (names, sizes, mtimes), for checkpoint fingerprints."""
    if spec.source == "digits":
        return "digits"
    root = resolve_root(spec.root)
    if root is None or not root.exists():
        return "missing"
    meta = sorted(root.rglob("meta.json")) if spec.source == "shards" else []
    return ";".join(file_digest(m) for m in meta) or str(root.resolve())


def spectral_summary(model, example: torch.Tensor, fold_bn: bool = False) -> dict[str, float]:
    """Exact σ_max of every backbone weight layer and Σ σ_max² (plain, or BatchNorm-folded)."""
    from pipeline.regularizers import spectral_summary as summarize

    return summarize(model, example, fold_bn=fold_bn)
