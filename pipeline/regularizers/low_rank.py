"""LR, the low-rank representation regularizer (Sanyal et al.): a virtual layer, not used at prediction.

At a representation ``a ∈ R^m`` it keeps its own ``W = (Ws + Wsᵀ)/2 ∈ R^{m×m}`` and ``b ∈ R^m``
and adds ``λ_c·Lc + λ_n·Ln`` to the loss, with ``Lc = mean_i ‖Wᵀ(a_i + b) − (a_i + b)‖²`` (the
representation should be reproduced by a low-rank map) and ``Ln = mean_i |1 − ‖a_i‖|`` (without it,
shrinking ``a`` to zero would trivially satisfy ``Lc``). Gradients reach the network and ``W, b``
through the optimizer; every ``project_every`` optimizer steps ``W`` is replaced by a rank-``r``
symmetric PSD approximation (ensembled Nyström) — writing to the regularizer's *own* parameter
is the method, the network's weights are never touched.

Representations: ``"features"`` is the backbone output (1-LR); any other name is a module inside
the backbone whose output is captured by a forward hook (2-LR adds ``"layer3"``, before the last
ResNet stage), global-average-pooled by default or flattened (the paper's 16 384-dim variant).
``W`` starts as the identity, so switching the regularizer on does not jolt the network; the first
projection makes it low-rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.models.dataflow import frozen_eval
from pipeline.regularizers.base import Regularizer, StepContext
from pipeline.regularizers.layers import backbone_of

FEATURES = "features"


def _eigh_with_jitter(matrix: torch.Tensor, jitter: float = 0.01, max_tries: int = 100):
    """``eigh``, adding ``0.01·I`` and retrying while the solver fails to converge (paper App. B)."""
    eye = torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
    for _ in range(max_tries):
        try:
            return torch.linalg.eigh(matrix)
        except torch.linalg.LinAlgError:
            matrix = matrix + jitter * eye
    raise torch.linalg.LinAlgError(f"eigh did not converge after adding {max_tries}×{jitter}·I")


def nystrom_project(
    W: torch.Tensor, rank: int, runs: int = 1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Symmetric PSD approximation of rank ≤ ``rank`` by the ensembled Nyström method.

    Per run: sample ``l = 2r`` indices uniformly without replacement, ``C = W[:, idx]``,
    ``Z = W[idx][:, idx]``, and ``C · pinv_r(Z) · Cᵀ`` with ``pinv_r`` the pseudo-inverse of the
    best rank-r PSD part of ``Z`` (its top-r positive eigenpairs; negative and numerically-zero
    eigenvalues are dropped, so the result is PSD even if ``W`` is indefinite). The ``runs``
    results are averaged. An average of rank-r matrices can have rank up to ``runs·r``, so it
    is then truncated to its best rank-r part — exact and cheap through its ``m × runs·r``
    factor — which keeps the promised rank. A rank-r PSD ``W`` is reproduced exactly (when the
    sampled ``Z`` has rank r). Computed in float64; returned in ``W``'s dtype.
    """
    if W.dim() != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {tuple(W.shape)}")
    if rank < 1 or runs < 1:
        raise ValueError("rank and runs must be >= 1")
    if not torch.isfinite(W).all():
        raise ValueError("cannot project a matrix with non-finite entries")
    m = W.shape[0]
    rank = min(rank, m)
    sample = min(2 * rank, m)
    work = ((W + W.T) / 2).to(torch.float64)
    rel_tol = sample * torch.finfo(W.dtype).eps
    gen_device = generator.device if generator is not None else torch.device("cpu")
    factors = []
    for _ in range(runs):
        idx = torch.randperm(m, generator=generator, device=gen_device)[:sample].to(W.device)
        C = work[:, idx]
        evals, evecs = _eigh_with_jitter(C[idx])
        evals, evecs = evals.flip(0)[:rank], evecs.flip(1)[:, :rank]  # top r, descending
        keep = evals > rel_tol * evals.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
        factors.append(C @ (evecs[:, keep] / evals[keep].sqrt()))
    factor = torch.cat(factors, dim=1) / math.sqrt(runs)  # ensemble average = factor · factorᵀ
    if factor.shape[1] > rank:
        _, vecs = _eigh_with_jitter(factor.T @ factor)
        factor = factor @ vecs[:, -rank:]
    projected = factor @ factor.T
    return ((projected + projected.T) / 2).to(W.dtype)


