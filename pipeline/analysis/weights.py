"""Weight structure: effective rank and effective sparsity (nuclear-norm paper, eqs. 2-3).

Langenberg, Balda & Behboodi ("On the effect of low-rank weights on adversarial robustness of
neural networks") track, per layer,

* effective sparsity ``s̄(W) = ‖W‖_1 / ‖W‖_F`` (eq. 2; ``‖W‖_1`` is the entrywise ℓ1 norm), and
* effective rank ``r̄(W) = ‖W‖_* / ‖W‖_F`` (eq. 3; the effective sparsity of the singular values).

``1 ≤ s̄(W) ≤ √(number of non-zeros)`` and ``1 ≤ r̄(W) ≤ √rank(W)``. A convolution kernel
``(c_out, c_in, k_h, k_w)`` is reshaped to the matrix ``c_out × (c_in·k_h·k_w)`` (their
Appendix B: the conv acts as ``W̃ ⊗ I`` on non-overlapping patches, with the same effective
rank as ``W̃``). The same reshape is used for ``sigma_max_flat``, the top singular value of that
flattened matrix, which is **not** the operator norm of the convolution that rep-spectral
regularizes (see docs/methods.md, "Regularizers"); it is reported only as a cheap per-layer scale.
"""

from __future__ import annotations

import torch
from torch import nn

# One definition, shared with the nuclear-norm and ℓ1 regularizers' own diagnostics.
from pipeline.regularizers.weight_norms import effective_rank, effective_sparsity

__all__ = ["REPORTED_LAYERS", "as_matrix", "effective_rank", "effective_sparsity", "weight_report"]

# Layers whose ``weight`` is (out, in, *kernel) or (out, in) and is reported by weight_report.
REPORTED_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The weight as a 2-D matrix: ``(out, in)`` as is, a conv kernel as ``c_out × (c_in·k·k)``.

    For a grouped convolution the columns are the ``c_in / groups`` input channels of one group.
    Returns a detached float64 tensor on the CPU.
    """
    if weight.ndim < 2:
        raise ValueError(f"expected a weight with at least 2 dims; got shape {tuple(weight.shape)}")
    return weight.detach().to(device="cpu", dtype=torch.float64).reshape(weight.shape[0], -1)


def weight_report(module: nn.Module) -> list[dict]:
    """One row per Linear/Conv layer in ``module`` (recursively, in ``named_modules`` order).

    Each row: ``layer`` (qualified name; ``""`` if ``module`` itself is such a layer), ``shape``
    (the weight's shape as a tuple), ``effective_rank``, ``effective_sparsity`` and
    ``sigma_max_flat`` (largest singular value of the flattened ``c_out × (c_in·k·k)`` matrix),
    all as Python floats (the ratios are NaN for an all-zero weight). Other layers (BatchNorm,
    embeddings, ...) are skipped; so is a layer without a weight. A layer shared under two names
    is reported once.
    """
    rows: list[dict] = []
    for name, layer in module.named_modules():
        if not isinstance(layer, REPORTED_LAYERS):
            continue
        weight = getattr(layer, "weight", None)
        if weight is None:
            continue
        rows.append(
            {
                "layer": name,
                "shape": tuple(weight.shape),
                "effective_rank": effective_rank(weight),
                "effective_sparsity": effective_sparsity(weight),
                "sigma_max_flat": float(torch.linalg.matrix_norm(as_matrix(weight), ord=2)),
            }
        )
    return rows
