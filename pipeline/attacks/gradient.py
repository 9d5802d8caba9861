"""Monte-Carlo estimate of the boundary normal from hard labels only.

At a point ``x_b`` near the decision boundary, random directions ``u_i`` on a sphere of radius
``δ`` are labelled ``φ_i = ±1`` (adversarial or not); ``mean((φ_i − mean φ) u_i)`` estimates the
direction of the gradient of the adversarial margin (Chen, Jordan & Wainwright, "HopSkipJumpAttack",
IEEE S&P 2020, Eq. 9-16, with the baseline ``mean φ`` that reduces the variance). Tangent Attack
(Ma et al., NeurIPS 2021) uses the same estimate as the normal of its hemisphere.
"""

from __future__ import annotations

import math

import torch

from pipeline.attacks.queries import AdversarialQueries


class ProbeBuffers:
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


def estimate_normals(
    queries: AdversarialQueries,
    xb: torch.Tensor,
    run: torch.Tensor,
    n_probes: torch.Tensor,
    delta: torch.Tensor,
    *,
    gen: torch.Generator,
    buffers: ProbeBuffers,
    rows_per_chunk: int,
    box: tuple[float, float],
) -> torch.Tensor:
    """Unit normals ``(A, d)`` at the rows ``xb`` of samples ``run``, ``n_probes`` each.

    ``mean((φ_i − mean φ) u_i)``, or ``±mean u_i`` if all probes agree. Probes are laid out
    ``(samples, probes, d)`` and streamed in chunks of whole samples (or of probe slices of one
    sample when ``n_t·d`` alone exceeds a chunk), keeping per-sample sums ``Σφ, Σδu, Σφδu``:
    memory is bounded by one chunk, and the sums are one batched matrix product per chunk rather
    than scatters. Directions are taken from the clipped probes (``δu = clip(x_b + δu) − x_b``);
    the common factor ``1/δ`` is dropped since the estimate is normalized. Rows beyond a
    sample's ``n_probes`` (budget) are never queried.
    """
    lo, hi = box
    (a, d), dev = xb.shape, xb.device
    n_max = int(n_probes.max())
    width = min(n_max, rows_per_chunk)
    group = max(1, rows_per_chunk // width)
    sum_phi = torch.zeros(a, device=dev)
    sums = torch.zeros(a, 2, d, device=dev)  # [Σ δu, Σ φ δu] per sample
    for s0 in range(0, a, group):
        s = slice(s0, min(a, s0 + group))
        center = xb[s].unsqueeze(1)
        # A step of length δ moves no coordinate by more than δ: clip only if one can leave.
        reach = float(delta[s].max())
        clips = float(center.amin()) - lo < reach or hi - float(center.amax()) < reach
        for j in range(0, n_max, width):
            m = min(width, n_max - j)
            phi_sum, chunk_sums = _probe_slice(
                queries, center, run[s], n_probes[s], delta[s], j, m,
                clips=clips, gen=gen, buffers=buffers, box=box,
            )  # fmt: skip
            sum_phi[s] += phi_sum
            sums[s] += chunk_sums
    count = n_probes.float().clamp_min(1)
    mean_phi = (sum_phi / count).unsqueeze(1)
    agree = mean_phi.abs() == 1
    grad = torch.where(agree, mean_phi * sums[:, 0], sums[:, 1] - mean_phi * sums[:, 0])
    return grad / torch.linalg.vector_norm(grad, dim=1).clamp_min(1e-30).unsqueeze(1)


def _probe_slice(
    queries: AdversarialQueries,
    center: torch.Tensor,
    owners: torch.Tensor,
    n_probes: torch.Tensor,
    delta: torch.Tensor,
    j: int,
    m: int,
    *,
    clips: bool,
    gen: torch.Generator,
    buffers: ProbeBuffers,
    box: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probes ``j..j+m-1`` of the samples ``owners`` at ``center`` ``(g, 1, d)``, labelled:
    per sample ``Σφ`` ``(g,)`` and ``[Σ δu, Σ φ δu]`` ``(g, 2, d)``. Probes past a sample's
    ``n_probes`` are drawn (the generator advances alike) but never queried."""
    g, _, d = center.shape
    dev = center.device
    mask = (j + torch.arange(m, device=dev)).unsqueeze(0) < n_probes.unsqueeze(1)
    u = buffers.get("u", g, m, d).normal_(generator=gen)
    norms = torch.linalg.vector_norm(u, dim=2, keepdim=True).clamp_min_(1e-12)
    u.mul_(delta.view(g, 1, 1) / norms)
    probes = torch.add(center, u, out=buffers.get("probes", g, m, d))
    if clips:
        probes.clamp_(*box)
        torch.sub(probes, center, out=u)  # the step actually probed after clipping
    rows = mask.reshape(-1).nonzero().squeeze(1)
    owners = owners.repeat_interleave(m)[rows]
    phi = torch.zeros(g * m, device=dev)
    flat = probes.view(g * m, d)
    adv = queries.adversarial(flat if rows.numel() == g * m else flat.index_select(0, rows), owners)
    phi[rows] = adv.float() * 2 - 1
    phi = phi.view(g, m)
    return phi.sum(dim=1), torch.bmm(torch.stack([mask.float(), phi], dim=1), u)
