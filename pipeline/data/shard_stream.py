"""The order a rank's training batches stream from a shard set, epoch by epoch.

Training reads a :class:`~pipeline.data.shards.ShardDataset` as whole shards front to back, in
an order drawn per epoch and split across ranks (:func:`epoch_segments`) and DataLoader workers
(:func:`worker_batches`), through a bounded shuffle buffer; where a resumed epoch picks up
follows from the batches each worker had delivered (:func:`delivered`). This module decides the
order only: reading and decoding samples is the shard set's (``read_encoded``, ``decode``).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch.utils.data import IterableDataset, get_worker_info
from torch.utils.data.dataloader import default_collate

from pipeline.core.errors import ConfigError
from pipeline.data.loaders import mix_seed, seeded_call


class ShardSource(Protocol):
    """What a stream reads from its shard set (a :class:`~pipeline.data.shards.ShardDataset`)."""

    counts: list[int]  # samples per shard
    starts: list[int]  # index of each shard's first sample
    shuffle_buffer: int

    def __len__(self) -> int: ...

    def read_encoded(self, shard: int, start: int, stop: int) -> Iterator[dict[str, Any]]: ...

    def decode(self, sample: dict[str, Any]) -> tuple[Any, int]: ...


Segment = tuple[int, int, int]  # (shard, first sample, end sample) within that shard


def _take(segments: list[Segment], lo: int, hi: int) -> list[Segment]:
    """Positions ``lo..hi-1`` of the sample sequence that ``segments`` lay end to end."""
    out, pos = [], 0
    for shard, a, b in segments:
        s, e = max(lo, pos), min(hi, pos + b - a)
        if s < e:
            out.append((shard, a + s - pos, a + e - pos))
        pos += b - a
    return out


def epoch_segments(
    counts: list[int], seed: int, epoch: int, rank: int, world: int
) -> list[Segment]:
    """Rank ``rank``'s share of epoch ``epoch``, before the shuffle buffer.

    The shards, in an order drawn from ``(seed, epoch)``, make one sequence of ``n`` samples;
    rank ``r`` takes positions ``[r p, (r + 1) p)`` with ``p = ceil(n / world)``, wrapping to
    the start for the last rank (every rank gets ``p``, so DDP steps stay in lockstep). A rank
    thus reads whole shards but at most two shared with a neighbour.
    """
    n = sum(counts)
    order = list(range(len(counts)))
    random.Random(mix_seed(seed, epoch)).shuffle(order)
    sequence = [(s, 0, counts[s]) for s in order if counts[s]]
    per_rank = -(-n // world)
    lo, hi = rank * per_rank, (rank + 1) * per_rank
    # Wrapping covers at most one extra pass: world > n has no sample for some ranks anyway.
    return _take(sequence, lo, min(hi, n)) + _take(sequence, max(lo, n) - n, hi - n)


def worker_batches(steps: int, workers: int) -> list[int]:
    """Batches per DataLoader worker: contiguous blocks, the first ``steps % workers`` one longer."""
    workers = max(workers, 1)
    return [steps // workers + (w < steps % workers) for w in range(workers)]


def delivered(counts: list[int], steps: int) -> tuple[list[int], int]:
    """Batches each worker had delivered after ``steps`` loader steps, and the worker whose
    batch comes next.

    A DataLoader over an iterable dataset takes batches from its workers in turn, skipping
    workers that have run out: batch ``t`` of every worker still going, round after round.
    """
    out = [0] * len(counts)
    left = steps
    for t in range(max(counts, default=0)):
        for w, c in enumerate(counts):
            if c > t:
                if left == 0:
                    return out, w
                out[w] += 1
                left -= 1
    return out, 0


def _shuffled(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """A bounded shuffle: each incoming item swaps with a random one of ``size`` held."""
    if size <= 1:
        yield from items
        return
    held: list[Any] = []
    for item in items:
        if len(held) < size:
            held.append(item)
            continue
        j = rng.randrange(size)
        yield held[j]
        held[j] = item
    rng.shuffle(held)
    yield from held


class ShardStream(IterableDataset):
    """One rank's training batches over a :class:`ShardDataset`, epoch by epoch.

    The rank's share (:func:`epoch_segments`) is cut into ``steps = share // batch_size`` batches,
    handed to the DataLoader workers as contiguous blocks; each worker reads its shards front to
    back through a shuffle buffer seeded by ``(seed, epoch, rank, worker)``, and sample ``i`` is
    augmented under the seed ``(augment_seed, epoch, i)``, as :class:`SeededTransform` does.
    The order therefore depends only on the seed, the epoch, the world size and the number of
    workers; ``set_epoch(e, skip)`` resumes after ``skip`` batches, each worker dropping (before
    decoding) exactly the samples of the batches it had delivered.
    """

    def __init__(
        self,
        shards: ShardSource,
        transform: Callable | None,
        *,
        batch_size: int,
        order_seed: int,
        augment_seed: int,
        rank: int = 0,
        world: int = 1,
        num_workers: int = 0,
    ):
        if not 0 <= rank < world:
            raise ConfigError(f"rank {rank} is outside world size {world}")
        self.shards, self.transform = shards, transform
        self.batch_size, self.order_seed, self.augment_seed = batch_size, order_seed, augment_seed
        self.rank, self.world, self.num_workers = rank, world, num_workers
        self.per_rank = -(-len(shards) // world)
        self.steps_per_epoch = self.per_rank // batch_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)

    def worker_plan(self, worker: int) -> tuple[list[Segment], int]:
        """The segments worker ``worker`` reads this epoch and the batches it skips first."""
        counts = worker_batches(self.steps_per_epoch, self.num_workers)
        first = sum(counts[:worker]) * self.batch_size
        share = epoch_segments(
            self.shards.counts, self.order_seed, self.epoch, self.rank, self.world
        )
        segments = _take(share, first, first + counts[worker] * self.batch_size)
        return segments, delivered(counts, self.skip)[0][worker]

    def _role(self, loader_worker: int) -> int:
        """The block a DataLoader worker reads. A loader starts its round robin at worker 0, so
        a resumed epoch rotates the roles: its worker 0 takes the block whose batch is next."""
        counts = worker_batches(self.steps_per_epoch, self.num_workers)
        return (loader_worker + delivered(counts, self.skip)[1]) % len(counts)

    def _samples(self, segments: list[Segment]) -> Iterator[tuple[int, dict[str, Any]]]:
        for shard, a, b in segments:
            first = self.shards.starts[shard]
            for i, sample in enumerate(self.shards.read_encoded(shard, a, b)):
                yield first + a + i, sample

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        info = get_worker_info()
        if (1 if info is None else info.num_workers) != max(self.num_workers, 1):
            raise ConfigError("ShardStream: read it through a DataLoader with its num_workers")
        worker = self._role(0 if info is None else info.id)
        segments, skip = self.worker_plan(worker)
        rng = random.Random(mix_seed(self.order_seed, self.epoch, self.rank, worker))
        samples = _shuffled(self._samples(segments), self.shards.shuffle_buffer, rng)
        batch = []
        for index, sample in itertools.islice(samples, skip * self.batch_size, None):
            image, label = self.shards.decode(sample)
            if self.transform is not None:
                seed = mix_seed(self.augment_seed, self.epoch, index)
                image = seeded_call(self.transform, image, seed)
            batch.append((image, label))
            if len(batch) == self.batch_size:
                yield default_collate(batch)
                batch = []

    def __len__(self) -> int:
        return self.steps_per_epoch - self.skip
