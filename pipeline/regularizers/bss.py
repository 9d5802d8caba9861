"""BSS, batch spectral shrinkage (Chen et al. 2019): ``λ·Σ_{i=1..k} σ_{-i}(F)²``.

A finetuning baseline: shrinking the ``k`` smallest singular values of the batch feature matrix
``F ∈ R^{batch × d}`` suppresses the untransferable directions of the representation.
"""

from __future__ import annotations

import torch

from pipeline.regularizers.base import Regularizer, StepContext
from pipeline.regularizers.threads import single_threaded


def bss_penalty(features: torch.Tensor, k: int = 1) -> torch.Tensor:
    """``Σ`` of the squares of the ``k`` smallest singular values of ``features`` (batch × d)."""
    if features.dim() != 2:
        raise ValueError(f"expected a (batch, d) feature matrix, got {tuple(features.shape)}")
    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    sigma = torch.linalg.svdvals(features.to(dtype))  # descending, min(batch, d) values
    return sigma[-min(k, sigma.shape[0]) :].pow(2).sum()


class BatchSpectralShrinkage(Regularizer):
    """λ (``strength``) times :func:`bss_penalty` of ``ctx.features``; k = 1 in rep-spectral's runs."""

    name = "bss"

    def __init__(self, strength: float = 1e-3, k: int = 1, burn_in: int = 0):
        super().__init__(strength, burn_in)
        if k < 1:
            raise ValueError("k must be >= 1")
        self.k = int(k)
        self._last: torch.Tensor | None = None

    def penalty(self, ctx: StepContext) -> torch.Tensor:
        if ctx.features is None:
            raise RuntimeError("BSS needs StepContext.features")
        features = ctx.features.flatten(1)
        device = features.device
        with torch.autocast(device_type=device.type, enabled=False), single_threaded(device):
            value = self.strength * bss_penalty(features, self.k)
        self._last = value.detach()
        return value

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        return {} if self._last is None else {"penalty_value": float(self._last)}
