"""In-memory trainers for the paper's small experiments (XOR, digits MLP).

Why not :func:`pipeline.training.loop.fit`: these datasets are a few kilobytes and one run takes
seconds, so per-epoch checkpoints, DataLoader workers and PIL decoding would cost more than the
training itself (XOR is 15 000 one-step epochs per run, 60 runs). What matters for the papers is
kept identical to the main loop: every regularizer is a :class:`~pipeline.regularizers.Regularizer`
attached to the model, its penalty is added to the task loss *before* ``backward`` so momentum
and weight decay apply to it, burn-in is ``Regularizer.active(epoch)``, and ``after_step`` runs
after ``optimizer.step()``. Nothing here writes to weights directly.

Two exact shortcuts keep the experiments inside their CPU budget:

* **Branching at burn-in.** Before the first regularizer switches on, every variant of a seed
  trains identically (same init, same minibatch order, no penalty), so the plain phase runs
  once and each variant continues from a :class:`Snapshot` (weights + momentum buffers).
  Minibatch order is a function of ``(seed, epoch)`` only, so a resumed run sees exactly the
  batches a straight run would.
* **Stacking seeds.** Full-batch runs without any regularizer (the XOR plain phase and ``none``
  variant) train all seeds at once: parameters are stacked along a leading seed axis and the
  MLP is evaluated with batched matrix products. SGD with momentum
  and weight decay is elementwise, and the summed loss has per-seed gradients, so this is the
  same update as training each model alone (checked by a test, up to float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.errors import TrainingError
from pipeline.regularizers import Regularizer, StepContext
from pipeline.regularizers.layers import WEIGHT_LAYER_TYPES


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every Linear/Conv2d: backbone layers as ``backbone.<name>``, then ``head``."""
    layers = [
        (f"backbone.{name}", m)
        for name, m in model.backbone.named_modules()
        if isinstance(m, WEIGHT_LAYER_TYPES)
    ]
    return [*layers, ("head", model.head)]


@torch.no_grad()
def sigma_max_per_layer(model: nn.Module) -> dict[str, float]:
    """Exact top singular value of every weight matrix (conv kernels flattened: a cheap scale)."""
    out = {}
    for name, layer in weight_layers(model):
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
        out[name] = float(torch.linalg.svdvals(w)[0])
    return out


@dataclass
class TrainSettings:
    """SGD settings of one run; ``batch_size=None`` is full-batch gradient descent."""

    epochs: int  # train until this many epochs are complete
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int | None = None
    seed: int = 0  # minibatch order
    log_every: int = 1  # epochs between history rows (the last epoch is always logged)
    log_sigma: bool = True


@dataclass
class Snapshot:
    """Weights and SGD momentum buffers after ``epoch`` epochs: where the variants branch."""

    epoch: int
    state: dict[str, torch.Tensor]
    momentum: dict[str, torch.Tensor]

    def restore(self, model: nn.Module) -> nn.Module:
        model.load_state_dict(self.state)
        return model


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    snapshot: Snapshot | None = None  # state at the end of training


def _batch_order(n: int, batch: int, seed: int, epoch: int) -> torch.Tensor | None:
    """Minibatch permutation of one epoch, a function of (seed, epoch) only; None = full batch."""
    if batch >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def _set_momentum(
    optimizer: torch.optim.Optimizer, named: dict[str, nn.Parameter], buffers: dict
) -> None:
    for name, p in named.items():
        if name in buffers:
            optimizer.state[p]["momentum_buffer"] = buffers[name].clone()


def _get_momentum(optimizer: torch.optim.Optimizer, named: dict[str, nn.Parameter]) -> dict:
    out = {}
    for name, p in named.items():
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            out[name] = buf.detach().clone()
    return out


