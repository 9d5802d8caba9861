"""Nuclear-norm and ℓ1 penalties on backbone weights, and the matching diagnostics.

Baselines from the low-rank-weights paper: ``Σ_l λ‖W_l‖_*`` promotes low-rank weights and
``Σ_l λ‖W_l‖_1`` sparse ones. A conv kernel is reshaped to ``c_out × (c_in·k·k)`` (its rows are the
flattened filters; the paper's Appendix B shows the conv has the same effective rank as this
matrix). Their diagnostics are the effective rank ``‖W‖_*/‖W‖_F`` and the effective sparsity
``‖W‖_1/‖W‖_F``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.regularizers.base import Regularizer, StepContext
from pipeline.regularizers.layers import backbone_of, select_weight_layers, weight_matrix
from pipeline.regularizers.threads import single_threaded


def nuclear_norm(W: torch.Tensor) -> torch.Tensor:
    """``‖W‖_*`` (sum of singular values) of the weight reshaped to a matrix; differentiable."""
    return torch.linalg.svdvals(weight_matrix(W)).sum()


def l1_norm(W: torch.Tensor) -> torch.Tensor:
    """``‖W‖_1``: sum of absolute entries."""
    return W.abs().sum()


def _ratio(numerator: torch.Tensor, fro: torch.Tensor) -> float:
    return float("nan") if fro == 0 else float(numerator / fro)


def _float64_matrix(W: torch.Tensor) -> torch.Tensor:
    if W.ndim < 2:
        raise ValueError(f"expected a weight with at least 2 dims; got shape {tuple(W.shape)}")
    return weight_matrix(W.detach().to(torch.float64))


def effective_rank(W: torch.Tensor) -> float:
    """``‖W‖_*/‖W‖_F`` (nuclear-norm paper, eq. 3) of the weight as a matrix (a conv kernel as
    ``c_out × c_in·k·k``): between 1 (rank one) and ``sqrt(rank)``. NaN for an all-zero ``W``,
    where it is undefined (0/0): a dead layer is not reported as a low-rank one."""
    M = _float64_matrix(W)
    return _ratio(torch.linalg.svdvals(M).sum(), torch.linalg.matrix_norm(M))


def effective_sparsity(W: torch.Tensor) -> float:
    """``‖W‖_1/‖W‖_F`` (eq. 2; entrywise ℓ1): between 1 (one non-zero) and ``sqrt(s)`` for an
    s-sparse matrix. NaN for an all-zero ``W``, where it is undefined."""
    M = _float64_matrix(W)
    return _ratio(M.abs().sum(), torch.linalg.matrix_norm(M))


def _full_precision(W: torch.Tensor) -> torch.Tensor:
    """float64 stays float64; half-precision weights are promoted for the SVD."""
    return W if W.dtype == torch.float64 else W.float()


class _WeightNormRegularizer(Regularizer):
    """``strength · Σ_l norm(W_l)`` over the selected Conv2d/Linear layers of the backbone."""

    def __init__(self, strength: float = 0.01, burn_in: int = 0, layers: Sequence[str] = ()):
        super().__init__(strength, burn_in)
        self.layers = list(layers)
        self._targets: list[tuple[str, nn.Module]] = []
        self._attached = False

    def attach(self, model: nn.Module, example_inputs: torch.Tensor) -> None:
        self._targets = select_weight_layers(backbone_of(model), self.layers)
        self._attached = True

    def norm(self, W: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def penalty(self, ctx: StepContext) -> torch.Tensor:
        if not self._attached:
            raise RuntimeError(f"{self.name}: call attach(model, example_inputs) first")
        if not self._targets:
            return torch.zeros(())
        device = self._targets[0][1].weight.device
        with torch.autocast(device_type=device.type, enabled=False), single_threaded(device):
            total = sum(self.norm(_full_precision(m.weight)) for _, m in self._targets)
        return self.strength * total

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        total = 0.0
        for name, module in self._targets:
            with single_threaded(module.weight.device):
                out[f"effective_rank/{name}"] = effective_rank(module.weight)
                out[f"effective_sparsity/{name}"] = effective_sparsity(module.weight)
                total += float(self.norm(module.weight.double()))
        out["penalty_value"] = self.strength * total
        return out


class NuclearNorm(_WeightNormRegularizer):
    """``λ·Σ_l ‖W_l‖_*`` over the backbone's weight layers (conv as ``c_out × c_in·k·k``)."""

    name = "nuclear"

    def norm(self, W: torch.Tensor) -> torch.Tensor:
        return nuclear_norm(W)


class L1Norm(_WeightNormRegularizer):
    """``λ·Σ_l ‖W_l‖_1`` over the backbone's weight layers."""

    name = "l1"

    def norm(self, W: torch.Tensor) -> torch.Tensor:
        return l1_norm(W)
