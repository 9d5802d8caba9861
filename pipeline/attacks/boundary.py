"""The shared skeleton of batched hard-label boundary attacks (Tangent Attack, HopSkipJump).

Both attacks (Chen, Jordan & Wainwright, IEEE S&P 2020; Ma et al., NeurIPS 2021) follow one
loop per sample: find an adversarial start, bisect to the boundary, then repeat — estimate the
boundary normal at the boundary point from ``n_t = B₀·√t`` labelled probes, take a step
(geometric search along the normal for HopSkipJump, a tangent point of a hemisphere for Tangent
Attack), and bisect from the clean input back to the boundary. Only the step differs, so it is
the one method a subclass provides (:meth:`BoundaryAttack.candidate`).

Everything is batched: each step stacks the queries of all still-running samples into one
predict call (streamed in chunks, so memory stays bounded). Queries are counted per sample
(:mod:`pipeline.attacks.queries`), and a sample never exceeds its budget: it drops out when it
cannot pay for one more probe, step test and full binary search.

The best distance found so far is also recorded at fixed query counts (``checkpoints``): the
best boundary point whose search had finished within that many queries of its sample.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.attacks._rows import put, take
from pipeline.attacks.gradient import ProbeBuffers, estimate_normals
from pipeline.attacks.queries import AdversarialQueries, Predict, query_budget
from pipeline.attacks.search import binary_search, search_steps
from pipeline.attacks.starts import noise_starts, pool_starts


@dataclass
class AttackResult:
    """Per-sample outcome. Failed samples keep the clean input as their point, distance ``inf``."""

    adversarial: torch.Tensor  # (B, ...) float32 like x: inside the box, adversarial on success
    distances: torch.Tensor  # (B,) float32 ‖adversarial − x‖₂; 0 if misclassified, inf if failed
    queries: torch.Tensor  # (B,) long, model queries (predicted rows) spent on each sample
    success: torch.Tensor  # (B,) bool, an adversarial point was found (or x was misclassified)
    misclassified: torch.Tensor  # (B,) bool, predict(x) != y already (distance 0)
    iterations: torch.Tensor  # (B,) long, iterations completed
    starts: torch.Tensor  # (B, ...) the adversarial start of each sample (x where none)
    checkpoints: torch.Tensor  # (K,) long, query counts at which the best distance is recorded
    at_queries: torch.Tensor  # (B, K) float32 best distance within checkpoints[k]; inf if none


@dataclass(frozen=True)
class AttackStatus:
    """Where a batched attack stands, for a progress display (``run_boundary_attack(progress=)``)."""

    iteration: int  # iterations completed (0: after the start phase)
    iterations: int  # T
    samples: int  # B
    done: int  # samples that will run no further iteration (budget spent, or no start found)
    queries: int  # model queries spent so far, all samples together
    expected: int  # at most what the batch will spend: spent by done samples, budget of the rest
    mean_distance: float  # mean best distance over samples with an adversarial point (nan: none)


def _norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v, dim=1)


class BoundaryAttack(ABC):
    """State of one batched attack: per-sample boundary point, distance, best point, budget."""

    def __init__(
        self, oracle, xs, budget, *, gamma, box, seed, max_probe_elements, verify, checkpoints=()
    ):
        self.oracle, self.xs, self.budget, self.box, self.verify = oracle, xs, budget, box, verify
        batch, self.d = xs.shape
        dev = self.device = xs.device
        # Binary-search tolerance θ = γ / (d √d), the l2 setting of both papers.
        self.theta = gamma / (self.d * math.sqrt(self.d))
        self.steps = search_steps(self.theta)
        self.gen = torch.Generator(device=dev)
        self.gen.manual_seed(int(seed))
        self.rows_per_chunk = max(1, max_probe_elements // self.d)
        self.buffers = ProbeBuffers(dev)
        self.every = torch.arange(batch, device=dev)
        self.misclassified = torch.zeros(batch, dtype=torch.bool, device=dev)
        self.found = torch.zeros(batch, dtype=torch.bool, device=dev)
        self.start_point = xs.clone()
        self.current = xs.clone()
        self.dist = torch.full((batch,), math.inf, device=dev)
        self.best = xs.clone()
        self.best_dist = self.dist.clone()
        self.iterations = torch.zeros(batch, dtype=torch.long, device=dev)
        self.checkpoints = torch.as_tensor(list(checkpoints), dtype=torch.long, device=dev)
        self.at_queries = torch.full((batch, self.checkpoints.numel()), math.inf, device=dev)

    @abstractmethod
    def candidate(self, x, xb, normal, size) -> torch.Tensor:
        """The attack's step: a point to test from boundary points ``xb`` with unit ``normal``
        and step ``size`` (per row), for clean inputs ``x``. Halved ``size`` until adversarial."""

    def left(self, idx: torch.Tensor) -> torch.Tensor:
        return self.budget[idx] - self.oracle.count[idx]

    def start(self, init_tries: int, pool, starts) -> None:
        """A start per sample (given, else noise, else the pool), then a search to the boundary."""
        can_ask = self.every[self.left(self.every) > 0]
        if can_ask.numel() == 0:
            return
        # Misclassified inputs are adversarial already: distance 0, nothing to search.
        self.misclassified[can_ask] = self.oracle.adversarial(take(self.xs, can_ask), can_ask)
        mis = can_ask[self.misclassified[can_ask]]
        self._record(mis, torch.zeros(mis.numel(), device=self.device))
        todo = can_ask[~self.misclassified[can_ask]]
        if starts is not None:
            ask = todo[self.left(todo) > 0]
            adv = self.oracle.adversarial(take(starts, ask), ask)
            put(self.start_point, ask[adv], take(starts, ask[adv]))
            self.found[ask[adv]] = True
        noise_starts(
            self.oracle, todo[~self.found[todo]], self.found, self.start_point, self.left,
            tries=init_tries, gen=self.gen, rows_per_chunk=self.rows_per_chunk, box=self.box,
        )  # fmt: skip
        if pool is not None:
            pool_starts(
                self.oracle, self.xs, todo[~self.found[todo]], self.found, self.start_point,
                self.left, pool, box=self.box,
            )  # fmt: skip
        run = self.every[self.found]
        if run.numel():
            budget = (self.left(run) - int(self.verify)).clamp_min(0)
            self._search_and_update(run, take(self.start_point, run), budget)

    def iterate(self, t: int, init_probes: int, max_probes: int, max_halvings: int) -> bool:
        """Iteration ``t`` for every sample that can still pay for one; False if none can."""
        verify = int(self.verify)
        reserve = self.steps + 1 + verify  # one step test, a full search, the final check
        run = self.every[self.found & (self.left(self.every) > reserve)]
        if run.numel() == 0:
            return False
        n_t = min(int(init_probes * math.sqrt(t)), max_probes)
        n_probes = (self.left(run) - reserve).clamp(max=n_t)
        dist = self.dist[run]
        lo, hi = self.box
        # Probe radius δ_t = √d θ ‖x_t − x*‖ (the first one: a tenth of the box width).
        delta = (
            torch.full_like(dist, 0.1 * (hi - lo)) if t == 1 else self.d**0.5 * self.theta * dist
        )
        xb = take(self.current, run)
        normal = estimate_normals(
            self.oracle, xb, run, n_probes, delta, gen=self.gen, buffers=self.buffers,
            rows_per_chunk=self.rows_per_chunk, box=self.box,
        )  # fmt: skip
        k, ok = self._step_search(run, xb, normal, dist / math.sqrt(t), max_halvings)
        moved = run[ok]
        if moved.numel():
            self._search_and_update(moved, take(k, ok), self.left(moved) - verify)
        self.iterations[run] += 1
        return True

    def status(self, t: int, iterations: int, finished: bool = False) -> AttackStatus:
        """Where the attack stands after iteration ``t``; reads only (host syncs, no queries)."""
        reserve = self.steps + 1 + int(self.verify)  # as in :meth:`iterate`
        running = self.found & (self.left(self.every) > reserve) & (t < iterations)
        if finished:
            running = torch.zeros_like(running)
        spent = self.oracle.count
        best = self.best_dist[torch.isfinite(self.best_dist)]
        return AttackStatus(
            iteration=t,
            iterations=iterations,
            samples=self.every.numel(),
            done=int((~running).sum()),
            queries=int(spent.sum()),
            expected=int(torch.where(running, self.budget, spent).sum()),
            mean_distance=float(best.mean()) if best.numel() else math.nan,
        )

    def finish(self, shape: torch.Size) -> AttackResult:
        if self.verify:
            self._verify()
        success = self.found | self.misclassified
        put(self.best, self.misclassified, take(self.xs, self.misclassified))
        self.best_dist[self.misclassified] = 0.0
        put(self.best, ~success, take(self.xs, ~success))
        self.best_dist[~success] = math.inf
        return AttackResult(
            adversarial=self.best.reshape(shape),
            distances=self.best_dist,
            queries=self.oracle.count.clone(),
            success=success,
            misclassified=self.misclassified,
            iterations=self.iterations,
            starts=self.start_point.reshape(shape),
            checkpoints=self.checkpoints,
            at_queries=self.at_queries,
        )

    def _record(self, idx: torch.Tensor, dist: torch.Tensor) -> None:
        """Best distance ``dist`` reached by samples ``idx`` at their current query count."""
        if idx.numel() == 0 or self.checkpoints.numel() == 0:
            return
        reached = self.checkpoints.unsqueeze(0) >= self.oracle.count[idx].unsqueeze(1)
        rows = take(self.at_queries, idx)
        rows = torch.where(reached, torch.minimum(rows, dist.unsqueeze(1)), rows)
        put(self.at_queries, idx, rows)

    def _search_and_update(self, idx, adv_end, budget) -> None:
        """Bisect from ``x`` to ``adv_end``; the result is the new boundary point, kept if best."""
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
        self._record(idx[better], dist[better])

    def _step_search(self, run, xb, normal, size, max_halvings):
        """Clip each candidate to the box, then test it; halve the step size if not adversarial.

        Clipping before the test makes the tested point the one used. A sample stops halving
        when only the queries of the search that follows (and the final check) would be left.
        """
        keep = self.steps + int(self.verify)
        x = take(self.xs, run)
        k = xb.clone()
        ok = torch.zeros(run.numel(), dtype=torch.bool, device=self.device)
        size = size.clone()
        for _ in range(max_halvings + 1):
            pending = (~ok & (self.left(run) > keep)).nonzero().squeeze(1)
            if pending.numel() == 0:
                break
            cand = self.candidate(
                take(x, pending), take(xb, pending), take(normal, pending), size[pending]
            ).clamp_(*self.box)
            adv = self.oracle.adversarial(cand, run[pending])
            put(k, pending[adv], take(cand, adv))
            ok[pending[adv]] = True
            size[pending] /= 2
        return k, ok

    def _verify(self, rungs: int = 24) -> None:
        """Re-query the returned points; push any that flipped back outward along ``x → point``.

        A boundary point lies within ``θ`` of the boundary, where the label may depend on the
        batch the model saw it in (kernel choice, autocast). Rungs ``α = 1 + 2^j θ`` move it out
        geometrically; the start point (tested adversarial) is the last resort. The distances
        recorded at checkpoints for such a sample are raised to its new distance, since the
        earlier points were equally close to the boundary.
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
            self.at_queries[i] = self.at_queries[i].clamp_min(self.best_dist[i])


