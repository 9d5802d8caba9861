"""Shard sets read from disk: by index (evaluation, attacks) and streamed (training).

Ground truths: the in-memory reader for contents, the map-style ``SeededTransform`` for
per-sample augmentation, and an uninterrupted epoch for every resumed one.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.errors import DatasetError
from pipeline.data import ArrayDataset, write_shards
from pipeline.data.loaders import EpochBatches, SeededTransform
from pipeline.data.shard_stream import delivered, epoch_segments, worker_batches
from pipeline.data.shards import InMemoryShards, ShardDataset, open_shards, read_meta
from pipeline.data.transforms import plain_tensor

N = 37  # 8 shards of 5 (the last holds 2): not a multiple of any world size below


def indexed_rgb(n: int = N) -> ArrayDataset:
    """RGB images whose pixel [0, 0, 0] is their index; label = index % 3."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 6, 5, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    return ArrayDataset("toy", images, [i % 3 for i in range(n)], ["a", "b", "c"])


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    write_shards(indexed_rgb(), tmp_path / "s", maxcount=5)
    return tmp_path / "s"


class Noisy:
    """Picklable random augmentation: the pixels plus noise from torch's global RNG."""

    def __call__(self, image):
        x = plain_tensor(3)(image)
        return x + torch.rand(()) * 1e-3


def sample_ids(x: torch.Tensor) -> list[int]:
    return (x[:, 0, 0, 0] * 255).round().long().tolist()


def epoch_batches(shard_dir, *, buffer=4, seed=1, epoch=0, skip=0, batch=4, **layout):
    shards = ShardDataset(shard_dir, shuffle_buffer=buffer)
    batches = EpochBatches(SeededTransform(shards, Noisy(), seed=7), batch, seed=seed, **layout)
    return [(x, y) for x, y in batches.epoch(epoch, skip_steps=skip)], batches


def test_reads_by_index_match_the_in_memory_reader(shard_dir: Path):
    disk, memory = ShardDataset(shard_dir), InMemoryShards(shard_dir)
    assert len(disk) == len(memory) == N and read_meta(shard_dir)["counts"] == [5] * 7 + [2]
    for i in [*range(N), 36, 0, 12, 11, 30]:  # in order, then jumping between shards
        (a, la), (b, lb) = disk[i], memory[i]
        assert la == lb and np.array_equal(np.asarray(a), np.asarray(b))
    assert [label for _, label in disk] == memory.targets  # in order, one pass per shard
    limited = ShardDataset(shard_dir, limit=12)
    assert len(limited) == 12 and len(limited.counts) == 3
    with pytest.raises(IndexError):
        limited[12]
    assert isinstance(open_shards(shard_dir), ShardDataset)


