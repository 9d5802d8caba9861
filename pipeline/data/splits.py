"""The datasets a ``DataSpec`` describes: a split opened (a source, or prepared shards held in
memory or read from disk), cut to its limit, turned into pixel tensors; and the normalization
statistics the model applies to them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.shards import open_shards
from pipeline.data.sources import open_source
from pipeline.data.transforms import default_stats, to_pixel_tensor


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


def load_pixels(dataset: Dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(dataset) if limit is None else min(limit, len(dataset))
    xs, ys = zip(*(dataset[i] for i in range(n)), strict=True)
    return torch.stack(xs), torch.tensor(ys)


def example_batch(dataset: Dataset, n: int = 8) -> torch.Tensor:
    """A few inputs at the real resolution, for recording conv input sizes."""
    return torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))])
