"""A model over a dataset in eval mode: test accuracy and frozen features, sharded over ranks.

Used by training (per-epoch evaluation), the readout and SSL monitoring alike; it needs no
training code. Under DDP (``world > 1``, process group initialized) each rank runs its own
unpadded share of the dataset (every ``world``-th sample) and the results are combined, so every
sample counts exactly once. Every rank must call these functions together.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    rank: int = 0,
    world: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(features, logits, labels)`` on ``device`` for this rank's share, in order."""
    model.eval()
    # Every world-th sample from this rank's, in order, with torch's own loader: models need
    # nothing of pipeline.data (the schema has checked batch_size and num_workers).
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=range(rank, len(dataset), world),
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        feats = model.representation(x)
        yield feats, model.head(feats), torch.as_tensor(y).to(device, non_blocking=True)


def evaluate_accuracy(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    *,
    world: int = 1,
    **options,
) -> dict[str, float]:
    """``test_acc`` and mean cross-entropy ``test_loss`` over the whole dataset (all ranks).

    ``options`` (``batch_size``, ``num_workers``, ``rank``) go to :func:`predict_batches`."""
    # loss sum, correct, count: accumulated on the device and read once at the end
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    count = 0
    for _, logits, y in predict_batches(model, dataset, device, world=world, **options):
        logits = logits.float()
        loss = nn.functional.cross_entropy(logits, y, reduction="sum")
        correct = (logits.argmax(1) == y).sum()
        sums[:2] += torch.stack([loss.double(), correct.double()])
        count += len(y)
    sums[2] = count
    if world > 1:
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    loss, correct, total = sums.tolist()
    total = max(total, 1.0)
    return {"test_acc": correct / total, "test_loss": loss / total}


def dataset_features(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    *,
    world: int = 1,
    **options,
) -> tuple[np.ndarray, np.ndarray]:
    """Float32 features ``(N, D)`` and labels ``(N,)`` of the whole dataset, in dataset order,
    on every rank (each rank computes its share; the shares are gathered and interleaved).

    ``options`` (``batch_size``, ``num_workers``, ``rank``) go to :func:`predict_batches`."""
    feats, labels = [], []
    for f, _, y in predict_batches(model, dataset, device, world=world, **options):
        feats.append(f.float().cpu().numpy())
        labels.append(y.cpu().numpy())
    local = (np.concatenate(feats), np.concatenate(labels)) if feats else None
    if world == 1:
        if local is None:
            raise ValueError("cannot extract features of an empty dataset")
        return local
    shares: list = [None] * world
    dist.all_gather_object(shares, local)
    n = len(dataset)
    first = next(s for s in shares if s is not None)
    out_f = np.empty((n, first[0].shape[1]), dtype=first[0].dtype)
    out_y = np.empty(n, dtype=first[1].dtype)
    for r, share in enumerate(shares):  # rank r holds samples r, r + world, r + 2 world, ...
        if share is not None:
            out_f[r::world], out_y[r::world] = share
    return out_f, out_y
