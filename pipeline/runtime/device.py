"""Device choice, seeding and mixed precision: one place decides, no ``.cuda()`` literals elsewhere."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.core.errors import ConfigError


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` means CUDA when present; under torchrun each rank takes its LOCAL_RANK GPU."""
    env = os.environ.get("PIPELINE_DEVICE")
    requested = env or requested
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "run.device: 'cuda' requested but no CUDA device is available (use auto or cpu)"
        )
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if requested not in ("auto", "cuda"):
        raise ConfigError(f"run.device: {requested!r} is not one of auto, cpu, cuda")
    return torch.device("cpu")


def cpu_share() -> int:
    """CPU cores this stage may use: ``PIPELINE_CPUS`` (the share a scheduler running several
    stages at once allots each), else every core this process may run on."""
    allotted = os.environ.get("PIPELINE_CPUS", "")
    if allotted.isdigit() and int(allotted) > 0:
        return int(allotted)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: an autocast dtype (None = full precision) and, for float16
    only, a loss scaler (float16's narrow exponent underflows small gradients; bfloat16 does not).
    """

    device_type: str
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def precision(device: torch.device, enabled: bool) -> Precision:
    """bf16 autocast on CUDA, float16 + GradScaler on GPUs without bf16; CPU stays exact fp32."""
    if not (enabled and device.type == "cuda"):
        return Precision(device.type)
    if torch.cuda.is_bf16_supported():
        return Precision("cuda", torch.bfloat16)
    return Precision("cuda", torch.float16, torch.amp.GradScaler("cuda"))


def autocast(device: torch.device, enabled: bool):
    """The autocast context of :func:`precision` (inference needs no scaler)."""
    return precision(device, enabled).autocast()


def rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
