"""Deterministic epoch ordering and per-sample augmentation seeds.

The permutation of epoch ``e`` depends only on ``(seed, e)``, and the random augmentation of
sample ``i`` in epoch ``e`` only on ``(seed, e, i)``. A run resumed mid-epoch therefore sees
exactly the batches an uninterrupted run would, whatever the number of loader workers.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def mix_seed(*values: int) -> int:
    """A deterministic 63-bit seed from a tuple of integers (no Python hash randomization)."""
    h = 1469598103934665603
    for v in values:
        h = ((h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


class EpochSampler(Sampler[int]):
    """Shuffled (or ordered) indices for one epoch, sharded over ``world`` ranks, with a start offset.

    Like ``DistributedSampler`` it pads by repeating indices so every rank gets the same count.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.epoch = 0
        self.skip = 0
        self.per_rank = math.ceil(n / world)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """``skip`` local samples already consumed (resume mid-epoch)."""
        self.epoch, self.skip = epoch, skip

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world
        order += order[: total - len(order)]
        return order[self.rank : total : self.world]

    def __iter__(self):
        return iter(self._order()[self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip


class SeededTransform(Dataset):
    """Applies ``transform`` to ``dataset[i]`` under a private RNG seeded by (seed, epoch, i)."""

    def __init__(self, dataset, transform, seed: int = 0):
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