def train_in_memory(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    regularizers: Sequence[Regularizer] = (),
    start: Snapshot | None = None,
) -> TrainResult:
    """Train a SplitModel on tensors with SGD plus the regularizers' penalties.

    Minibatches are a permutation per epoch; the last, smaller batch is kept, so every sample
    is seen once per epoch. ``start`` resumes from a snapshot (weights, momentum, epoch). History
    rows: ``epoch`` (epochs completed), ``loss``/``penalty`` of the epoch's last step and, when
    enabled, ``sigma/<layer>`` (exact σ_max of every weight layer).
    """
    regularizers = list(regularizers)
    first = 0
    if start is not None:
        start.restore(model)
        first = start.epoch
    for r in regularizers:
        r.attach(model, x[:2])
    optimizer, named = _sgd(model, regularizers, settings)
    if start is not None:
        _set_momentum(optimizer, named, start.momentum)
    n = x.shape[0]
    batch = n if settings.batch_size is None else min(settings.batch_size, n)
    per_epoch = math.ceil(n / batch)
    result = TrainResult()
    model.train()
    for epoch in range(first, settings.epochs):
        active = [r for r in regularizers if r.active(epoch)]
        order = _batch_order(n, batch, settings.seed, epoch)
        for i, begin in enumerate(range(0, n, batch)):
            if order is None:
                xb, yb = x, y
            else:
                idx = order[begin : begin + batch]
                xb, yb = x[idx], y[idx]
            step = epoch * per_epoch + i
            task, penalty = _sgd_step(model, optimizer, xb, yb, step, epoch, active)
        if (epoch + 1) % settings.log_every == 0 or epoch + 1 == settings.epochs:
            row = {
                "epoch": epoch + 1,
                "loss": float(task.detach()),
                "penalty": float(penalty.detach()),
            }
            if settings.log_sigma:
                row.update({f"sigma/{k}": v for k, v in sigma_max_per_layer(model).items()})
            result.history.append(row)
    model.eval()
    result.snapshot = Snapshot(
        settings.epochs,
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        _get_momentum(optimizer, named),
    )
    return result


