"""The one training loop: supervised pretraining, finetuning and SSL all run through :func:`fit`.

What differs between them is the :class:`TrainModule` (how a batch becomes a loss) and the
evaluation callback. The loop owns optimization, regularizer penalties, mixed precision,
checkpoint/resume, NaN handling, progress and per-epoch metrics.
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
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pipeline.core.errors import TrainingError
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
from pipeline.training.sampling import EpochSampler
from pipeline.training.schedule import lr_multiplier

log = logging.getLogger(__name__)


@dataclass
class StepOutput:
    loss: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor | None = None
    correct: int = 0  # correctly classified samples in the batch (supervised only)


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
        features = self.model.forward_features(inputs)
        logits = self.model.head(features)
        loss = self.criterion(logits, targets)
        correct = int((logits.argmax(1) == targets).sum())
        return StepOutput(loss=loss, features=features, logits=logits, correct=correct)


@dataclass
class FitContext:
    """Everything :func:`fit` needs besides the module; built by a stage."""

    spec: object  # pipeline.core.config.TrainSpec
    train_set: Dataset  # yields (inputs, targets); has set_epoch(epoch)
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


def _loader(ctx: FitContext, sampler: EpochSampler, batch: int) -> DataLoader:
    return DataLoader(
        ctx.train_set,
        batch_size=batch,
        sampler=sampler,
        num_workers=ctx.num_workers,
        drop_last=True,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=False,  # workers are re-made per epoch so they see set_epoch()
    )


def fit(module: TrainModule, ctx: FitContext) -> list[dict]:
    """Train to ``spec.epochs``, resuming from the last checkpoint; returns the per-epoch history."""
    spec, device, info = ctx.spec, ctx.device, ctx.dist
    regularizers = list(ctx.regularizers or [])
    model = module.model
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
            r.attach(model, ctx.example_inputs.to(device))
    for r in regularizers:
        r.to(device)

    n = len(ctx.train_set)
    if spec.batch_size % info.world:
        raise TrainingError(
            f"train.batch_size {spec.batch_size} is the global batch and must divide evenly over "
            f"{info.world} processes (train.gpus)"
        )
    local_batch = spec.batch_size // info.world
    sampler = EpochSampler(n, seed=spec.seed, shuffle=True, rank=info.rank, world=info.world)
    steps_per_epoch = sampler.per_rank // local_batch
    if steps_per_epoch == 0:
        raise TrainingError(
            f"train.batch_size {spec.batch_size} is larger than the training set ({n} samples)"
        )

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

    history: list[dict] = []
    epoch, step_in_epoch, global_step = 0, 0, 0
    running = _zero_running()
    # Rank 0 reads the checkpoint and every rank resumes from its copy: all ranks take the same
    # decision (resume or start fresh) and state, with or without a shared filesystem.
    state = broadcast_object(ctx.checkpoints.load() if info.is_main else None, info)
    if state is not None:
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        for r, rs in zip(regularizers, state["regularizers"], strict=True):
            r.load_state_dict(rs)
        epoch, step_in_epoch, global_step = (
            state["epoch"],
            state["step_in_epoch"],
            state["global_step"],
        )
        history = state["history"]
        # Checkpointed sums are over all ranks; rank 0 carries them, so the epoch total is right.
        running = state["running"] if info.is_main else _zero_running()
        runtime.set_rng_state(state["rng"])
        if info.is_main:
            log.info(
                "%s: resumed from %s at epoch %d step %d",
                ctx.desc,
                ctx.checkpoints.path,
                epoch,
                step_in_epoch,
            )
        if state.get("done"):
            # DVC deletes a stage's outputs before re-running it (e.g. after a code change):
            # a finished run must still leave its history files behind.
            if info.is_main:
                write_history(history, ctx.metrics_dir)
            return history
    broadcast_buffers(module, info)
    for r in regularizers:
        broadcast_buffers(r, info)

    train_module: nn.Module = module
    if info.enabled:
        ids = [device.index] if use_cuda else None
        train_module = nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def checkpoint(done: bool = False) -> None:
        totals = _reduce_running(running, info)  # a collective: every rank takes part
        if not info.is_main:
            return
        ctx.checkpoints.save(
            {
                "module": module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "regularizers": [r.state_dict() for r in regularizers],
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "global_step": global_step,
                "history": history,
                "running": totals,
                "rng": runtime.rng_state(),
                "done": done,
            }
        )

    while epoch < spec.epochs:
        t0 = time.perf_counter()
        sampler.set_epoch(epoch, skip=step_in_epoch * local_batch)
        if hasattr(ctx.train_set, "set_epoch"):
            ctx.train_set.set_epoch(epoch)
        module.train()
        active = [r for r in regularizers if r.active(epoch)]
        bar = tqdm(
            _loader(ctx, sampler, local_batch),
            total=steps_per_epoch,
            initial=step_in_epoch,
            desc=f"{ctx.desc} epoch {epoch + 1}/{spec.epochs}",
            disable=not (ctx.progress and info.is_main),
            leave=False,
            dynamic_ncols=True,
        )
        for inputs, targets in bar:
            if step_in_epoch >= steps_per_epoch:
                break
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if use_cuda and spec.channels_last and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with runtime.autocast(device, spec.amp):
                out = train_module(inputs, targets)
            step_ctx = StepContext(
                step=global_step,
                epoch=epoch,
                features=out.features.float(),
                logits=None if out.logits is None else out.logits.float(),
                inputs=inputs,
            )
            penalty = sum((r.penalty(step_ctx) for r in active), torch.zeros((), device=device))
            loss = out.loss.float() + penalty
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"{ctx.desc}: non-finite loss ({float(out.loss.detach()):.4g} task + {float(penalty.detach()):.4g} "
                    f"penalty) at epoch {epoch + 1} step {step_in_epoch + 1}; stopped, last good "
                    f"checkpoint kept at {ctx.checkpoints.path} (lower the learning rate or strength)"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for r in regularizers:  # their own parameters are outside DDP: average by hand
                for p in r.parameters():
                    if p.grad is not None:
                        p.grad = all_reduce_mean(p.grad, info)
            optimizer.step()
            scheduler.step()
            for r in active:
                r.after_step(step_ctx)

            bs = inputs.shape[0]
            running["loss"] += float(loss.detach()) * bs
            running["task"] += float(out.loss.detach()) * bs
            running["penalty"] += float(penalty.detach()) * bs
            running["correct"] += out.correct
            running["seen"] += bs
            step_in_epoch += 1
            global_step += 1
            bar.set_postfix(loss=f"{running['loss'] / running['seen']:.4f}", refresh=False)
            if global_step % spec.checkpoint_every == 0 and step_in_epoch < steps_per_epoch:
                checkpoint()
        bar.close()

        row = _epoch_row(epoch, running, scheduler, info)
        seconds = time.perf_counter() - t0
        if info.is_main:
            module.eval()
            if ctx.evaluate is not None and (
                (epoch + 1) % spec.eval_every == 0 or epoch + 1 == spec.epochs
            ):
                row.update(ctx.evaluate(model))
            if (epoch + 1) % spec.diagnostics_every == 0 or epoch + 1 == spec.epochs:
                if ctx.diagnose is not None:
                    row.update(ctx.diagnose(model))
                for r in regularizers:
                    row.update({f"{r.name}/{k}": float(v) for k, v in r.diagnostics().items()})
            history.append(row)
            write_history(history, ctx.metrics_dir)
            log.info("%s %s (%.1f s)", ctx.desc, _describe(row), seconds)
        epoch += 1
        step_in_epoch = 0
        running = _zero_running()
        checkpoint(done=epoch >= spec.epochs)
    return history


def _zero_running() -> dict:
    return {"loss": 0.0, "task": 0.0, "penalty": 0.0, "correct": 0, "seen": 0}


def _reduce_running(running: dict, info: DistInfo) -> dict:
    """The running sums added over all ranks (every rank must call this)."""
    if not info.enabled:
        return dict(running)
    keys = list(_zero_running())
    totals = torch.tensor([float(running[k]) for k in keys], dtype=torch.float64)
    totals = all_reduce_mean(totals, info) * info.world
    out = dict(zip(keys, totals.tolist()))
    out["correct"], out["seen"] = round(out["correct"]), round(out["seen"])
    return out


def _epoch_row(epoch: int, running: dict, scheduler, info: DistInfo) -> dict:
    """One history row: deterministic values only (timings go to the log, not to the history)."""
    totals = _reduce_running(running, info)
    loss, task, penalty, correct, seen = (totals[k] for k in _zero_running())
    seen = max(seen, 1.0)
    row = {
        "epoch": epoch + 1,
        "lr": scheduler.get_last_lr()[0],
        "train_loss": loss / seen,
        "task_loss": task / seen,
        "penalty": penalty / seen,
    }
    if correct:
        row["train_acc"] = correct / seen
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
