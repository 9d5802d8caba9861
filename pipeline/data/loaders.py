"""DataLoaders with reproducible order: the shuffle of epoch ``e`` depends only on (seed, e).

A resumed run that calls ``set_epoch(loader, e)`` sees exactly the batches the interrupted run
would have seen, on one process or under DDP.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    Sampler,
    SequentialSampler,
)

from pipeline.data.transforms import plain_tensor
from pipeline.core.errors import ConfigError, DatasetError


class TransformedDataset(Dataset):
    """Applies ``transform`` to the image of each ``(image, label)`` pair; keeps the metadata.

    Sources stay transform-free so one opened dataset can feed train and eval pipelines.
    """

    def __init__(self, dataset: Dataset, transform: Callable | None):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[index]
        return (self.transform(image) if self.transform else image), label

    def __getattr__(self, name: str) -> Any:
        # classes, num_classes, channels, name, targets... of the wrapped dataset
        if name in ("dataset", "transform"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


class EpochShuffleSampler(Sampler[int]):
    """A random permutation per epoch, drawn from ``(seed, epoch)`` alone (like
    ``DistributedSampler`` for one process), so re-iterating or resuming repeats the order."""

    def __init__(self, length: int, seed: int = 0):
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.length, generator=g).tolist())


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and NumPy in each worker from torch's per-worker seed (torch docs recipe)."""
    del worker_id
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


class SeededLoader(DataLoader):
    """A DataLoader whose ``set_epoch`` fixes both the sample order and the worker seeds."""

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any):
        self.seed = int(seed)
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        super().__init__(*args, generator=generator, worker_init_fn=seed_worker, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch (also after resuming) so its order depends on (seed, epoch)."""
        for part in (self.sampler, self.dataset):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)
        # Workers' base seed is drawn from this generator when iteration starts.
        self.generator.manual_seed(self.seed * 1_000_003 + int(epoch))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    seed: int = 0,
    distributed: bool = False,
    *,
    transform: Callable | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> SeededLoader:
    """A DataLoader that shuffles (when ``train``) by epoch from ``seed``; see ``set_epoch``.

    ``distributed`` uses ``DistributedSampler`` (rank and world size from the initialized
    process group; it pads to equal shards, so eval under DDP may repeat a few samples). A
    streaming ``IterableDataset`` (``ShardDataset``) shuffles and splits itself. ``transform``
    wraps the dataset in ``TransformedDataset``. Augmentation in workers is reproducible; with
    ``num_workers=0`` it draws from the global torch RNG (seed it with ``torch.manual_seed``).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers must be a non-negative integer; got {num_workers!r}")
    if transform is not None:
        if isinstance(dataset, IterableDataset):
            dataset = copy.copy(dataset)  # ShardDataset applies it while streaming
            dataset.transform = transform
        else:
            dataset = TransformedDataset(dataset, transform)
    sampler: Sampler | None
    if isinstance(dataset, IterableDataset):
        sampler = None
    elif distributed:
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=drop_last)
    elif train:
        sampler = EpochShuffleSampler(len(dataset), seed)
    else:
        sampler = SequentialSampler(dataset)
    return SeededLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        seed=seed,
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """``loader.set_epoch(epoch)`` for loaders from ``make_loader``; for any other DataLoader,
    forwards the epoch to its sampler or streaming dataset."""
    if isinstance(loader, SeededLoader):
        loader.set_epoch(epoch)
        return
    for part in (loader.sampler, loader.dataset):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)


def load_tensors(
    dataset: Dataset,
    transform: Callable | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole (small) dataset as ``X`` float ``(N, C, H, W)`` and ``y`` long ``(N,)``, in order.

    Without ``transform`` images become [0, 1] pixel tensors at their own size (what the
    readout and the pixel-space attack want); images of differing sizes need a resizing one.
    """
    if transform is None:
        transform = plain_tensor(getattr(dataset, "channels", 3))
    loader = make_loader(
        dataset, batch_size, train=False, num_workers=num_workers, transform=transform
    )
    xs, ys = [], []
    try:
        for x, y in loader:
            xs.append(x)
            ys.append(torch.as_tensor(y, dtype=torch.long))
    except RuntimeError as e:
        if "stack expects" not in str(e):
            raise
        raise ConfigError(
            "images differ in size; pass a transform that resizes them (e.g. to_pixel_tensor)"
        ) from None
    if not xs:
        raise DatasetError(f"cannot load an empty dataset into tensors: {dataset!r}")
    return torch.cat(xs), torch.cat(ys)


__all__ = [
    "EpochShuffleSampler",
    "SeededLoader",
    "TransformedDataset",
    "load_tensors",
    "make_loader",
    "seed_worker",
    "set_epoch",
]
