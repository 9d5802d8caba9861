"""Tangent Attack (Ma et al., NeurIPS 2021): hard-label, untargeted, l2, hemisphere variant.

The attack measures the robustness figure of merit ``Δ_x = ‖x_adv − x‖₂``. Its loop (start,
boundary search, normal estimate, step, search) is shared with HopSkipJump in
:mod:`pipeline.attacks.boundary`; what is specific is the step: the point ``k`` where a line from
``x`` touches the hemisphere of radius ``R = ‖x_t − x‖/√t`` centred at the boundary point
``x_t`` with axis the estimated normal — the most effective point on that hemisphere to bisect
back from (docs/methods.md, "Attacks").
"""

from __future__ import annotations

import torch

from pipeline.attacks.boundary import AttackResult, BoundaryAttack, run_boundary_attack
from pipeline.attacks.queries import Predict

#: Kept for callers written before the result type was shared with HopSkipJump.
TangentAttackResult = AttackResult


class TangentAttack(BoundaryAttack):
    """The Tangent Attack step: the tangent point, its radius halved until adversarial."""

    def candidate(self, x, xb, normal, size) -> torch.Tensor:
        return tangent_point(x, xb, normal, size)


def tangent_attack(predict: Predict, x: torch.Tensor, y: torch.Tensor, **options) -> AttackResult:
    """Run the hemisphere Tangent Attack on a batch ``x`` (shape ``(B, ...)``) with labels ``y``.

    ``options`` are the keyword arguments of :func:`~pipeline.attacks.boundary.run_boundary_attack`.
    """
    return run_boundary_attack(TangentAttack, predict, x, y, **options)


def tangent_point(
    x: torch.Tensor, center: torch.Tensor, normal: torch.Tensor, radius: torch.Tensor
) -> torch.Tensor:
    """Tangent point ``k`` on the hemisphere (centre ``center``, axis ``normal``) seen from ``x``.

    Batched rows; ``normal`` must be unit length and ``radius ≤ ‖x − center‖``. Worked in the
    2-D plane spanned by ``x − center`` and ``normal`` (Ma et al. 2021, Sec. 3.2).
    """
    ox = x - center
    ox_norm = torch.linalg.vector_norm(ox, dim=1).clamp_min(1e-30)
    on = (ox * normal).sum(dim=1)
    sin_a = (-on / ox_norm).clamp(-1.0, 1.0)
    cos_a = (1 - sin_a**2).clamp_min(0).sqrt()
    cos_b = (radius / ox_norm).clamp(-1.0, 1.0)
    sin_b = (1 - cos_b**2).clamp_min(0).sqrt()
    sin_g = sin_b * cos_a - cos_b * sin_a
    cos_g = cos_b * cos_a + sin_b * sin_a
    perp = ox - on.unsqueeze(1) * normal
    perp = perp / torch.linalg.vector_norm(perp, dim=1).clamp_min(1e-30).unsqueeze(1)
    return center + (radius * cos_g).unsqueeze(1) * perp + (radius * sin_g).unsqueeze(1) * normal
