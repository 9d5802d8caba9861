"""The stages of the DAG, in order. Adding a stage: one module under ``pipeline.stages`` that
declares ``ARGS``, ``STAGES`` and ``run``, plus one line here.

The CLI runs a stage by importing only that stage's module, so this list is not a dependency of
any stage: adding a stage here does not make the others stale.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pipeline.stages.spec import Overlay, StageSpec

# Left out of every stage's code deps (pipeline.core.codedeps):
NOT_A_STAGE_DEPENDENCY = "the list of stages: adding one changes no other stage's result"

# command -> what it does (the CLI's help)
COMMANDS = {
    "prepare": "write a configured dataset (all its splits) as webdataset shards",
    "pretrain": "supervised pretraining of a backbone with a regularizer variant",
    "ssl": "self-supervised pretraining (SimCLR / Barlow Twins) of a backbone",
    "finetune": "a pretrained backbone, a new head, trained on a target",
    "readout": "logistic regression on frozen backbone features of a target",
    "attack": "mean hard-label adversarial distance of a finetuned or readout model",
    "report": "tables and figures from every metrics file",
}


def stage_module(command: str) -> ModuleType:
    return importlib.import_module(f"pipeline.stages.{command}")


def stage_specs() -> list[StageSpec]:
    """Every DVC stage, in ``dvc.yaml`` order."""
    return [spec for command in COMMANDS for spec in stage_module(command).STAGES]


def overlays() -> list[Overlay]:
    """The charts over several runs (``dvc.yaml``'s top-level ``plots``), in stage order."""
    return [o for command in COMMANDS for o in getattr(stage_module(command), "OVERLAYS", ())]
