"""The one training loop: supervised pretraining, finetuning and SSL all run through :func:`fit`.

What differs between them is the :class:`TrainModule` (how a batch becomes a loss) and the
evaluation callback. The loop owns optimization, regularizer penalties, mixed precision,
checkpoint/resume, NaN handling, progress and per-epoch metrics (see docs/methods.md,
"Training loop").

No step reads a value back to the host: the loss, accuracy and finiteness sums stay on the
device and are read at checkpoint boundaries, at logging intervals and at the end of an epoch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from pipeline.core.errors import TrainingError
from pipeline.core.progress import Progress
from pipeline.data.loaders import EpochBatches
from pipeline.regularizers.base import Regularizer, StepContext
from pipeline.runtime import device as runtime
from pipeline.runtime.distributed import (
    DistInfo,
    all_reduce_mean,
    broadcast_buffers,
    broadcast_object,
)
from pipeline.training.checkpoint import CheckpointStore
from pipeline.training.metrics import write_history
from pipeline.training.schedule import lr_multiplier

log = logging.getLogger(__name__)


@dataclass
class StepOutput:
    loss: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor | None = None
    # Correctly classified samples in the batch, as a device tensor (supervised only): reading it
    # here would stall the GPU every step.
    correct: torch.Tensor | None = None


class TrainModule(nn.Module):
    """Wraps the model (and any training-only heads) so DDP sees one module and one forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, inputs: torch.Tensor, targets: torch.Tensor
    ) -> StepOutput:  # pragma: no cover
        raise NotImplementedError

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters outside ``model`` (e.g. an SSL projector), trained at the head rate."""
        return [p for n, p in self.named_parameters() if not n.startswith("model.")]


class SupervisedModule(TrainModule):
    def __init__(self, model: nn.Module, label_smoothing: float = 0.0):
        super().__init__(model)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> StepOutput:
        features = self.model.representation(inputs)
        logits = self.model.head(features)
        loss = self.criterion(logits, targets)
        correct = (logits.detach().argmax(1) == targets).sum()
        return StepOutput(loss=loss, features=features, logits=logits, correct=correct)


@dataclass
class FitContext:
    """Everything :func:`fit` needs besides the module; built by a stage."""

    spec: object  # pipeline.core.config.TrainSpec
    train_set: Dataset  # yields (inputs, targets): a SeededTransform, or a shard set to stream
    checkpoints: CheckpointStore
    metrics_dir: Path
    device: torch.device
    dist: DistInfo = DistInfo()
    regularizers: list[Regularizer] | None = None
    evaluate: Callable[[nn.Module], dict] | None = None
    diagnose: Callable[[nn.Module], dict] | None = None  # e.g. exact σ_max of every layer
    num_workers: int = 0
    progress: bool = True
    desc: str = "train"
    example_inputs: torch.Tensor | None = None


def _param_groups(module: TrainModule, regularizers: list[Regularizer], optim) -> list[dict]:
    model = module.model
    groups = [
        {
            "params": [p for p in model.backbone.parameters() if p.requires_grad],
            "lr": optim.lr_backbone,
            "name": "backbone",
        },
        {
            "params": [p for p in model.head.parameters() if p.requires_grad],
            "lr": optim.lr_head,
            "name": "head",
        },
        {"params": module.extra_parameters(), "lr": optim.lr_head, "name": "extra"},
        {
            "params": [p for r in regularizers for p in r.parameters()],
            "lr": optim.lr_backbone,
            "weight_decay": 0.0,
            "name": "regularizer",
        },
    ]
    return [g for g in groups if g["params"]]


# Steps between reads of the running loss for the progress display (each is a host read).
LOG_EVERY = 50
# Order of the device-side running sums (sample-weighted; ``nonfinite`` counts bad steps).
SUMS = ("loss", "task", "penalty", "correct", "seen", "nonfinite")


@dataclass
class _Run:
    """The state of one :func:`fit` call: what it trains, how, and where it is."""

    module: TrainModule
    train_module: nn.Module  # ``module`` or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    regularizers: list[Regularizer]
    precision: runtime.Precision
    batches: EpochBatches  # the epoch order, by index or streamed
    local_batch: int
    steps_per_epoch: int
    sums: torch.Tensor  # float64 (len(SUMS),) on the device
    first_bad: torch.Tensor  # float64 (3,): step in epoch, task loss, penalty of the first bad step
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict] | None = None


def fit(module: TrainModule, ctx: FitContext) -> list[dict]:
    """Train to ``spec.epochs``, resuming from the last checkpoint; returns the per-epoch history."""
    run = _set_up(module, ctx)
    if _resume(run, ctx):
        return run.history
    _wrap_for_ddp(run, ctx)
    total = ctx.spec.epochs * run.steps_per_epoch
    with Progress(ctx.desc, total, "steps", enabled=ctx.progress, main=ctx.dist.is_main,
                  initial=run.global_step) as progress:  # fmt: skip
        while run.epoch < ctx.spec.epochs:
            t0 = time.perf_counter()
            _train_epoch(run, ctx, progress)
            _end_epoch(run, ctx, time.perf_counter() - t0)
    return run.history


def _set_up(module: TrainModule, ctx: FitContext) -> _Run:
    """Place the module and regularizers on the device; build sampler, optimizer and schedule."""
    spec, device = ctx.spec, ctx.device
    regularizers = list(ctx.regularizers or [])
    _place(module, regularizers, ctx)
    batches, local_batch = _epoch_batches(ctx)
    steps_per_epoch = batches.steps_per_epoch
    optimizer = torch.optim.SGD(
        _param_groups(module, regularizers, spec.optimizer),
        lr=spec.optimizer.lr_backbone,
        momentum=spec.optimizer.momentum,
        weight_decay=spec.optimizer.weight_decay,
        nesterov=spec.optimizer.nesterov and spec.optimizer.momentum > 0,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_multiplier(spec.schedule, spec.epochs, steps_per_epoch)
    )
    return _Run(
        module=module,
        train_module=module,
        optimizer=optimizer,
        scheduler=scheduler,
        regularizers=regularizers,
        precision=runtime.precision(device, spec.amp),
        batches=batches,
        local_batch=local_batch,
        steps_per_epoch=steps_per_epoch,
        sums=_zero_sums(device),
        first_bad=_no_bad_step(device),
        history=[],
    )


def _place(module: TrainModule, regularizers: list[Regularizer], ctx: FitContext) -> None:
    """The module and regularizers on the device (SyncBatchNorm, channels-last where asked);
    the regularizers attached to the model's layers."""
    spec, device, info = ctx.spec, ctx.device, ctx.dist
    use_cuda = device.type == "cuda"
    module.to(device)
    if spec.sync_batchnorm and info.enabled:
        if use_cuda:
            # In place below the root (the SyncBatchNorm layers reuse the same parameters), so
            # ``model`` and the regularizers' layer references stay valid; state_dict keys match
            # BatchNorm's, so saved models load anywhere.
            nn.SyncBatchNorm.convert_sync_batchnorm(module)
        elif info.is_main:
            log.warning("%s: train.sync_batchnorm needs CUDA; BatchNorm stays per rank", ctx.desc)
    if use_cuda and spec.channels_last:
        module.to(memory_format=torch.channels_last)
    if ctx.example_inputs is not None:
        for r in regularizers:
            r.attach(module.model, ctx.example_inputs.to(device))
    for r in regularizers:
        r.to(device)


