"""Small conversions shared by the analysis modules (not part of the public API)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_numpy(a: Any, dtype: Any = None) -> np.ndarray:
    """A NumPy copy-or-view of ``a`` (torch tensor on any device, array or sequence)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def labels_from_output(out: Any) -> torch.Tensor:
    """Predicted labels from a ``predict`` output: labels ``(n,)`` as given, scores ``(n, K)`` argmax."""
    out = torch.as_tensor(out)
    if out.ndim == 2:
        return out.argmax(dim=1)
    if out.ndim != 1:
        raise ValueError(
            f"predict must return labels (n,) or scores (n, K); got shape {tuple(out.shape)}"
        )
    return out
