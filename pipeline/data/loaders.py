"""The one loader stack: reproducible epoch order, per-sample augmentation seeds, batching.

The permutation of epoch ``e`` depends only on ``(seed, e)``, and the random augmentation of
sample ``i`` in epoch ``e`` only on ``(seed, e, i)``. A run resumed mid-epoch therefore sees
exactly the batches an uninterrupted run would, whatever the number of loader workers or ranks.
Training (shuffled, padded shards per rank) and evaluation (in order, unpadded shards) both
batch through :func:`make_loader`.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from pipeline.data.transforms import plain_tensor
from pipeline.core.errors import ConfigError, DatasetError


def mix_seed(*values: int) -> int:
    """A deterministic 63-bit seed from a tuple of integers (no Python hash randomization)."""
    h = 1469598103934665603
    for v in values:
        h = ((h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


class EpochSampler(Sampler[int]):
    """Indices of one epoch (a ``(seed, epoch)`` permutation, or in order), this rank's share.

    Rank ``r`` of ``world`` takes every ``world``-th index from ``r``. With ``pad`` (training)
    indices repeat so every rank gets ``ceil(n / world)`` and steps stay in lockstep, as
    ``DistributedSampler`` does; without it (evaluation) each index is seen exactly once.
    ``set_epoch(e, skip)`` drops the first ``skip`` local indices (resume mid-epoch).
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world: int = 1,
        pad: bool = True,
    ):
        if not 0 <= rank < world:
            raise ConfigError(f"rank {rank} is outside world size {world}")
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.pad = pad
        self.epoch = 0
        self.skip = 0
        self.per_rank = math.ceil(n / world) if pad else len(range(rank, n, world))

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.pad:
            total = self.per_rank * self.world
            order += order[: total - len(order)]
        return order[self.rank :: self.world]

    def __iter__(self):
        return iter(self._order()[self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip


class SeededTransform(Dataset):
    """``transform`` applied to the image of ``dataset[i]`` under a private RNG seeded by
    (seed, epoch, i); the wrapped dataset's metadata (classes, channels, ...) shows through.

    Sources stay transform-free so one opened dataset can feed train and eval pipelines.
    """

    def __init__(self, dataset: Dataset, transform: Callable, seed: int = 0):
        self.dataset, self.transform, self.seed = dataset, transform, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, label = self.dataset[i]
        seed = mix_seed(self.seed, self.epoch, i)
        # Some augmentations (e.g. lightly's blur) draw from numpy / random, not torch: seed all.
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                # CPU generator only: torch.manual_seed would also queue lazy CUDA/XPU seeding
                # calls (each formatting a stack trace) once per sample.
                torch.random.default_generator.manual_seed(seed)
                np.random.seed(seed % 2**32)
                random.seed(seed)
                out = self.transform(image)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        return out, label

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "transform", "seed", "epoch"):  # not yet set (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    sampler: Sampler | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """Batches of ``dataset`` in ``sampler``'s order (in order without one).

    Workers are made afresh per iteration so they see ``set_epoch``; randomness lives in
    :class:`SeededTransform`, so results do not depend on ``num_workers``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"run.num_workers must be a non-negative integer; got {num_workers!r}")
    if sampler is not None and isinstance(dataset, IterableDataset):
        raise ConfigError("a streaming dataset orders itself; it takes no sampler")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


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
    if isinstance(dataset, IterableDataset):
        dataset = _with_transform(dataset, transform)
    else:
        dataset = SeededTransform(dataset, transform)
    xs, ys = [], []
    try:
        for x, y in make_loader(dataset, batch_size, num_workers=num_workers):
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


def _with_transform(stream: IterableDataset, transform: Callable) -> IterableDataset:
    """A copy of a streaming dataset (``ShardDataset``) that applies ``transform`` itself."""
    stream = copy.copy(stream)
    stream.transform = transform
    return stream


__all__ = [
    "EpochSampler",
    "SeededTransform",
    "load_tensors",
    "make_loader",
    "mix_seed",
]
