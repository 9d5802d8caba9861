"""A label-only view of a classifier: the only thing a hard-label attack may ask for.

Wrapping the model keeps the attack honest (it never sees logits), keeps memory bounded (inputs
are evaluated in chunks) and makes query counting a property of the oracle rather than of
whoever happens to call it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

#: Oracle precisions and their autocast dtypes (``None``: plain fp32, no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


class UnsupportedPrecision(RuntimeError):
    """The model cannot run at the requested oracle precision on this device."""


class LabelOracle:
    """Predicted labels of ``model`` for pixel-space inputs in ``[0, 1]``, counted per sample.

    ``model`` is a torch module (or any callable) returning logits ``(N, C)`` or labels ``(N,)``;
    ``mean``/``std`` (per channel) are applied inside, so attacks work in pixel space and box
    constraints mean what they say. Calls run under ``torch.no_grad`` in chunks of
    ``chunk_size`` rows. ``precision`` is ``fp32`` (plain), ``bf16`` or ``fp16`` (autocast on
    the oracle's device, CPU included); a model that cannot run at that precision raises
    :class:`UnsupportedPrecision` on the first call. ``channels_last`` lays 4-D inputs out
    channels-last (faster convolutions on CUDA).

    Counting: every row is one query. ``total_queries`` counts them all; when the caller passes
    ``owners`` (the sample index of each row), ``per_sample`` counts them per sample as well.
    Attacks in :mod:`pipeline.attacks` pass ``owners`` to any predictor whose ``takes_owners``
    attribute is true, so a :class:`LabelOracle` audits the attack's own bookkeeping.
    """

    takes_owners = True

    def __init__(
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        mean: Sequence[float] | torch.Tensor | None = None,
        std: Sequence[float] | torch.Tensor | None = None,
        *,
        chunk_size: int = 512,
        device: torch.device | str | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
    ):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.model = model
        self.chunk_size = int(chunk_size)
        self.device = torch.device(device) if device is not None else _module_device(model)
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
        self.precision = precision
        self.channels_last = channels_last
        self._mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        self._std = None if std is None else torch.as_tensor(std, dtype=torch.float32)
        if self._std is not None and bool((self._std <= 0).any()):
            raise ValueError("std must be positive")
        self.total_queries = 0
        self.per_sample = torch.zeros(0, dtype=torch.long)

    def reset_counts(self) -> None:
        """Forget all counted queries (for example between two attacks on the same model)."""
        self.total_queries = 0
        self.per_sample = torch.zeros(0, dtype=torch.long)

    def counts(self, num_samples: int) -> torch.Tensor:
        """Queries per sample index ``0 .. num_samples - 1`` (zeros for samples never seen)."""
        out = torch.zeros(num_samples, dtype=torch.long)
        n = min(num_samples, self.per_sample.numel())
        out[:n] = self.per_sample[:n]
        return out

    def __call__(self, x: torch.Tensor, owners: torch.Tensor | None = None) -> torch.Tensor:
        """Labels of the rows of ``x`` (on ``x``'s device); ``owners`` attributes rows to samples."""
        if owners is not None:
            if owners.shape != (x.shape[0],):
                raise ValueError(
                    f"owners must have shape ({x.shape[0]},), got {tuple(owners.shape)}"
                )
            self._count(owners)
        self.total_queries += x.shape[0]
        if x.shape[0] == 0:
            return torch.zeros(0, dtype=torch.long, device=x.device)
        labels = [self._predict_chunk(chunk) for chunk in x.split(self.chunk_size)]
        return torch.cat(labels).to(x.device)

    def _count(self, owners: torch.Tensor) -> None:
        owners = owners.detach().to("cpu", torch.long)
        if owners.numel() == 0:
            return
        if int(owners.min()) < 0:
            raise ValueError("owners must be non-negative sample indices")
        size = int(owners.max()) + 1
        if size > self.per_sample.numel():
            grown = torch.zeros(size, dtype=torch.long)
            grown[: self.per_sample.numel()] = self.per_sample
            self.per_sample = grown
        self.per_sample.index_add_(0, owners, torch.ones_like(owners))

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self._mean is None:
            return x
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = self._mean.to(x.device).view(shape)
        std = self._std.to(x.device).view(shape)
        return (x - mean) / std

    @torch.no_grad()
    def _predict_chunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self._normalize(x.to(self.device, torch.float32))
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = PRECISIONS[self.precision]
        ctx = (
            contextlib.nullcontext()
            if dtype is None
            else torch.autocast(self.device.type, dtype=dtype)
        )
        try:
            with ctx:
                out = self.model(x)
        except RuntimeError as e:
            if dtype is None:
                raise
            raise UnsupportedPrecision(
                f"{self.precision} on {self.device.type}: {str(e).splitlines()[0]}"
            ) from e
        out = torch.as_tensor(out)
        if out.dim() == 2:
            return out.argmax(dim=1)
        if out.dim() == 1 and not out.is_floating_point():
            return out.long()
        raise ValueError(
            f"model must return logits (N, C) or integer labels (N,), got shape {tuple(out.shape)}"
        )


def _module_device(model: object) -> torch.device:
    """The device of a module's first parameter; CPU for parameter-less modules and callables."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")
