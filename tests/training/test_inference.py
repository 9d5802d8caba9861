"""Evaluation and features: every sample once, the same on one process, two ranks or workers."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.models import build_model
from pipeline.models.inference import dataset_features, evaluate_accuracy

N = 13  # odd: two ranks get 7 and 6 samples, with no padding


class _Tensors(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.x = torch.rand(N, 1, 8, 8, generator=g)
        self.y = torch.randint(0, 3, (N,), generator=g)

    def __len__(self):
        return N

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _model():
    torch.manual_seed(0)
    model = build_model(NS(arch="small_resnet", widths=[4, 4, 8, 8], blocks=[1, 1, 1, 1]), 1, 3, 8)
    return model.eval()


def _truth():
    """Ground truth from one full-batch forward pass."""
    data, model = _Tensors(), _model()
    with torch.no_grad():
        feats = model.representation(data.x)
        logits = model.head(feats)
    loss = torch.nn.functional.cross_entropy(logits, data.y).item()
    acc = (logits.argmax(1) == data.y).double().mean().item()
    return acc, loss, feats.numpy(), data.y.numpy()


def test_single_process_matches_one_full_batch_forward():
    acc, loss, feats, labels = _truth()
    cpu = torch.device("cpu")
    got = evaluate_accuracy(_model(), _Tensors(), cpu, batch_size=4, num_workers=2)
    assert got["test_acc"] == pytest.approx(acc) and got["test_loss"] == pytest.approx(loss)
    f, y = dataset_features(_model(), _Tensors(), cpu, batch_size=5)
    np.testing.assert_allclose(f, feats, rtol=1e-5, atol=1e-6)
    assert y.tolist() == labels.tolist()


def _rank(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        cpu = torch.device("cpu")
        metrics = evaluate_accuracy(_model(), _Tensors(), cpu, batch_size=4, rank=rank, world=world)
        f, y = dataset_features(_model(), _Tensors(), cpu, batch_size=3, rank=rank, world=world)
        torch.save(
            {"metrics": metrics, "features": torch.from_numpy(f), "labels": y}, f"{out}{rank}"
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_each_evaluate_a_share_and_agree_with_the_whole(tmp_path):
    acc, loss, feats, labels = _truth()
    out = str(tmp_path / "rank")
    mp.spawn(_rank, args=(2, f"file://{tmp_path / 'pg'}", out), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(f"{out}{rank}", weights_only=False)
        assert got["metrics"]["test_acc"] == pytest.approx(acc)  # 13 samples, counted once each
        assert got["metrics"]["test_loss"] == pytest.approx(loss)
        np.testing.assert_allclose(got["features"].numpy(), feats, rtol=1e-5, atol=1e-6)
        assert got["labels"].tolist() == labels.tolist()
