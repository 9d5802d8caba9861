"""Batched binary search to a decision boundary along a straight segment.

Every hard-label attack step ends here: given a non-adversarial end ``x`` and an adversarial end
``x'`` per sample, bisect the blend ``x + α (x' − x)`` until the interval in ``α`` is below
``θ`` and return the adversarial end, so the returned point is one the model has labelled
adversarial (never an untested midpoint).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.attacks._rows import put, take

#: ``is_adversarial(points, idx)``: ``points`` are rows ``(n, d)``, ``idx`` the sample index of
#: each row; returns a bool tensor ``(n,)``. The callee does the query accounting.
AdversarialFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SearchResult:
    """Outcome of :func:`binary_search`; ``points`` are the adversarial ends (tested or given)."""

    points: torch.Tensor  # (B, d) adversarial end of the final interval
    alpha: torch.Tensor  # (B,) float64 blend weight of ``points`` (1 = the given adversarial end)
    queries: torch.Tensor  # (B,) long, queries spent per sample


def search_steps(theta: float) -> int:
    """Bisections needed to shrink ``[0, 1]`` below ``theta`` (the cost of a full search)."""
    if theta <= 0:
        raise ValueError(f"theta must be positive, got {theta}")
    return max(0, math.ceil(math.log2(1.0 / theta)))


def binary_search(
    is_adversarial: AdversarialFn,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    theta: float | torch.Tensor,
    *,
    idx: torch.Tensor | None = None,
    budget: torch.Tensor | None = None,
    box: tuple[float, float] | None = None,
) -> SearchResult:
    """Bisect every row of ``x`` (non-adversarial) → ``x_adv`` (adversarial) at once.

    ``theta`` is the tolerance on ``α`` (scalar or per sample). ``idx`` names the samples the
    rows belong to (passed through to ``is_adversarial``; default ``0..B-1``). ``budget`` caps
    the queries per row: a row whose budget runs out stops early and still returns its adversarial
    end, so a budget never makes the result invalid, only coarser. ``box`` clamps blended points
    (rounding can put them one ulp outside the box).
    """
    if x.shape != x_adv.shape or x.dim() != 2:
        raise ValueError(
            f"x and x_adv must both be (B, d), got {tuple(x.shape)}, {tuple(x_adv.shape)}"
        )
    batch = x.shape[0]
    device = x.device
    if idx is None:
        idx = torch.arange(batch, device=device)
    theta_t = torch.as_tensor(theta, dtype=torch.float64, device=device).expand(batch)
    if bool((theta_t <= 0).any()):
        raise ValueError("theta must be positive")
    left = (
        torch.full((batch,), torch.iinfo(torch.long).max, dtype=torch.long, device=device)
        if budget is None
        else budget.to(device, torch.long).clone()
    )
    lo = torch.zeros(batch, dtype=torch.float64, device=device)
    hi = torch.ones(batch, dtype=torch.float64, device=device)
    queries = torch.zeros(batch, dtype=torch.long, device=device)
    out = x_adv.clone()
    direction = x_adv - x
    while True:
        rows = ((hi - lo > theta_t) & (left > 0)).nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        mid = (lo[rows] + hi[rows]) / 2
        points = take(x, rows) + mid.to(x.dtype).unsqueeze(1) * take(direction, rows)
        if box is not None:
            points = points.clamp(box[0], box[1])
        adv = is_adversarial(points, idx[rows]).to(device, torch.bool)
        hi[rows] = torch.where(adv, mid, hi[rows])
        lo[rows] = torch.where(adv, lo[rows], mid)
        put(out, rows[adv], take(points, adv))
        queries[rows] += 1
        left[rows] -= 1
    return SearchResult(points=out, alpha=hi, queries=queries)
