"""The contract between the training loop and every regularizer.

The loop does, per optimizer step::

    ctx = StepContext(step=global_step, epoch=epoch, features=feats, logits=logits, inputs=x)
    loss = task_loss + sum(r.penalty(ctx) for r in regularizers if r.active(epoch))
    loss.backward(); optimizer.step(); [r.after_step(ctx) for r in regularizers]

so a penalty is an ordinary term of the loss: momentum, weight decay and the learning-rate
schedule apply to it, and no regularizer ever writes to model weights directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class StepContext:
    """What a regularizer may look at in one training step."""

    step: int  # optimizer steps taken before this one (0-based, global across epochs)
    epoch: int  # 0-based epoch
    features: torch.Tensor | None = None  # backbone output Φ(x), shape (batch, d)
    logits: torch.Tensor | None = None
    inputs: torch.Tensor | None = None  # pixel space [0, 1]
    extras: dict = field(default_factory=dict)


class Regularizer(nn.Module):
    """Base class. Subclasses implement :meth:`penalty` and may override the hooks.

    Being an ``nn.Module`` lets persistent state (power-iteration vectors, the LR layer's
    ``W`` and ``b``) live in ``state_dict`` so checkpoints resume it exactly, and lets the loop
    move it to the training device with ``.to(device)``. Trainable state (LR's ``W``, ``b``) is
    returned by :meth:`parameters` and goes into the optimizer with the model's parameters.
    """

    name: str = "regularizer"

    def __init__(self, strength: float, burn_in: int = 0):
        super().__init__()
        self.strength = float(strength)
        self.burn_in = int(burn_in)

    def active(self, epoch: int) -> bool:
        """Switched on from epoch ``burn_in`` (0-based) onwards; before it training is plain."""
        return epoch >= self.burn_in

    def attach(self, model: nn.Module, example_inputs: torch.Tensor) -> None:
        """Called once before training, after the head is final, with a batch at the real resolution.

        Spectral regularizers record each conv's input size here; LR registers its hooks.
        """

    def penalty(self, ctx: StepContext) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def after_step(self, ctx: StepContext) -> None:
        """Called after ``optimizer.step()`` (for example LR's periodic rank projection)."""

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        """Exact per-layer quantities for logging (e.g. ``sigma_max/<layer>``), cheap enough per epoch."""
        return {}