@torch.no_grad()
def run_boundary_attack(
    attack_cls: type[BoundaryAttack],
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
    progress: Callable[[AttackStatus], None] | None = None,
) -> AttackResult:
    """Run ``attack_cls`` (its step) on a batch ``x`` (shape ``(B, ...)``) with labels ``y``.

    ``predict(inputs) -> labels`` answers hard labels for inputs shaped like ``x[1:]``; a
    :class:`~pipeline.attacks.oracle.LabelOracle` (or anything with ``takes_owners = True``) is
    also given ``owners=``, the sample index of each row, so it can count queries per sample
    independently of the attack. ``predict`` must not keep references to its inputs: probe
    buffers are reused from one call to the next.

    ``iterations`` is T. ``max_queries`` (int or per-sample tensor) is a query budget that no
    sample exceeds: a sample drops out when it cannot pay for one more probe, step test and
    full binary search. ``gamma`` sets the binary-search tolerance ``θ = γ / (d √d)``;
    ``n_t = min(init_probes·√t, max_probes)`` (``init_probes`` is HopSkipJump's ``B₀``).
    ``init_tries`` bounds the random-noise starts; ``fallback_pool = (inputs, labels)`` supplies
    starts where noise never fools the model (the nearest pool input of another class that the
    model classifies correctly). ``starts`` (shaped like ``x``) are candidate adversarial starts
    tried first, one query each. ``max_halvings`` bounds the step halvings per iteration;
    ``max_probe_elements`` bounds the floats of one chunk of probes in memory. With ``verify``
    every returned point is re-queried once at the end and, should a boundary point have changed
    label (the model's rounding can depend on the batch it is evaluated in), pushed outward
    along its ray until it is adversarial again. ``checkpoints`` are query counts at which the
    best distance so far is recorded (``result.at_queries``). ``progress``, if given, is called
    with an :class:`AttackStatus` after the start phase, after each iteration and at the end;
    it only reads the attack's state, so the result is the same with or without it. Same
    inputs and ``seed`` on the same device give the same result. Runs under ``torch.no_grad``:
    a hard-label attack never needs gradients.

    The start phase draws from the generator first, so two attacks run with the same ``seed``
    on the same inputs start from the same points.
    """
    _check_options(iterations, init_probes, max_probes, gamma, max_halvings, checkpoints)
    xs, y, box, starts = _inputs(x, y, box, starts)
    attack = attack_cls(
        AdversarialQueries(predict, y, tuple(x.shape[1:])), xs,
        query_budget(max_queries, x.shape[0], x.device), gamma=gamma, box=box, seed=seed,
        max_probe_elements=max_probe_elements, verify=verify, checkpoints=checkpoints,
    )  # fmt: skip
    attack.start(init_tries, fallback_pool, starts)
    return _iterate(attack, x.shape, iterations, init_probes, max_probes, max_halvings, progress)


