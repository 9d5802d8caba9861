"""Where every stage writes: one place, so stages, ``dvc.yaml`` and the tests agree.

``data/`` is the user's raw-data root (tracked by ``data.dvc``); everything generated lives
under ``artifacts/`` (models, prepared shards, checkpoints), ``metrics/`` and ``reports/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.core.errors import ConfigError

RAW = Path("data")  # the raw-data root, versioned by data.dvc
ARTIFACTS = Path("artifacts")
METRICS = Path("metrics")
REPORTS = Path("reports")


def prepared(name: str) -> Path:
    return ARTIFACTS / "prepared" / name


def backbone_id(variant: str, seed: int | str) -> str:
    """One pretraining run: a variant and its pretraining seed (the unit of replication).

    Supervised and SSL backbones share one namespace, so finetuning treats them alike.
    """
    return f"{variant}/seed{seed}"


def backbone_model(run_id: str) -> Path:
    return ARTIFACTS / "backbones" / run_id / "model.pt"


# A folder every worker of a pool can read and write (NFS, a shared disk), so a stage killed on
# one machine resumes on another. An environment variable, not a parameter: where a machine
# mounts shared storage changes no result, so it must not change DVC's params or a fingerprint.
CHECKPOINT_DIR_ENV = "PIPELINE_CHECKPOINT_DIR"


def checkpoints(stage: str, run_id: str, fingerprint: str | None = None) -> Path:
    """``artifacts/checkpoints/<stage>/<run_id>``, or under ``$PIPELINE_CHECKPOINT_DIR``.

    In a shared folder the run's fingerprint is part of the path: experiments that differ in a
    parameter or an input never share (or delete) each other's checkpoints there.
    """
    shared = os.environ.get(CHECKPOINT_DIR_ENV)
    if not shared:
        return ARTIFACTS / "checkpoints" / stage / run_id
    base = Path(shared).expanduser() / stage / run_id
    return base / fingerprint[:16] if fingerprint else base


def stage_metrics(stage: str, run_id: str) -> Path:
    return METRICS / stage / run_id


def finetune_id(
    target: str, backbone: str, backbone_seed: int | str, regularizer: str, seed: int | str
) -> str:
    """A finetuning run: nested in its backbone's pretraining run (``backbone_seed``)."""
    return f"{target}/{backbone}/backbone_seed{backbone_seed}/{regularizer}/seed{seed}"


def finetune_model(run_id: str) -> Path:
    return ARTIFACTS / "finetune" / run_id / "model.pt"


def readout_id(target: str, backbone: str, backbone_seed: int | str) -> str:
    return f"{target}/{backbone}/backbone_seed{backbone_seed}"


def readout_model(run_id: str) -> Path:
    return ARTIFACTS / "readout" / run_id / "model.pt"


def attack_metrics(kind: str, run_id: str) -> Path:
    return METRICS / "attack" / kind / run_id


def run_dir(instance: str) -> Path:
    """A stage instance's private working folder (its lock); never a DVC output."""
    return ARTIFACTS / "runs" / instance


def check_inside(path: str | Path, what: str, extra_roots: tuple[str | Path, ...] = ()) -> Path:
    """``path`` if it stays inside the workspace (the current directory) or ``extra_roots``.

    Checked before anything is created, so no name or template can make a stage write
    elsewhere. The check is lexical (``..`` and absolute paths): the workspace's own symlinks
    (``data/`` or ``artifacts/`` on a larger disk) are the user's choice, not an escape.
    """
    full = os.path.normpath(os.path.join(os.getcwd(), os.fspath(path)))
    roots = [os.getcwd(), *(os.path.abspath(os.path.expanduser(r)) for r in extra_roots)]
    for root in roots:
        root = os.path.normpath(root)
        if os.path.commonpath([root, full]) == root:
            return Path(path)
    raise ConfigError(f"{what} {os.fspath(path)!r} lies outside the workspace {os.getcwd()}")
