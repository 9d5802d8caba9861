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


def hop_skip_jump(
    predict: Predict,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    iterations: int = 40,
    max_queries: int | torch.Tensor | None = None,
    gamma: float = 1.0,
    init_probes: int = 100,
    max_probes: int = 10_000,
    box: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    init_tries: int = 2_000,
    fallback_pool: tuple[torch.Tensor, torch.Tensor] | None = None,
    starts: torch.Tensor | None = None,
    max_halvings: int = 20,
    max_probe_elements: int = 2**25,
    verify: bool = True,
    checkpoints=(),
) -> AttackResult:
    """Run HopSkipJump on a batch ``x`` (shape ``(B, ...)``) with labels ``y``.

    Same arguments, query accounting, budgets and determinism as
    :func:`~pipeline.attacks.tangent.tangent_attack` (``init_probes`` is the paper's ``B₀``,
    ``max_probes`` caps ``B₀·√t``, ``gamma`` sets ``θ = γ / (d √d)``, ``max_halvings`` bounds
    the step-size halvings); with the same ``seed`` both start from the same points.
    """
    return run_boundary_attack(
        HopSkipJump, predict, x, y, iterations=iterations, max_queries=max_queries,
        gamma=gamma, init_probes=init_probes, max_probes=max_probes, box=box, seed=seed,
        init_tries=init_tries, fallback_pool=fallback_pool, starts=starts,
        max_halvings=max_halvings, max_probe_elements=max_probe_elements, verify=verify,
        checkpoints=checkpoints,
    )  # fmt: skip
