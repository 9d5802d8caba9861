"""The one loader stack: reproducible epoch order, per-sample augmentation seeds, batching.

The random augmentation of sample ``i`` in epoch ``e`` depends only on ``(seed, e, i)``.
Datasets read by index are trained on in a permutation of ``(seed, e)`` (whatever the number
of loader workers); shard sets on disk (``ShardDataset``) are streamed in an order drawn from
``(seed, e)``, the world size and the number of workers. Either way a run resumed mid-epoch sees
exactly the batches an uninterrupted run would (:class:`EpochBatches`). Evaluation reads in
order (:func:`make_loader` here; :mod:`pipeline.models.inference` with torch's loader directly).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.transforms import plain_tensor


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


def seeded_call(transform: Callable, image: Any, seed: int) -> Any:
    """``transform(image)`` under private RNGs seeded by ``seed``; the global RNGs are untouched."""
    # Some augmentations (e.g. lightly's blur) draw from numpy / random, not torch: seed all.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            # CPU generator only: torch.manual_seed would also queue lazy CUDA/XPU seeding
            # calls (each formatting a stack trace) once per sample.
            torch.random.default_generator.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            return transform(image)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


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
        return seeded_call(self.transform, image, mix_seed(self.seed, self.epoch, i)), label

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


class EpochBatches:
    """One rank's training batches, epoch by epoch, resumable after any step.

    A dataset read by index goes through :class:`EpochSampler`; a shard set on disk (anything
    with ``training_stream``, possibly inside a :class:`SeededTransform`, whose transform and
    seed it then applies itself) is streamed by its own ``ShardStream``.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        self.dataset, self.batch_size = dataset, batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        seeded = isinstance(dataset, SeededTransform)
        source = dataset.dataset if seeded else dataset
        self.stream = None
        if hasattr(source, "training_stream"):
            self.stream = source.training_stream(
                dataset.transform if seeded else None,
                batch_size=batch_size,
                order_seed=seed,
                augment_seed=dataset.seed if seeded else seed,
                rank=rank,
                world=world,
                num_workers=num_workers,
            )
            self.steps_per_epoch = self.stream.steps_per_epoch
        else:
            self.sampler = EpochSampler(len(dataset), seed=seed, rank=rank, world=world)
            self.steps_per_epoch = self.sampler.per_rank // batch_size
        # What the order depends on besides (seed, epoch): a resume needs the same.
        self.layout = {
            "streamed": self.stream is not None,
            "world": world,
            "num_workers": num_workers if self.stream is not None else None,
        }

    def epoch(self, epoch: int, skip_steps: int = 0) -> DataLoader:
        """The batches of ``epoch`` after the first ``skip_steps``."""
        if self.stream is not None:
            self.stream.set_epoch(epoch, skip_steps)
            return DataLoader(
                self.stream,
                batch_size=None,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
            )
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch, skip=skip_steps * self.batch_size)
        return make_loader(
            self.dataset,
            self.batch_size,
            sampler=self.sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=True,
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


__all__ = [
    "EpochBatches",
    "EpochSampler",
    "SeededTransform",
    "load_tensors",
    "make_loader",
    "mix_seed",
    "seeded_call",
]
