"""The one loader stack: epoch order from (seed, epoch), rank shares, seeded augmentation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from data_fakes import write_image

from pipeline.core.errors import ConfigError
from pipeline.data import (
    ArrayDataset,
    EpochSampler,
    SeededTransform,
    ShardDataset,
    load_tensors,
    make_loader,
    open_source,
    to_pixel_tensor,
    write_shards,
)


def indexed(n: int = 20) -> ArrayDataset:
    """Grayscale images whose single pixel value is their index."""
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1)
    return ArrayDataset("indexed", images, [i % 2 for i in range(n)], ["even", "odd"])


def to_index(img) -> int:
    return int(np.asarray(img)[0, 0])


def order(sampler: EpochSampler, epoch: int, skip: int = 0) -> list[int]:
    sampler.set_epoch(epoch, skip=skip)
    return list(sampler)


def test_epoch_order_depends_only_on_seed_and_epoch():
    a, b = EpochSampler(20, seed=5), EpochSampler(20, seed=5)
    assert order(a, 0) == order(a, 0) == order(b, 0)
    assert order(a, 1) != order(a, 0) and order(a, 3) == order(b, 3)
    assert sorted(order(a, 1)) == list(range(20)) and order(a, 0) != list(range(20))
    assert order(EpochSampler(20, seed=6), 0) != order(a, 0)
    assert order(EpochSampler(20, shuffle=False), 4) == list(range(20))


def test_rank_shares_pad_for_training_and_not_for_evaluation():
    full = order(EpochSampler(10, seed=3), 1)
    padded = [order(EpochSampler(10, seed=3, rank=r, world=3), 1) for r in range(3)]
    assert {len(s) for s in padded} == {4} and set(sum(padded, [])) == set(range(10))
    assert padded[0] == full[0::3]  # rank r takes every world-th index from r
    exact = [EpochSampler(10, shuffle=False, rank=r, world=3, pad=False) for r in range(3)]
    assert [len(s) for s in exact] == [4, 3, 3]
    assert sorted(i for s in exact for i in order(s, 0)) == list(range(10))
    with pytest.raises(ConfigError, match="rank 3"):
        EpochSampler(10, rank=3, world=3)


def test_resume_skips_exactly_the_consumed_samples():
    s = EpochSampler(20, seed=1, rank=1, world=2)
    whole = order(s, 2)
    assert order(s, 2, skip=4) == whole[4:] and len(s) == len(whole) - 4


class Noise:
    """A random augmentation drawing from torch's RNG (as torchvision transforms do)."""

    def __call__(self, img) -> torch.Tensor:
        return torch.rand(1) + to_index(img)


def values(dataset, epoch: int, num_workers: int) -> torch.Tensor:
    dataset.set_epoch(epoch)
    sampler = EpochSampler(len(dataset), seed=0)
    sampler.set_epoch(epoch)
    loader = make_loader(dataset, 4, sampler=sampler, num_workers=num_workers)
    return torch.cat([x for x, _ in loader])


def test_augmentation_is_the_same_with_or_without_workers():
    ds = SeededTransform(indexed(8), Noise(), seed=0)
    e0 = values(ds, 0, num_workers=0)
    assert torch.equal(e0, values(ds, 0, num_workers=2))
    assert not torch.equal(e0, values(ds, 1, num_workers=0))
    # the permutation of epoch 0, each with its own noise in [0, 1)
    assert torch.equal(e0.floor().long().flatten(), torch.tensor(order(EpochSampler(8, seed=0), 0)))


def test_seeded_transform_keeps_metadata():
    ds = open_source("digits", None, "test", classes=[0, 1])
    wrapped = SeededTransform(ds, to_pixel_tensor(False, 16, 1, "none"))
    assert wrapped.classes == ["0", "1"] and wrapped.num_classes == 2 and wrapped.channels == 1
    x, y = wrapped[3]
    assert x.shape == (1, 16, 16) and y == ds.targets[3]
    copy = pickle.loads(pickle.dumps(wrapped))  # what spawn-started workers receive
    assert copy.classes == ["0", "1"] and torch.equal(copy[3][0], x)


def test_load_tensors_whole_dataset():
    ds = open_source("digits", None, "test", classes=[3, 4])
    X, y = load_tensors(ds, batch_size=64)
    assert X.shape == (len(ds), 1, 8, 8) and X.dtype == torch.float32
    assert y.dtype == torch.long and y.tolist() == ds.targets
    assert float(X.min()) == 0.0 and float(X.max()) == 1.0
    assert torch.allclose(X[5, 0] * 255, torch.tensor(ds.images[5], dtype=torch.float32))
    X16, _ = load_tensors(ds, transform=to_pixel_tensor(False, 16, 1, "none"))
    assert X16.shape == (len(ds), 1, 16, 16)


def test_load_tensors_from_shards(tmp_path):
    ds = open_source("digits", None, "test", classes=[3, 4])
    write_shards(ds, tmp_path / "s", maxcount=40)
    X, y = load_tensors(ShardDataset(tmp_path / "s"))
    assert torch.equal(X, load_tensors(ds)[0]) and y.tolist() == ds.targets


def test_load_tensors_mixed_sizes_needs_resize(folder_root):
    ds = open_source("image_folder", folder_root, "train")
    ds.paths[0] = str(folder_root / "odd.png")
    write_image(folder_root / "odd.png", seed=1, size=(5, 5))
    with pytest.raises(ConfigError, match="differ in size"):
        load_tensors(ds)
    X, _ = load_tensors(ds, transform=to_pixel_tensor(False, 8, 3, "resize"))
    assert X.shape == (6, 3, 8, 8)


def test_bad_loader_arguments(tmp_path):
    with pytest.raises(ConfigError, match="batch_size"):
        make_loader(indexed(), 0)
    with pytest.raises(ConfigError, match="num_workers"):
        make_loader(indexed(), 2, num_workers=-1)
    write_shards(indexed(), tmp_path / "s", maxcount=10)
    stream = ShardDataset(tmp_path / "s").training_stream(
        None, batch_size=2, order_seed=0, augment_seed=0
    )
    with pytest.raises(ConfigError, match="no sampler"):
        make_loader(stream, 2, sampler=EpochSampler(20))
