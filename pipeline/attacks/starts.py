"""Adversarial starting points for boundary attacks: uniform noise first, then a pool of inputs.

Both fill ``start_point`` rows in place and set ``found`` for the samples they succeed on; each
query is charged to its sample through :class:`~pipeline.attacks.queries.AdversarialQueries`,
and no sample is asked more than ``left(samples)`` (its remaining budget) allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from pipeline.attacks._rows import put, take
from pipeline.attacks.queries import AdversarialQueries

Left = Callable[[torch.Tensor], torch.Tensor]


def first_per_owner(owners: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct owners and the position of each one's first row (rows are in query order)."""
    uniq, inverse = torch.unique(owners, return_inverse=True)
    pos = torch.arange(owners.numel(), device=owners.device)
    first = torch.full((uniq.numel(),), owners.numel(), dtype=torch.long, device=owners.device)
    first.scatter_reduce_(0, inverse, pos, reduce="amin")
    return uniq, first


def noise_starts(
    queries: AdversarialQueries,
    todo: torch.Tensor,
    found: torch.Tensor,
    start_point: torch.Tensor,
    left: Left,
    *,
    tries: int,
    gen: torch.Generator,
    rows_per_chunk: int,
    box: tuple[float, float],
) -> None:
    """Uniform noise in the box until it is adversarial: rounds of 1, 2, 4, ... per sample.

    Growing rounds keep the number of model calls logarithmic in the tries and the waste
    (tries after the first success within a round) at most what was spent before it.
    """
    lo, hi = box
    d, dev = start_point.shape[1], start_point.device
    used, size = 0, 1
    while used < tries:
        pending = todo[~found[todo]]
        pending = pending[left(pending) > 0]
        if pending.numel() == 0:
            return
        per = left(pending).clamp(max=min(size, tries - used))
        owners = pending.repeat_interleave(per)
        for chunk in owners.split(rows_per_chunk):
            noise = torch.rand(chunk.numel(), d, generator=gen, device=dev)
            noise = noise.mul_(hi - lo).add_(lo)
            adv = queries.adversarial(noise, chunk)
            fresh = adv & ~found[chunk]  # the first success of each sample wins
            winners, first = first_per_owner(chunk[fresh])
            put(start_point, winners, take(take(noise, fresh), first))
            found[winners] = True
        used += size
        size *= 2


def pool_starts(
    queries: AdversarialQueries,
    xs: torch.Tensor,
    todo: torch.Tensor,
    found: torch.Tensor,
    start_point: torch.Tensor,
    left: Left,
    pool: tuple[torch.Tensor, torch.Tensor],
    *,
    box: tuple[float, float],
    per_round: int = 8,
) -> None:
    """Nearest correctly classified pool input of another class, ``per_round`` at a time."""
    if todo.numel() == 0:
        return
    dev, d = xs.device, xs.shape[1]
    pool_x, pool_y = pool
    px = pool_x.detach().reshape(pool_x.shape[0], -1).to(dev, torch.float32)
    px = px.clamp(*box)  # a start may be returned as a last resort: keep it in the box
    py = torch.as_tensor(pool_y, device=dev).long().reshape(-1)
    if px.shape[1] != d or py.shape[0] != px.shape[0]:
        raise ValueError("fallback_pool must be (inputs shaped like x, one label per input)")
    dists = torch.cdist(take(xs, todo), px)
    dists[py.unsqueeze(0) == queries.y[todo].unsqueeze(1)] = math.inf
    order = dists.argsort(dim=1)
    n_valid = torch.isfinite(dists).sum(dim=1)
    for begin in range(0, px.shape[0], per_round):
        remaining = left(todo)
        pending = ~found[todo] & (remaining > 0) & (n_valid > begin)
        if not bool(pending.any()):
            return
        count = torch.minimum(n_valid - begin, remaining).clamp(max=per_round)
        count = torch.where(pending, count, 0)
        pos = torch.arange(todo.numel(), device=dev).repeat_interleave(count)
        slot = torch.arange(pos.numel(), device=dev) - (count.cumsum(0) - count)[pos]
        owners, cands = todo[pos], order[pos, begin + slot]
        labels = queries.labels(take(px, cands), owners)
        # Correctly classified as its own (different) class: adversarial for the sample.
        good = labels == py[cands]
        winners, first = first_per_owner(owners[good])
        put(start_point, winners, take(px, cands[good][first]))
        found[winners] = True
