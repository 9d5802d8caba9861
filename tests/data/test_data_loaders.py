"""Loaders: per-epoch reproducible shuffling, DDP sampler, worker seeding, tensors helper."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.distributed as dist
from data_fakes import write_image
from torch.utils.data import DistributedSampler

from pipeline.data import (
    ArrayDataset,
    ShardDataset,
    TransformedDataset,
    load_tensors,
    make_loader,
    open_source,
    set_epoch,
    to_pixel_tensor,
    write_shards,
)
from pipeline.data.loaders import EpochShuffleSampler
from pipeline.core.errors import ConfigError


def indexed(n: int = 20) -> ArrayDataset:
    """Grayscale images whose single pixel value is their index."""
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1)
    return ArrayDataset("indexed", images, [i % 2 for i in range(n)], ["even", "odd"])


def to_index(img) -> int:
    return int(np.asarray(img)[0, 0])


def order(loader, epoch: int) -> list[int]:
    set_epoch(loader, epoch)
    return [int(i) for batch, _ in loader for i in batch]


def test_train_shuffle_depends_only_on_seed_and_epoch():
    a = make_loader(indexed(), 4, train=True, seed=5, transform=to_index)
    b = make_loader(indexed(), 4, train=True, seed=5, transform=to_index)
    assert order(a, 0) == order(a, 0) == order(b, 0)
    assert order(a, 1) != order(a, 0) and order(a, 3) == order(b, 3)
    assert sorted(order(a, 1)) == list(range(20)) and order(a, 0) != list(range(20))
    c = make_loader(indexed(), 4, train=True, seed=6, transform=to_index)
    assert order(c, 0) != order(a, 0)
    assert isinstance(a.sampler, EpochShuffleSampler)


def test_eval_loader_keeps_order_and_drop_last():
    loader = make_loader(indexed(), 6, train=False, transform=to_index)
    assert order(loader, 4) == list(range(20))
    dropped = make_loader(indexed(), 6, train=True, transform=to_index, drop_last=True)
    assert len(list(dropped)) == 3


def test_distributed_uses_distributed_sampler(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        loader = make_loader(indexed(), 5, train=True, seed=2, distributed=True, transform=to_index)
        assert isinstance(loader.sampler, DistributedSampler)
        assert order(loader, 0) == order(loader, 0) != order(loader, 1)
        assert sorted(order(loader, 1)) == list(range(20))
    finally:
        dist.destroy_process_group()


class Noise:
    """A random augmentation drawing from torch's RNG (as torchvision transforms do)."""

    def __call__(self, img) -> torch.Tensor:
        return torch.rand(1) + to_index(img)


def test_worker_augmentation_reproducible_per_epoch():
    loader = make_loader(indexed(8), 4, train=True, num_workers=2, seed=0, transform=Noise())
    e0 = order_values(loader, 0)
    assert torch.equal(e0, order_values(loader, 0))
    assert not torch.equal(e0, order_values(loader, 1))


def order_values(loader, epoch: int) -> torch.Tensor:
    set_epoch(loader, epoch)
    return torch.cat([x for x, _ in loader])


def test_transformed_dataset_keeps_metadata():
    ds = open_source("digits", None, "test", classes=[0, 1])
    wrapped = TransformedDataset(ds, to_pixel_tensor(False, 16, 1, "none"))
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


def test_bad_loader_arguments():
    with pytest.raises(ConfigError, match="batch_size"):
        make_loader(indexed(), 0, train=True)
    with pytest.raises(ConfigError, match="num_workers"):
        make_loader(indexed(), 2, train=True, num_workers=-1)