def _sgd(
    model: nn.Module, regularizers: list[Regularizer], settings: TrainSettings
) -> tuple[torch.optim.SGD, dict[str, nn.Parameter]]:
    """SGD over the model's trainable parameters and the regularizers' own (never decayed)."""
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    groups = [{"params": list(named.values())}]
    reg_params = [p for r in regularizers for p in r.parameters()]
    if reg_params:
        groups.append({"params": reg_params, "weight_decay": 0.0})
    optimizer = torch.optim.SGD(
        groups, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    return optimizer, named


def _sgd_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    xb: torch.Tensor,
    yb: torch.Tensor,
    step: int,
    epoch: int,
    active: list[Regularizer],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; its task loss and penalty."""
    features = model.representation(xb)
    logits = model.head(features)
    task = F.cross_entropy(logits, yb)
    ctx = StepContext(step=step, epoch=epoch, features=features, logits=logits, inputs=xb)
    penalty = sum((r.penalty(ctx) for r in active), torch.zeros(()))
    loss = task + penalty
    if not torch.isfinite(loss):
        raise TrainingError(
            f"non-finite loss at epoch {epoch + 1} (task {float(task):.4g}, "
            f"penalty {float(penalty):.4g}); lower the learning rate or strength"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    for r in active:
        r.after_step(ctx)
    return task, penalty


def _stacked_logits(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor):
    """Logits ``(S, N, C)`` of S stacked copies of an MLP SplitModel on shared inputs ``x``.

    Written out with ``baddbmm`` because ``vmap`` over ``functional_call`` costs several
    milliseconds per call, which is more than the 2-8-2 XOR network itself.
    """
    net = getattr(model.backbone, "net", None)
    if not isinstance(net, nn.Sequential):
        raise TypeError("train_stacked supports MLP backbones (pipeline.models MLPBackbone)")
    h = model.normalize(x).flatten(1)
    s = next(iter(params.values())).shape[0]
    h = h.unsqueeze(0).expand(s, *h.shape)
    linears = [(f"backbone.net.{n}", m) for n, m in net.named_children()] + [("head", model.head)]
    for name, module in linears:
        if isinstance(module, nn.Linear):
            h = torch.baddbmm(
                params[f"{name}.bias"].unsqueeze(1), h, params[f"{name}.weight"].transpose(1, 2)
            )
        elif isinstance(module, nn.ReLU | nn.GELU | nn.Identity):
            h = module(h)
        elif not isinstance(module, nn.Flatten):
            raise TypeError(f"train_stacked: unsupported layer {type(module).__name__}")
    return h


def train_stacked(
    models: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    starts: Sequence[Snapshot] | None = None,
) -> list[TrainResult]:
    """Full-batch SGD of several same-architecture MLPs at once, without regularizers.

    Equivalent to :func:`train_in_memory` on each model with ``batch_size=None`` and no
    regularizers (the models differ only in their weights, e.g. their init seed). The trained
    weights are written back into ``models``; each result carries the model's history and a
    snapshot to branch from.
    """
    if settings.batch_size is not None and settings.batch_size < x.shape[0]:
        raise ValueError("train_stacked is full-batch only")
    models = list(models)
    first = 0
    if starts is not None:
        for m, snap in zip(models, starts, strict=True):
            snap.restore(m)
        first = starts[0].epoch
        if any(snap.epoch != first for snap in starts):
            raise ValueError("all snapshots must be at the same epoch")
    params, optimizer = _stacked_sgd(models, settings, starts)
    template = models[0]
    count, samples = len(models), x.shape[0]
    targets = y.repeat(count)
    results = [TrainResult() for _ in models]
    for epoch in range(first, settings.epochs):
        logits = _stacked_logits(template, params, x)
        losses = (
            F.cross_entropy(logits.reshape(count * samples, -1), targets, reduction="none")
            .view(count, samples)
            .mean(1)
        )
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        if (epoch + 1) % settings.log_every == 0 or epoch + 1 == settings.epochs:
            _log_stacked(results, epoch, losses.detach(), params, template, settings)
    _write_back(models, results, params, optimizer, settings)
    return results


def _stacked_sgd(
    models: list[nn.Module], settings: TrainSettings, starts: Sequence[Snapshot] | None
) -> tuple[dict[str, torch.Tensor], torch.optim.SGD]:
    """Each parameter of the models stacked along a new first axis, and SGD over them, with
    the snapshots' momentum when every one of them holds it."""
    names = [n for n, _ in models[0].named_parameters()]
    params = {
        n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]).requires_grad_()
        for n in names
    }
    optimizer = torch.optim.SGD(
        list(params.values()),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    if starts is not None:
        for n in names:
            if all(n in snap.momentum for snap in starts):
                optimizer.state[params[n]]["momentum_buffer"] = torch.stack(
                    [snap.momentum[n] for snap in starts]
                )
    return params, optimizer


def _log_stacked(
    results: list[TrainResult],
    epoch: int,
    losses: torch.Tensor,
    params: dict[str, torch.Tensor],
    template: nn.Module,
    settings: TrainSettings,
) -> None:
    """A history row per model after ``epoch``: its loss and, if asked, each layer's σ_max."""
    if not bool(torch.isfinite(losses).all()):
        raise TrainingError(f"non-finite loss at epoch {epoch + 1}; lower the learning rate")
    sigmas = {}
    if settings.log_sigma:
        with torch.no_grad():
            for layer, _ in weight_layers(template):
                w = params[f"{layer}.weight"].detach().double()
                sigmas[layer] = torch.linalg.svdvals(w.flatten(2))[:, 0].tolist()
    for i, res in enumerate(results):
        row = {"epoch": epoch + 1, "loss": float(losses[i]), "penalty": 0.0}
        row.update({f"sigma/{k}": v[i] for k, v in sigmas.items()})
        res.history.append(row)


def _write_back(
    models: list[nn.Module],
    results: list[TrainResult],
    params: dict[str, torch.Tensor],
    optimizer: torch.optim.SGD,
    settings: TrainSettings,
) -> None:
    """Each model's slice of the stacked weights into the model, and its snapshot."""
    momentum = {n: optimizer.state.get(p, {}).get("momentum_buffer") for n, p in params.items()}
    for i, (model, res) in enumerate(zip(models, results)):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(params[n][i])
        model.eval()
        res.snapshot = Snapshot(
            settings.epochs,
            {k: v.detach().clone() for k, v in model.state_dict().items()},
            {n: v[i].detach().clone() for n, v in momentum.items() if v is not None},
        )


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> float:
    """Fraction of ``x`` the model labels as ``y`` (eval mode)."""
    model.eval()
    correct = sum(
        int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch), y.split(batch))
    )
    return correct / max(1, x.shape[0])
