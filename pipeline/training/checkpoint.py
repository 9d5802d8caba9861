"""Atomic checkpoints tied to a fingerprint of the run's parameters and inputs.

A checkpoint is resumed only when its fingerprint matches the current run, so a stage re-run
after a parameter change starts fresh instead of continuing a different experiment. A checkpoint
that cannot be read is an error, never a silent restart: at scale that would throw away days of
training without anyone noticing. Checkpoints hold data only (tensors, numbers, strings,
containers) and are read with ``weights_only=True``, so a planted file cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pipeline.core.errors import ArtifactError
from pipeline.models.torch_files import atomic_torch_save, load_torch_file

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

    NAME = "last.pt"

    def __init__(self, directory: str | Path, run_fingerprint: str):
        self.dir = Path(directory)
        self.path = self.dir / self.NAME
        self.fingerprint = run_fingerprint

    def save(self, state: dict) -> None:
        atomic_torch_save({"fingerprint": self.fingerprint, **state}, self.path)

    def load(self) -> dict | None:
        """This run's saved state; None when there is none or it belongs to another run
        (that file is deleted, so it is never mistaken for this run's later).

        Raises ArtifactError when the file cannot be read: whose run it is is then unknown.
        """
        if not self.path.is_file():
            return None
        try:
            state = load_torch_file(self.path, "checkpoint")
        except ArtifactError as exc:
            raise ArtifactError(f"{exc}; delete it to start this run over") from None
        if not isinstance(state, dict) or not isinstance(state.get("fingerprint"), str):
            raise ArtifactError(
                f"checkpoint {self.path} is not a pipeline checkpoint (no fingerprint); "
                "delete it to start this run over"
            )
        if state["fingerprint"] != self.fingerprint:
            log.warning(
                "discarding checkpoint %s: it is from another run (fingerprint %s, this run %s)",
                self.path,
                state["fingerprint"],
                self.fingerprint,
            )
            self.path.unlink()
            return None
        return state
