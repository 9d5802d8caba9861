"""Atomic checkpoints tied to a fingerprint of the run's parameters and inputs.

A checkpoint is resumed only when its fingerprint matches the current run, so a stage re-run
after a parameter change starts fresh instead of continuing a different experiment.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from pipeline.core.io import atomic_torch_save

log = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class CheckpointStore:
    """``<dir>/last.pt`` written atomically; ``load`` returns None unless it belongs to this run."""

    def __init__(self, directory: str | Path, run_fingerprint: str):
        self.dir = Path(directory)
        self.path = self.dir / "last.pt"
        self.fingerprint = run_fingerprint

    def save(self, state: dict) -> None:
        atomic_torch_save({"fingerprint": self.fingerprint, **state}, self.path)

    def load(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as exc:  # a truncated file cannot happen with atomic writes, but be safe
            log.warning("ignoring unreadable checkpoint %s (%s)", self.path, exc)
            return None
        if state.get("fingerprint") != self.fingerprint:
            log.info("checkpoint %s is from other parameters or inputs; starting fresh", self.path)
            return None
        return state
