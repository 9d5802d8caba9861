"""HopSkipJumpAttack (Chen, Jordan & Wainwright, IEEE S&P 2020): hard-label, untargeted, l2.

Its loop (start, boundary search, normal estimate from ``B₀·√t`` probes at radius
``δ_t = √d θ ‖x_t − x*‖``, search back to the boundary) is shared with Tangent Attack in
:mod:`pipeline.attacks.boundary`. What is specific is the step: a geometric step-size search
along the estimated gradient direction, ``x_t + ξ v`` with ``ξ = ‖x_t − x*‖/√t`` halved until
the point is adversarial (the paper's Algorithm 2, step size of Theorem 2's schedule).
"""

from __future__ import annotations

import torch

from pipeline.attacks.boundary import AttackResult, BoundaryAttack, run_boundary_attack
from pipeline.attacks.queries import Predict


class HopSkipJump(BoundaryAttack):
    """The HopSkipJump step: along the estimated gradient, step size halved until adversarial."""

    def candidate(self, x, xb, normal, size) -> torch.Tensor:
        return xb + size.unsqueeze(1) * normal


def hop_skip_jump(predict: Predict, x: torch.Tensor, y: torch.Tensor, **options) -> AttackResult:
    """Run HopSkipJump on a batch ``x`` (shape ``(B, ...)``) with labels ``y``.

    ``options`` are the keyword arguments of :func:`~pipeline.attacks.boundary.run_boundary_attack`,
    shared with :func:`~pipeline.attacks.tangent.tangent_attack`; with the same ``seed`` both
    start from the same points.
    """
    return run_boundary_attack(HopSkipJump, predict, x, y, **options)
