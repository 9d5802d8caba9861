"""Device choice, seeding and mixed precision: one place decides, no ``.cuda()`` literals elsewhere."""

from __future__ import annotations

import contextlib
import os
import random

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA (no loss scaling needed); a no-op on CPU so CPU runs stay exact."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()


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