def _iterate(attack, shape, iterations, init_probes, max_probes, max_halvings, progress):
    """Steps 1..T (until no sample can go on), telling ``progress`` after each, then the result."""
    if progress is not None:
        progress(attack.status(0, iterations))
    done = 0
    for t in range(1, iterations + 1):
        if not attack.iterate(t, init_probes, max_probes, max_halvings):
            break
        done = t
        if progress is not None:
            progress(attack.status(t, iterations))
    result = attack.finish(shape)
    if progress is not None:
        progress(attack.status(done, iterations, finished=True))
    return result


def _check_options(iterations, init_probes, max_probes, gamma, max_halvings, checkpoints) -> None:
    if iterations < 0 or init_probes < 1 or max_probes < 1 or gamma <= 0 or max_halvings < 0:
        raise ValueError("need iterations, max_halvings >= 0; init/max_probes >= 1; gamma > 0")
    if any(int(c) < 0 for c in checkpoints):
        raise ValueError("checkpoints must be non-negative query counts")


def _inputs(x: torch.Tensor, y, box, starts: torch.Tensor | None):
    """The batch as float32 rows ``(B, d)`` inside the box, labels as a long vector, the box as
    floats and the starts as rows clipped to it; ValueError for a batch that does not fit."""
    if x.dim() < 2:
        raise ValueError(f"x must be a batch (B, ...), got shape {tuple(x.shape)}")
    lo, hi = float(box[0]), float(box[1])
    if not lo < hi:
        raise ValueError(f"box must satisfy lo < hi, got {box}")
    xs = x.detach().reshape(x.shape[0], -1).to(torch.float32)
    if bool(((xs < lo) | (xs > hi)).any()):
        raise ValueError(f"x must lie inside the box {box}")
    y = torch.as_tensor(y, device=x.device).long().reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y has {y.shape[0]} labels for {x.shape[0]} inputs")
    if starts is not None:
        starts = starts.detach().reshape(xs.shape).to(xs.device, torch.float32).clamp(lo, hi)
    return xs, y, (lo, hi), starts
