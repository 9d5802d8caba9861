"""Tangent Attack (Ma et al., NeurIPS 2021): hard-label, untargeted, l2, hemisphere variant.

The attack measures the robustness figure of merit ``Δ_x = ‖x_adv − x‖₂``. It is written for
whole batches: every step stacks the queries of all still-running samples into one predict call
(streamed in chunks so memory stays bounded), because running it one sample at a time leaves an
accelerator idle. The algorithm follows ``METHODS.md`` §2 step by step; comments name the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.attacks._rows import put, take
from pipeline.attacks.search import binary_search, search_steps

Predict = Callable[..., torch.Tensor]

_NO_BUDGET = torch.iinfo(torch.long).max // 4


@dataclass
class TangentAttackResult:
    """Per-sample outcome. Failed samples keep the clean input as their point, distance ``inf``."""

    adversarial: torch.Tensor  # (B, ...) float32 like x: inside the box, adversarial on success
    distances: torch.Tensor  # (B,) float32 ‖adversarial − x‖₂; 0 if misclassified, inf if failed
    queries: torch.Tensor  # (B,) long, model queries (predicted rows) spent on each sample
    success: torch.Tensor  # (B,) bool, an adversarial point was found (or x was misclassified)
    misclassified: torch.Tensor  # (B,) bool, predict(x) != y already (distance 0)
    iterations: torch.Tensor  # (B,) long, tangent iterations completed


class _Queries:
    """The label oracle as the attack sees it: "is this row adversarial for its sample?".

    Counting lives here, in one place, so every row the model answers is attributed to the sample
    that asked (``owners``) and no code path can forget to count.
    """

    def __init__(self, predict: Predict, y: torch.Tensor, shape: tuple[int, ...]):
        self.predict = predict
        self.takes_owners = bool(getattr(predict, "takes_owners", False))
        self.y = y
        self.shape = shape
        self.count = torch.zeros_like(y)

    def labels(self, rows: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        inputs = rows.reshape(rows.shape[0], *self.shape)
        out = self.predict(inputs, owners=owners) if self.takes_owners else self.predict(inputs)
        out = torch.as_tensor(out).to(rows.device).long().reshape(-1)
        if out.shape[0] != rows.shape[0]:
            raise ValueError(f"predict returned {out.shape[0]} labels for {rows.shape[0]} inputs")
        self.count.index_add_(0, owners, torch.ones_like(owners))
        return out

    def adversarial(self, rows: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        return self.labels(rows, owners) != self.y[owners]


class _Buffers:
    """Probe buffers reused across chunks and iterations: fresh large allocations page-fault on
    every use, which on CPU costs more than the arithmetic done in them."""

    def __init__(self, device: torch.device):
        self.device = device
        self.flat: dict[str, torch.Tensor] = {}

    def get(self, name: str, *shape: int) -> torch.Tensor:
        n = math.prod(shape)
        buf = self.flat.get(name)
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, device=self.device)
            self.flat[name] = buf
        return buf[:n].view(*shape)


@torch.no_grad()
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
) -> TangentAttackResult:
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
    (shaped like ``x``) are candidate adversarial starts tried first, one query each, e.g. to
    give two attacks the same starting points. ``max_halvings`` bounds the radius halvings per
    iteration; ``max_probe_elements`` bounds the floats of one chunk of probes in memory. With
    ``verify`` every returned point is re-queried once at the end and, should a boundary point
    have changed label (the model's rounding can depend on the batch it is evaluated in),
    pushed outward along its ray until it is adversarial again.
    Same inputs and ``seed`` on the same device give the same result. Runs under
    ``torch.no_grad``: a hard-label attack never needs gradients, and a plain callable model
    would otherwise build autograd graphs for every probe.
    """
    if x.dim() < 2:
        raise ValueError(f"x must be a batch (B, ...), got shape {tuple(x.shape)}")
    if iterations < 0 or init_probes < 1 or max_probes < 1 or gamma <= 0 or max_halvings < 0:
        raise ValueError("need iterations, max_halvings >= 0; init/max_probes >= 1; gamma > 0")
    lo, hi = float(box[0]), float(box[1])
    if not lo < hi:
        raise ValueError(f"box must satisfy lo < hi, got {box}")
    xs = x.detach().reshape(x.shape[0], -1).to(torch.float32)
    if bool(((xs < lo) | (xs > hi)).any()):
        raise ValueError(f"x must lie inside the box {box}")
    y = torch.as_tensor(y, device=x.device).long().reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y has {y.shape[0]} labels for {x.shape[0]} inputs")

    attack = _Attack(
        _Queries(predict, y, tuple(x.shape[1:])),
        xs,
        _budget(max_queries, x.shape[0], x.device),
        gamma=gamma,
        box=(lo, hi),
        seed=seed,
        max_probe_elements=max_probe_elements,
        verify=verify,
    )
    if starts is not None:
        starts = starts.detach().reshape(xs.shape).to(xs.device, torch.float32).clamp(lo, hi)
    attack.start(init_tries, fallback_pool, starts)
    for t in range(1, iterations + 1):
        if not attack.iterate(t, init_probes, max_probes, max_halvings):
            break
    return attack.finish(x.shape)