def _epoch_batches(ctx: FitContext) -> tuple[EpochBatches, int]:
    """This rank's batches of every epoch and its share of the global batch size."""
    spec, info = ctx.spec, ctx.dist
    n = len(ctx.train_set)
    if spec.batch_size % info.world:
        raise TrainingError(
            f"train.batch_size {spec.batch_size} is the global batch and must divide evenly over "
            f"{info.world} processes (train.gpus)"
        )
    local_batch = spec.batch_size // info.world
    batches = EpochBatches(
        ctx.train_set,
        local_batch,
        seed=spec.seed,
        rank=info.rank,
        world=info.world,
        num_workers=ctx.num_workers,
        pin_memory=ctx.device.type == "cuda",
    )
    if batches.steps_per_epoch == 0:
        raise TrainingError(
            f"train.batch_size {spec.batch_size} is larger than the training set ({n} samples)"
        )
    return batches, local_batch


def _resume(run: _Run, ctx: FitContext) -> bool:
    """Load the last checkpoint if it belongs to this run; True when that run had finished.

    Rank 0 reads the checkpoint and every rank resumes from its copy: all ranks take the same
    decision (resume or start fresh) and state, with or without a shared filesystem.
    """
    info = ctx.dist
    state = broadcast_object(ctx.checkpoints.load() if info.is_main else None, info)
    if state is not None:
        run.module.load_state_dict(state["module"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        if run.precision.scaler is not None and state.get("scaler"):
            run.precision.scaler.load_state_dict(state["scaler"])
        for r, rs in zip(run.regularizers, state["regularizers"], strict=True):
            r.load_state_dict(rs)
        run.epoch, run.step_in_epoch, run.global_step = (
            state["epoch"],
            state["step_in_epoch"],
            state["global_step"],
        )
        run.history = state["history"]
        layout = state.get("data_layout")
        if info.is_main and run.step_in_epoch and layout not in (None, run.batches.layout):
            log.warning(
                "%s: resuming mid-epoch with a different data layout (%s, was %s): this "
                "epoch's remaining batches are not exactly the interrupted run's",
                ctx.desc,
                run.batches.layout,
                layout,
            )
        # Checkpointed sums are over all ranks; rank 0 carries them, so the epoch total is right.
        if info.is_main:
            run.sums = torch.tensor(
                [float(state["running"].get(k, 0.0)) for k in SUMS],
                dtype=torch.float64,
                device=ctx.device,
            )
        runtime.set_rng_state(state["rng"])
        if info.is_main:
            log.info(
                "%s: resumed from %s at epoch %d step %d",
                ctx.desc,
                ctx.checkpoints.path,
                run.epoch,
                run.step_in_epoch,
            )
        if state.get("done"):
            # DVC deletes a stage's outputs before re-running it (e.g. after a code change):
            # a finished run must still leave its history files behind.
            if info.is_main:
                write_history(run.history, ctx.metrics_dir)
            return True
    broadcast_buffers(run.module, info)
    for r in run.regularizers:
        broadcast_buffers(r, info)
    return False


def _wrap_for_ddp(run: _Run, ctx: FitContext) -> None:
    if ctx.dist.enabled:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        run.train_module = nn.parallel.DistributedDataParallel(run.module, device_ids=ids)


def _train_epoch(run: _Run, ctx: FitContext, progress: Progress) -> None:
    """The rest of epoch ``run.epoch`` from ``run.step_in_epoch``, checkpointing on the way."""
    spec = ctx.spec
    run.module.train()
    active = [r for r in run.regularizers if r.active(run.epoch)]
    loader = run.batches.epoch(run.epoch, skip_steps=run.step_in_epoch)
    epoch = f"{run.epoch + 1}/{spec.epochs}"
    for inputs, targets in loader:
        if run.step_in_epoch >= run.steps_per_epoch:
            break
        _train_step(run, ctx, inputs, targets, active)
        fields = {"epoch": epoch, "step": f"{run.step_in_epoch}/{run.steps_per_epoch}"}
        if progress.active and run.global_step % LOG_EVERY == 0:
            sums = run.sums.tolist()  # one host read per logging interval
            fields["loss"] = sums[0] / max(sums[4], 1)
        progress.update(run.global_step, **fields)
        if run.global_step % spec.checkpoint_every == 0 and run.step_in_epoch < run.steps_per_epoch:
            _checkpoint(run, ctx)


def _train_step(run: _Run, ctx: FitContext, inputs, targets, active: list[Regularizer]) -> None:
    """One optimizer step. Nothing here waits for the device: sums and bad-step records stay on
    it, to be read at the next checkpoint boundary or epoch end."""
    device, spec = ctx.device, ctx.spec
    inputs = inputs.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    if device.type == "cuda" and spec.channels_last and inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    with run.precision.autocast():
        out = run.train_module(inputs, targets)
    step_ctx = StepContext(
        step=run.global_step,
        epoch=run.epoch,
        features=out.features.float(),
        logits=None if out.logits is None else out.logits.float(),
        inputs=inputs,
    )
    penalty = sum((r.penalty(step_ctx) for r in active), torch.zeros((), device=device))
    task = out.loss.float()
    loss = task + penalty
    run.optimizer.zero_grad(set_to_none=True)
    scaler = run.precision.scaler
    (loss if scaler is None else scaler.scale(loss)).backward()
    for r in run.regularizers:  # their own parameters are outside DDP: average by hand
        for p in r.parameters():
            if p.grad is not None:
                p.grad = all_reduce_mean(p.grad, ctx.dist)
    if scaler is None:
        run.optimizer.step()
    else:
        scaler.step(run.optimizer)  # skipped (and the scale lowered) if gradients overflowed
        scaler.update()
    run.scheduler.step()
    for r in active:
        r.after_step(step_ctx)
    _accumulate(run, inputs.shape[0], loss.detach(), task.detach(), penalty.detach(), out.correct)
    run.step_in_epoch += 1
    run.global_step += 1


def _accumulate(run: _Run, batch: int, loss, task, penalty, correct) -> None:
    """Add one step to the device-side sums and remember the first non-finite step (no sync)."""
    bad = ~torch.isfinite(loss)
    if correct is None:
        correct = torch.zeros((), device=loss.device)
    step = torch.stack(
        [
            loss * batch,
            task * batch,
            penalty * batch,
            correct.to(loss.dtype),
            torch.full_like(loss, batch),
            bad.to(loss.dtype),
        ]
    )
    run.sums += step.double()
    record = torch.stack([torch.full_like(task, run.step_in_epoch), task, penalty]).double()
    first = bad & (run.first_bad[0] < 0)
    run.first_bad.copy_(torch.where(first, record, run.first_bad))


def _totals(run: _Run, ctx: FitContext) -> dict:
    """The running sums over all ranks, read to the host (a collective under DDP); stops the run
    when any step since the last check had a non-finite loss, before anything is written."""
    sums = run.sums
    if ctx.dist.enabled:
        sums = all_reduce_mean(sums, ctx.dist) * ctx.dist.world
    totals = dict(zip(SUMS, sums.tolist(), strict=True))
    if totals["nonfinite"]:
        step, task, penalty = run.first_bad.tolist()  # this rank's first (NaN if on another)
        where = f"epoch {run.epoch + 1}" + (f" step {int(step) + 1}" if step >= 0 else "")
        raise TrainingError(
            f"{ctx.desc}: non-finite loss ({task:.4g} task + {penalty:.4g} penalty) at {where}; "
            f"stopped, last good checkpoint kept at "
            f"{ctx.checkpoints.path} (lower the learning rate or strength)"
        )
    totals["correct"], totals["seen"] = round(totals["correct"]), round(totals["seen"])
    return totals


def _checkpoint(run: _Run, ctx: FitContext, done: bool = False) -> None:
    totals = _totals(run, ctx)  # every rank takes part; raises instead of saving a bad state
    if not ctx.dist.is_main:
        return
    scaler = run.precision.scaler
    ctx.checkpoints.save(
        {
            "module": run.module.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": None if scaler is None else scaler.state_dict(),
            "regularizers": [r.state_dict() for r in run.regularizers],
            "epoch": run.epoch,
            "step_in_epoch": run.step_in_epoch,
            "global_step": run.global_step,
            "history": run.history,
            "running": totals,
            "rng": runtime.rng_state(),
            "data_layout": run.batches.layout,
            "done": done,
        }
    )


def _end_epoch(run: _Run, ctx: FitContext, seconds: float) -> None:
    """Evaluate (every rank, on its share), diagnose and log (rank 0), then checkpoint."""
    spec, info = ctx.spec, ctx.dist
    row = _epoch_row(run, _totals(run, ctx))
    model = run.module.model
    model.eval()
    last = run.epoch + 1 == spec.epochs
    if ctx.evaluate is not None and ((run.epoch + 1) % spec.eval_every == 0 or last):
        row.update(ctx.evaluate(model))
    if info.is_main:
        if (run.epoch + 1) % spec.diagnostics_every == 0 or last:
            if ctx.diagnose is not None:
                row.update(ctx.diagnose(model))
            for r in run.regularizers:
                row.update({f"{r.name}/{k}": float(v) for k, v in r.diagnostics().items()})
        run.history.append(row)
        write_history(run.history, ctx.metrics_dir)
        log.info("%s %s (%.1f s)", ctx.desc, _describe(row), seconds)
    run.epoch += 1
    run.step_in_epoch = 0
    run.sums = _zero_sums(ctx.device)
    _checkpoint(run, ctx, done=run.epoch >= spec.epochs)


def _zero_sums(device: torch.device) -> torch.Tensor:
    return torch.zeros(len(SUMS), dtype=torch.float64, device=device)


def _no_bad_step(device: torch.device) -> torch.Tensor:
    return torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64, device=device)


def _epoch_row(run: _Run, totals: dict) -> dict:
    """One history row: deterministic values only (timings go to the log, not the history)."""
    seen = max(totals["seen"], 1.0)
    row = {
        "epoch": run.epoch + 1,
        "lr": run.scheduler.get_last_lr()[0],
        "train_loss": totals["loss"] / seen,
        "task_loss": totals["task"] / seen,
        "penalty": totals["penalty"] / seen,
    }
    if totals["correct"]:
        row["train_acc"] = totals["correct"] / seen
    return row


def _describe(row: dict) -> str:
    keys = [
        k
        for k in ("epoch", "train_loss", "penalty", "train_acc", "test_acc", "knn_acc")
        if k in row
    ]
    return " ".join(
        f"{k}={row[k]:.4f}"
        if isinstance(row[k], float) and not math.isnan(row[k])
        else f"{k}={row[k]}"
        for k in keys
    )
