"""Stage-facing helpers: every diagnostic of docs/methods.md for one model, as JSON-ready values.

The pure functions in the sibling modules take arrays; a stage has a model and pixel tensors.
These helpers do the glue once (features in eval mode and in batches, label-aware summaries,
plain Python types) so that every caller reports the same quantities the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from pipeline.analysis.noise import DEFAULT_PS, noise_accuracy
from pipeline.analysis.representations import (
    compression_accuracy,
    effective_dimension,
    variance_ratio_curve,
)
from pipeline.analysis.weights import weight_report


@torch.no_grad()
def extract_features(
    feature_map: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """``feature_map`` applied to ``x`` in batches, flattened to ``(n, d)``, float64 on the CPU.

    A module is switched to eval mode first (BatchNorm must use its running statistics).
    """
    if isinstance(feature_map, nn.Module):
        feature_map.eval()
    out = [feature_map(xb).reshape(xb.shape[0], -1).double().cpu() for xb in x.split(batch_size)]
    return torch.cat(out)


def representation_diagnostics(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    ks: Sequence[int],
    thresholds: Sequence[float] = (0.9, 0.99),
    seed: int = 0,
) -> dict:
    """Variance-ratio curve and effective dimension (LR Fig. 2), compression accuracy (Table 5).

    The curve and effective dimensions are of the **test** representations, not centred (as in
    the LR paper); compression fits PCA and the classifier on train and scores on test.
    """
    curve = variance_ratio_curve(test_features)
    return {
        "feature_dim": int(test_features.shape[1]),
        "variance_ratio": [float(v) for v in curve],
        "effective_dimension": {
            str(t): effective_dimension(test_features, threshold=t) for t in thresholds
        },
        "compression_accuracy": {
            str(k): acc
            for k, acc in compression_accuracy(
                train_features, train_labels, test_features, test_labels, ks=ks, seed=seed
            ).items()
        },
    }


def noise_diagnostics(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ps: Sequence[float] = DEFAULT_PS,
    seed: int = 0,
    batch_size: int = 512,
) -> dict[str, float]:
    """Accuracy of ``model`` (pixel inputs in [0, 1]) under pixel noise (LR Table 4), with p = 0.

    The clean accuracy (``"0.0"``) is included so a table can show the drop.
    """
    model.eval()
    probabilities = [0.0, *[float(p) for p in ps if float(p) != 0.0]]
    acc = noise_accuracy(model, x, y, ps=probabilities, seed=seed, batch_size=batch_size)
    return {str(p): float(a) for p, a in acc.items()}


def weight_rows(module: nn.Module) -> list[dict]:
    """:func:`~pipeline.analysis.weights.weight_report` with JSON-friendly shapes."""
    return [{**row, "shape": list(row["shape"])} for row in weight_report(module)]
