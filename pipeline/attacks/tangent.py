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


def tangent_attack(
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
    """Run the hemisphere Tangent Attack on a batch ``x`` (shape ``(B, ...)``) with labels ``y``.

    ``predict(inputs) -> labels`` answers hard labels for inputs shaped like ``x[1:]``; a
    :class:`~pipeline.attacks.oracle.LabelOracle` (or anything with ``takes_owners = True``) is
    also given ``owners=``, the sample index of each row, so it can count queries per sample
    independently of the attack. ``predict`` must not keep references to its inputs: probe
    buffers are reused from one call to the next.

    ``iterations`` is T. ``max_queries`` (int or per-sample tensor) is a query budget that no
    sample exceeds: a sample drops out when it cannot pay for one more probe, tangent test and
    full binary search. ``gamma`` sets the binary-search tolerance ``θ = γ / (d √d)``;
    ``n_t = min(init_probes·√t, max_probes)``. ``init_tries`` bounds the random-noise starts;
    ``fallback_pool = (inputs, labels)`` supplies starts where noise never fools the model (the
    nearest pool input of another class that the model classifies correctly). ``starts``
    (shaped like ``x``) are candidate adversarial starts tried first, one query each.
    ``max_halvings`` bounds the radius halvings per iteration; ``max_probe_elements`` bounds
    the floats of one chunk of probes in memory. With ``verify`` every returned point is
    re-queried once at the end and, should a boundary point have changed label (the model's
    rounding can depend on the batch it is evaluated in), pushed outward along its ray until it
    is adversarial again. ``checkpoints`` are query counts at which the best distance so far is
    recorded (``result.at_queries``). Same inputs and ``seed`` on the same device give the same
    result. Runs under ``torch.no_grad``: a hard-label attack never needs gradients.
    """
    return run_boundary_attack(
        TangentAttack, predict, x, y, iterations=iterations, max_queries=max_queries,
        gamma=gamma, init_probes=init_probes, max_probes=max_probes, box=box, seed=seed,
        init_tries=init_tries, fallback_pool=fallback_pool, starts=starts,
        max_halvings=max_halvings, max_probe_elements=max_probe_elements, verify=verify,
        checkpoints=checkpoints,
    )  # fmt: skip


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
