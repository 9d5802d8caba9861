"""Where every stage writes: one place, so stages, ``dvc.yaml`` and the tests agree.

``data/`` is the user's raw-data root (tracked by ``data.dvc``); everything generated lives
under ``artifacts/`` (models, prepared shards, checkpoints), ``metrics/`` and ``reports/``.
"""

from __future__ import annotations

from pathlib import Path

RAW = Path("data")  # the raw-data root, versioned by data.dvc
ARTIFACTS = Path("artifacts")
METRICS = Path("metrics")
REPORTS = Path("reports")


def prepared(name: str) -> Path:
    return ARTIFACTS / "prepared" / name


def backbone_dir(name: str) -> Path:
    """Supervised and SSL backbones share one namespace, so finetuning treats them alike."""
    return ARTIFACTS / "backbones" / name


def backbone_model(name: str) -> Path:
    return backbone_dir(name) / "model.pt"


def checkpoints(stage: str, run_id: str) -> Path:
    return ARTIFACTS / "checkpoints" / stage / run_id


def stage_metrics(stage: str, run_id: str) -> Path:
    return METRICS / stage / run_id


def finetune_id(target: str, backbone: str, regularizer: str, seed: int) -> str:
    return f"{target}/{backbone}/{regularizer}/seed{seed}"


def finetune_model(run_id: str) -> Path:
    return ARTIFACTS / "finetune" / run_id / "model.pt"


def readout_id(target: str, backbone: str) -> str:
    return f"{target}/{backbone}"


def readout_model(run_id: str) -> Path:
    return ARTIFACTS / "readout" / run_id / "model.pt"


def attack_metrics(kind: str, run_id: str) -> Path:
    return METRICS / "attack" / kind / run_id


def run_dir(instance: str) -> Path:
    """A stage instance's private working folder (its lock); never a DVC output."""
    return ARTIFACTS / "runs" / instance