def test_truncated_shard_is_a_dataset_error_naming_it(shard_dir: Path):
    shard = shard_dir / "shard-000002.tar"
    shard.write_bytes(shard.read_bytes()[: 3 * 1024])
    disk = ShardDataset(shard_dir)
    with pytest.raises(DatasetError, match="shard-000002.tar"):
        disk[13]
    with pytest.raises(DatasetError, match="shard-000002.tar"):
        epoch_batches(shard_dir, batch=1)


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (1, 2), (2, 0), (2, 3), (3, 2)])
def test_every_sample_once_per_epoch_whatever_the_ranks_and_workers(shard_dir, world, workers):
    seen = Counter()
    for rank in range(world):
        got, batches = epoch_batches(
            shard_dir, batch=1, rank=rank, world=world, num_workers=workers
        )
        assert len(got) == batches.steps_per_epoch == -(-N // world)  # lockstep across ranks
        seen.update(i for x, _ in got for i in sample_ids(x))
    # Every sample once; ranks are padded to equal length by repeating the epoch's first ones.
    assert set(seen) == set(range(N)) and sum(seen.values()) == world * -(-N // world)
    assert sum(c - 1 for c in seen.values()) == world * -(-N // world) - N


def test_labels_and_augmentation_match_the_map_style_path(shard_dir: Path):
    reference = SeededTransform(InMemoryShards(shard_dir), Noisy(), seed=7)
    reference.set_epoch(3)
    got, _ = epoch_batches(shard_dir, epoch=3, num_workers=2)
    for x, y in got:
        for xi, yi, i in zip(x, y, sample_ids(x), strict=True):
            expected, label = reference[i]
            assert yi == label and torch.equal(xi, expected)


def test_order_is_a_function_of_seed_and_epoch(shard_dir: Path):
    def ids(**kw):
        return [sample_ids(x) for x, _ in epoch_batches(shard_dir, **kw)[0]]

    first = ids(epoch=0)
    assert ids(epoch=0) == first
    assert ids(epoch=1) != first and ids(seed=2) != first
    assert ids(epoch=0, num_workers=2) == ids(epoch=0, num_workers=2)
    flat = [i for b in first for i in b]
    assert flat != sorted(flat) and len(set(flat)) == len(flat)


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (2, 2), (1, 3)])
def test_resume_after_any_step_gives_the_rest_of_the_uninterrupted_epoch(shard_dir, world, workers):
    full, batches = epoch_batches(shard_dir, rank=world - 1, world=world, num_workers=workers)
    assert len(full) == batches.steps_per_epoch
    for skip in range(1, len(full)):
        rest, _ = epoch_batches(
            shard_dir, skip=skip, rank=world - 1, world=world, num_workers=workers
        )
        assert len(rest) == len(full) - skip
        for (a, ya), (b, yb) in zip(full[skip:], rest, strict=True):
            assert torch.equal(a, b) and torch.equal(ya, yb)


def test_shuffle_buffer_bounds_how_far_a_sample_moves_ahead(shard_dir: Path):
    segments = epoch_segments(ShardDataset(shard_dir).counts, 1, 0, 0, 1)
    read = [s * 5 + i for s, a, b in segments for i in range(a, b)]
    for buffer in (0, 3, 8):
        got = [
            i for x, _ in epoch_batches(shard_dir, buffer=buffer, batch=1)[0] for i in sample_ids(x)
        ]
        assert sorted(got) == sorted(read)
        emitted_at = {i: p for p, i in enumerate(got)}
        # An item read at position p leaves the buffer no earlier than position p - buffer.
        assert all(emitted_at[i] >= p - buffer for p, i in enumerate(read))
        assert (got == read) == (buffer <= 1)


def test_worker_blocks_and_round_robin_delivery():
    assert worker_batches(10, 3) == [4, 3, 3] and worker_batches(2, 3) == [1, 1, 0]
    assert worker_batches(5, 0) == [5]
    # round robin over [2, 1, 1]: w0 w1 w2 w0, then nothing is next (0)
    assert [delivered([2, 1, 1], k) for k in range(5)] == [
        ([0, 0, 0], 0), ([1, 0, 0], 1), ([1, 1, 0], 2), ([1, 1, 1], 0), ([2, 1, 1], 0),
    ]  # fmt: skip


def test_write_order_shuffles_samples_once(tmp_path: Path):
    source = indexed_rgb()
    write_shards(source, tmp_path / "mixed", maxcount=5, shuffle_seed=4)
    mixed = ShardDataset(tmp_path / "mixed")
    order = [int(np.asarray(mixed[i][0])[0, 0, 0]) for i in range(N)]
    assert sorted(order) == list(range(N)) and order != list(range(N))
    assert [mixed[i][1] for i in range(N)] == [source.targets[j] for j in order]
    again = tmp_path / "again"
    write_shards(source, again, maxcount=5, shuffle_seed=4)
    for name in read_meta(again)["shards"]:  # byte-for-byte reproducible
        assert (again / name).read_bytes() == (tmp_path / "mixed" / name).read_bytes()