class LowRankSite(nn.Module):
    """The LR layer's parameters at one representation of dimension ``dim``."""

    def __init__(self, dim: int, device=None):
        super().__init__()
        self.Ws = nn.Parameter(torch.eye(dim, device=device))
        self.b = nn.Parameter(torch.zeros(dim, device=device))

    @property
    def W(self) -> torch.Tensor:
        """Symmetric by construction, as the Nyström projection requires."""
        return (self.Ws + self.Ws.T) / 2

    def forward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Lc, Ln)`` for a batch ``a`` of shape ``(batch, dim)``."""
        z = a + self.b
        projection = (z @ self.W - z).pow(2).sum(dim=1).mean()  # row form of Wᵀ(a + b) − (a + b)
        norm = (1 - torch.linalg.vector_norm(a, dim=1)).abs().mean()
        return projection, norm


class LowRank(Regularizer):
    """LR at one or two representations (1-LR: ``["features"]``, 2-LR: ``["features", "layer3"]``).

    ``rank`` is one target rank for every site or one per site (the paper: 100 before the readout,
    500 before the last stage). ``attach`` infers each site's dimension ``m`` from a forward pass,
    creates ``W, b`` (so build the optimizer after it) and registers the capture hooks.
    """

    name = "lr"

    def __init__(
        self,
        projection_weight: float = 1.0,
        norm_weight: float = 1.0,
        rank: int | Sequence[int] = 100,
        project_every: int = 10,
        nystrom_runs: int = 5,
        at: Sequence[str] = (FEATURES,),
        pool: bool = True,
        burn_in: int = 0,
        seed: int = 0,
    ):
        super().__init__(strength=1.0, burn_in=burn_in)
        self.at = list(at)
        if not 1 <= len(self.at) <= 2 or len(set(self.at)) != len(self.at):
            raise ValueError(f"`at` needs 1 or 2 distinct representations, got {self.at}")
        ranks = [rank] * len(self.at) if isinstance(rank, int) else list(rank)
        if len(ranks) != len(self.at) or min(ranks) < 1:
            raise ValueError(f"rank must be >= 1, one value or one per site of {self.at}")
        if project_every < 1 or nystrom_runs < 1:
            raise ValueError("project_every and nystrom_runs must be >= 1")
        self.ranks = ranks
        self.projection_weight = float(projection_weight)
        self.norm_weight = float(norm_weight)
        self.project_every = int(project_every)
        self.nystrom_runs = int(nystrom_runs)
        self.pool = bool(pool)
        self.seed = int(seed)
        self.sites = nn.ModuleList()
        self._captured: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self._last: dict[str, float | torch.Tensor] = {}

    def _represent(self, activation: torch.Tensor) -> torch.Tensor:
        """``(batch, m)``: spatial/token axes averaged (``pool``) or everything flattened."""
        if self.pool and activation.dim() == 4:
            activation = activation.mean(dim=(2, 3))
        elif self.pool and activation.dim() == 3:
            activation = activation.mean(dim=1)
        return activation.reshape(activation.shape[0], -1)

    def _capture(self, name: str):
        def hook(_module, _inputs, output):
            self._captured[name] = output[0] if isinstance(output, (tuple, list)) else output

        return hook

    def detach_hooks(self) -> None:
        """Remove the forward hooks from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._captured.clear()

    def attach(self, model: nn.Module, example_inputs: torch.Tensor) -> None:
        backbone = backbone_of(model)
        self.detach_hooks()
        modules = dict(backbone.named_modules())
        for name in self.at:
            if name != FEATURES and (name not in modules or name == ""):
                top = [n for n, _ in backbone.named_children()]
                raise ConfigError(
                    f"LR site {name!r} is not a module of the backbone; use {FEATURES!r} or a "
                    f"module name (top-level modules: {', '.join(top) or '(none)'})"
                )
            if name != FEATURES:
                self._handles.append(modules[name].register_forward_hook(self._capture(name)))
        with frozen_eval(backbone):
            features = backbone(example_inputs[:2])
        dims = [
            self._represent(features if n == FEATURES else self._captured[n]).shape[1]
            for n in self.at
        ]
        self._captured.clear()
        device = example_inputs.device
        self.sites = nn.ModuleList(LowRankSite(dim, device) for dim in dims)

    def _activation(self, name: str, ctx: StepContext) -> torch.Tensor:
        if name == FEATURES:
            if ctx.features is None:
                raise RuntimeError("LR at 'features' needs StepContext.features")
            return ctx.features
        activation = self._captured.pop(name, None)
        if activation is None:
            raise RuntimeError(
                f"LR: no activation captured at {name!r}; run the forward pass first"
            )
        return activation

    def penalty(self, ctx: StepContext) -> torch.Tensor:
        if len(self.sites) != len(self.at):
            raise RuntimeError("LR: call attach(model, example_inputs) first")
        total = None
        for name, site in zip(self.at, self.sites):
            a = self._represent(self._activation(name, ctx))
            with torch.autocast(device_type=a.device.type, enabled=False):
                projection, norm = site(a.to(site.Ws.dtype))
            self._last[f"lr/{name}/projection_loss"] = projection.detach()
            self._last[f"lr/{name}/norm_loss"] = norm.detach()
            term = self.projection_weight * projection + self.norm_weight * norm
            total = term if total is None else total + term
        self._last["penalty_value"] = total.detach()
        return total

    @torch.no_grad()
    def project(self, step: int) -> None:
        """Replace each ``W`` by its rank-r Nyström projection (seeded by step: resumable)."""
        for index, (site, rank) in enumerate(zip(self.sites, self.ranks)):
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 7 + index)
            site.Ws.copy_(nystrom_project(site.W, rank, self.nystrom_runs, generator))

    def after_step(self, ctx: StepContext) -> None:
        if self.active(ctx.epoch) and (ctx.step + 1) % self.project_every == 0:
            self.project(ctx.step)

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        out = {key: float(value) for key, value in self._last.items()}
        for name, site in zip(self.at, self.sites):
            out[f"lr/{name}/rank"] = float(torch.linalg.matrix_rank(site.W, hermitian=True))
        return out