def _budget(max_queries: int | torch.Tensor | None, batch: int, device: torch.device):
    """Per-sample query budget as a long tensor (a huge number when there is none)."""
    if max_queries is None:
        return torch.full((batch,), _NO_BUDGET, dtype=torch.long, device=device)
    b = torch.as_tensor(max_queries, device=device).long()
    if b.dim() == 0:
        b = b.expand(batch)
    if b.shape != (batch,) or bool((b < 0).any()):
        raise ValueError("max_queries must be a non-negative int or a (B,) tensor")
    return b.clone()


def _norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v, dim=1)


class _Attack:
    """State of one batched attack: per-sample boundary point, distance, best point, budget."""

    def __init__(self, oracle, xs, budget, *, gamma, box, seed, max_probe_elements, verify):
        self.oracle, self.xs, self.budget, self.box, self.verify = oracle, xs, budget, box, verify
        batch, self.d = xs.shape
        dev = self.device = xs.device
        self.theta = gamma / (self.d * math.sqrt(self.d))
        self.steps = search_steps(self.theta)
        self.gen = torch.Generator(device=dev)
        self.gen.manual_seed(int(seed))
        self.rows_per_chunk = max(1, max_probe_elements // self.d)
        self.buffers = _Buffers(dev)
        self.every = torch.arange(batch, device=dev)
        self.misclassified = torch.zeros(batch, dtype=torch.bool, device=dev)
        self.found = torch.zeros(batch, dtype=torch.bool, device=dev)
        self.start_point = xs.clone()
        self.current = xs.clone()
        self.dist = torch.full((batch,), math.inf, device=dev)
        self.best = xs.clone()
        self.best_dist = self.dist.clone()
        self.iterations = torch.zeros(batch, dtype=torch.long, device=dev)

    def left(self, idx: torch.Tensor) -> torch.Tensor:
        return self.budget[idx] - self.oracle.count[idx]

    def start(self, init_tries: int, pool, starts) -> None:
        """Step 1 (a start per sample: given, else noise, else the pool), then step 2."""
        can_ask = self.every[self.left(self.every) > 0]
        if can_ask.numel() == 0:
            return
        # Misclassified inputs are adversarial already: distance 0, nothing to search.
        self.misclassified[can_ask] = self.oracle.adversarial(take(self.xs, can_ask), can_ask)
        todo = can_ask[~self.misclassified[can_ask]]
        if starts is not None:
            ask = todo[self.left(todo) > 0]
            adv = self.oracle.adversarial(take(starts, ask), ask)
            put(self.start_point, ask[adv], take(starts, ask[adv]))
            self.found[ask[adv]] = True
        self._noise_starts(todo[~self.found[todo]], init_tries)
        if pool is not None:
            self._pool_starts(todo[~self.found[todo]], pool)
        run = self.every[self.found]
        if run.numel():
            budget = (self.left(run) - int(self.verify)).clamp_min(0)
            self._search_and_update(run, take(self.start_point, run), budget)

    def iterate(self, t: int, init_probes: int, max_probes: int, max_halvings: int) -> bool:
        """Step 3, iteration ``t`` for every sample that can still pay for one; False if none."""
        verify = int(self.verify)
        reserve = self.steps + 1 + verify  # one tangent test, a full search, the final check
        run = self.every[self.found & (self.left(self.every) > reserve)]
        if run.numel() == 0:
            return False
        n_t = min(int(init_probes * math.sqrt(t)), max_probes)
        n_probes = (self.left(run) - reserve).clamp(max=n_t)
        dist = self.dist[run]
        lo, hi = self.box
        delta = (
            torch.full_like(dist, 0.1 * (hi - lo)) if t == 1 else self.d**0.5 * self.theta * dist
        )
        xb = take(self.current, run)
        normal = self._estimate_normals(xb, run, n_probes, delta)
        k, ok = self._tangent_points(run, xb, normal, dist / math.sqrt(t), max_halvings)
        moved = run[ok]
        if moved.numel():
            self._search_and_update(moved, take(k, ok), self.left(moved) - verify)
        self.iterations[run] += 1
        return True

    def finish(self, shape: torch.Size) -> TangentAttackResult:
        if self.verify:
            self._verify()
        success = self.found | self.misclassified
        put(self.best, self.misclassified, take(self.xs, self.misclassified))
        self.best_dist[self.misclassified] = 0.0
        put(self.best, ~success, take(self.xs, ~success))
        self.best_dist[~success] = math.inf
        return TangentAttackResult(
            adversarial=self.best.reshape(shape),
            distances=self.best_dist,
            queries=self.oracle.count.clone(),
            success=success,
            misclassified=self.misclassified,
            iterations=self.iterations,
        )

    def _search_and_update(self, idx, adv_end, budget) -> None:
        """Step 2 from ``x`` to ``adv_end``; the result is the new boundary point, kept if best."""
        x = take(self.xs, idx)
        res = binary_search(
            self.oracle.adversarial, x, adv_end, self.theta, idx=idx, budget=budget, box=self.box
        )
        dist = _norm(res.points - x)
        put(self.current, idx, res.points)
        self.dist[idx] = dist
        better = dist < self.best_dist[idx]
        put(self.best, idx[better], take(res.points, better))
        self.best_dist[idx[better]] = dist[better]

    def _noise_starts(self, todo: torch.Tensor, tries: int) -> None:
        """Uniform noise in the box until it is adversarial: rounds of 1, 2, 4, ... per sample.

        Growing rounds keep the number of model calls logarithmic in the tries and the waste
        (tries after the first success within a round) at most what was spent before it.
        """
        lo, hi = self.box
        used, size = 0, 1
        while used < tries:
            pending = todo[~self.found[todo]]
            pending = pending[self.left(pending) > 0]
            if pending.numel() == 0:
                return
            per = self.left(pending).clamp(max=min(size, tries - used))
            owners = pending.repeat_interleave(per)
            for chunk in owners.split(self.rows_per_chunk):
                noise = torch.rand(chunk.numel(), self.d, generator=self.gen, device=self.device)
                noise = noise.mul_(hi - lo).add_(lo)
                adv = self.oracle.adversarial(noise, chunk)
                fresh = adv & ~self.found[chunk]  # the first success of each sample wins
                winners, first = _first_per_owner(chunk[fresh])
                put(self.start_point, winners, take(take(noise, fresh), first))
                self.found[winners] = True
            used += size
            size *= 2

    def _pool_starts(self, todo: torch.Tensor, pool, per_round: int = 8) -> None:
        """Nearest correctly classified pool input of another class, ``per_round`` at a time."""
        if todo.numel() == 0:
            return
        pool_x, pool_y = pool
        px = pool_x.detach().reshape(pool_x.shape[0], -1).to(self.device, torch.float32)
        px = px.clamp(*self.box)  # a start may be returned as a last resort: keep it in the box
        py = torch.as_tensor(pool_y, device=self.device).long().reshape(-1)
        if px.shape[1] != self.d or py.shape[0] != px.shape[0]:
            raise ValueError("fallback_pool must be (inputs shaped like x, one label per input)")
        dists = torch.cdist(take(self.xs, todo), px)
        dists[py.unsqueeze(0) == self.oracle.y[todo].unsqueeze(1)] = math.inf
        order = dists.argsort(dim=1)
        n_valid = torch.isfinite(dists).sum(dim=1)
        for begin in range(0, px.shape[0], per_round):
            left = self.left(todo)
            pending = ~self.found[todo] & (left > 0) & (n_valid > begin)
            if not bool(pending.any()):
                return
            count = torch.minimum(n_valid - begin, left).clamp(max=per_round)
            count = torch.where(pending, count, 0)
            pos = torch.arange(todo.numel(), device=self.device).repeat_interleave(count)
            slot = torch.arange(pos.numel(), device=self.device) - (count.cumsum(0) - count)[pos]
            owners, cands = todo[pos], order[pos, begin + slot]
            labels = self.oracle.labels(take(px, cands), owners)
            # Correctly classified as its own (different) class: adversarial for the sample.
            good = labels == py[cands]
            winners, first = _first_per_owner(owners[good])
            put(self.start_point, winners, take(px, cands[good][first]))
            self.found[winners] = True

    def _estimate_normals(self, xb, run, n_probes, delta) -> torch.Tensor:
        """Step 3, normal estimate: ``mean((φ_i − mean φ) u_i)`` (``±mean u_i`` if all agree).

        Probes are laid out ``(samples, probes, d)`` and streamed in chunks of whole samples (or
        of probe slices of one sample when ``n_t·d`` alone exceeds a chunk), keeping per-sample
        sums ``Σφ, Σδu, Σφδu``: memory is bounded by one chunk, and the sums are one batched
        matrix product per chunk rather than scatters. Directions are taken from the clipped
        probes (``δu = clip(x_b + δu) − x_b``); the common factor ``1/δ`` is dropped since the
        estimate is normalized. Rows beyond a sample's ``n_probes`` (budget) are never queried.
        """
        lo, hi = self.box
        a, d, dev = xb.shape[0], self.d, self.device
        n_max = int(n_probes.max())
        width = min(n_max, self.rows_per_chunk)
        group = max(1, self.rows_per_chunk // width)
        sum_phi = torch.zeros(a, device=dev)
        sums = torch.zeros(a, 2, d, device=dev)  # [Σ δu, Σ φ δu] per sample
        for s0 in range(0, a, group):
            s = slice(s0, min(a, s0 + group))
            g = s.stop - s.start
            center = xb[s].unsqueeze(1)
            # A step of length δ moves no coordinate by more than δ: clip only if one can leave.
            reach = float(delta[s].max())
            clips = float(center.amin()) - lo < reach or hi - float(center.amax()) < reach
            for j in range(0, n_max, width):
                m = min(width, n_max - j)
                mask = (j + torch.arange(m, device=dev)).unsqueeze(0) < n_probes[s].unsqueeze(1)
                u = self.buffers.get("u", g, m, d).normal_(generator=self.gen)
                norms = torch.linalg.vector_norm(u, dim=2, keepdim=True).clamp_min_(1e-12)
                u.mul_(delta[s].view(g, 1, 1) / norms)
                probes = torch.add(center, u, out=self.buffers.get("probes", g, m, d))
                if clips:
                    probes.clamp_(lo, hi)
                    torch.sub(probes, center, out=u)  # the step actually probed after clipping
                rows = mask.reshape(-1).nonzero().squeeze(1)
                owners = run[s].repeat_interleave(m)[rows]
                phi = torch.zeros(g * m, device=dev)
                flat = probes.view(g * m, d)
                adv = self.oracle.adversarial(
                    flat if rows.numel() == g * m else take(flat, rows), owners
                )
                phi[rows] = adv.float() * 2 - 1
                phi = phi.view(g, m)
                sum_phi[s] += phi.sum(dim=1)
                sums[s] += torch.bmm(torch.stack([mask.float(), phi], dim=1), u)
        count = n_probes.float().clamp_min(1)
        mean_phi = (sum_phi / count).unsqueeze(1)
        agree = mean_phi.abs() == 1
        grad = torch.where(agree, mean_phi * sums[:, 0], sums[:, 1] - mean_phi * sums[:, 0])
        return grad / _norm(grad).clamp_min(1e-30).unsqueeze(1)

    def _tangent_points(self, run, xb, normal, radius, max_halvings):
        """Step 3, tangent point: clip ``k`` to the box, then test; halve ``R`` if not adversarial.

        Clipping before the test makes the tested point the one used. A sample stops halving
        when only the queries of the search that follows (and the final check) would be left.
        """
        keep = self.steps + int(self.verify)
        x = take(self.xs, run)
        k = xb.clone()
        ok = torch.zeros(run.numel(), dtype=torch.bool, device=self.device)
        radius = radius.clone()
        for _ in range(max_halvings + 1):
            pending = (~ok & (self.left(run) > keep)).nonzero().squeeze(1)
            if pending.numel() == 0:
                break
            cand = tangent_point(
                take(x, pending), take(xb, pending), take(normal, pending), radius[pending]
            ).clamp_(*self.box)
            adv = self.oracle.adversarial(cand, run[pending])
            put(k, pending[adv], take(cand, adv))
            ok[pending[adv]] = True
            radius[pending] /= 2
        return k, ok

    def _verify(self, rungs: int = 24) -> None:
        """Re-query the returned points; push any that flipped back outward along ``x → point``.

        A boundary point lies within ``θ`` of the boundary, where the label may depend on the
        batch the model saw it in (kernel choice, autocast). Rungs ``α = 1 + 2^j θ`` move it out
        geometrically; the start point (tested adversarial) is the last resort.
        """
        idx = self.every[self.found]
        idx = idx[self.left(idx) > 0]
        if idx.numel() == 0:
            return
        flipped = idx[~self.oracle.adversarial(take(self.best, idx), idx)]
        for i in flipped.tolist():
            n = int(min(rungs, int(self.left(flipped.new_tensor([i])))))
            point = self.start_point[i]
            if n:
                alphas = 1 + self.theta * 2.0 ** torch.arange(n, device=self.device)
                ray = self.best[i] - self.xs[i]
                cands = (self.xs[i] + alphas.float().unsqueeze(1) * ray).clamp_(*self.box)
                adv = self.oracle.adversarial(cands, flipped.new_full((n,), i))
                if bool(adv.any()):
                    point = cands[int(adv.nonzero()[0, 0])]
            self.best[i] = point
            self.best_dist[i] = torch.linalg.vector_norm(point - self.xs[i])


def _first_per_owner(owners: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct owners and the position of each one's first row (rows are in query order)."""
    uniq, inverse = torch.unique(owners, return_inverse=True)
    pos = torch.arange(owners.numel(), device=owners.device)
    first = torch.full((uniq.numel(),), owners.numel(), dtype=torch.long, device=owners.device)
    first.scatter_reduce_(0, inverse, pos, reduce="amin")
    return uniq, first


def tangent_point(
    x: torch.Tensor, center: torch.Tensor, normal: torch.Tensor, radius: torch.Tensor
) -> torch.Tensor:
    """Tangent point ``k`` on the hemisphere (centre ``center``, axis ``normal``) seen from ``x``.

    Batched rows; ``normal`` must be unit length and ``radius ≤ ‖x − center‖``. Worked in the
    2-D plane spanned by ``x − center`` and ``normal`` (METHODS.md §2, step 3).
    """
    ox = x - center
    ox_norm = _norm(ox).clamp_min(1e-30)
    on = (ox * normal).sum(dim=1)
    sin_a = (-on / ox_norm).clamp(-1.0, 1.0)
    cos_a = (1 - sin_a**2).clamp_min(0).sqrt()
    cos_b = (radius / ox_norm).clamp(-1.0, 1.0)
    sin_b = (1 - cos_b**2).clamp_min(0).sqrt()
    sin_g = sin_b * cos_a - cos_b * sin_a
    cos_g = cos_b * cos_a + sin_b * sin_a
    perp = ox - on.unsqueeze(1) * normal
    perp = perp / _norm(perp).clamp_min(1e-30).unsqueeze(1)
    return center + (radius * cos_g).unsqueeze(1) * perp + (radius * sin_g).unsqueeze(1) * normal
