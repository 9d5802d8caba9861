"""Streaming access to a test split for attacks: predictions in batches, then a few rows.

Memory stays bounded by one batch however large the split: predicting keeps only the labels and
predictions (two integers a sample), and only the drawn samples are then loaded.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.attacks.oracle import LabelOracle


def predict_split(
    oracle: LabelOracle, dataset: Dataset, *, batch_size: int, num_workers: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, predictions)`` of every sample of a map-style ``dataset`` of pixel tensors,
    predicted by ``oracle`` (so at the oracle's precision); the oracle's counts are left as
    they were."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    labels, preds = [], []
    total, per_sample = oracle.total_queries, oracle.per_sample
    for x, y in loader:
        preds.append(oracle(x.to(oracle.device)).cpu().numpy())
        labels.append(np.asarray(y, dtype=np.int64))
    oracle.total_queries, oracle.per_sample = total, per_sample
    if not labels:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(labels), np.concatenate(preds).astype(np.int64)


def gather(dataset: Dataset, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples at ``indices`` as ``(inputs, labels)`` tensors, in that order."""
    if len(indices) == 0:
        raise ValueError("gather needs at least one index")
    xs, ys = zip(*(dataset[int(i)] for i in indices), strict=True)
    return torch.stack(xs), torch.as_tensor(ys, dtype=torch.long)
