"""What a stage instance reads and writes, in the vocabulary of ``dvc.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field

# Code every stage runs: the CLI, the schema and the shared glue.
BASE_CODE = [
    "pipeline/__main__.py",
    "pipeline/config.py",
    "pipeline/errors.py",
    "pipeline/io.py",
    "pipeline/paths.py",
    "pipeline/stages/contract.py",
]
# Stages that train or evaluate models also run the shared glue and the training package.
MODEL_CODE = ["pipeline/stages/common.py", "pipeline/training"]


@dataclass
class Contract:
    params: list[str] = field(default_factory=list)
    deps: list[str] = field(default_factory=list)  # code folders/files and input artifacts
    outs: list[str] = field(default_factory=list)  # cached outputs
    persist: list[str] = field(default_factory=list)  # kept across runs (checkpoints)
    metrics: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
