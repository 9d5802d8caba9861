"""Build regularizers from their settings (:mod:`pipeline.core.regularizer_config`).

The settings live in core, with the rest of the schema of ``params.yaml``; this module maps each
settings model to the regularizer it builds, and re-exports the models for callers that import
them from here.
"""

from __future__ import annotations

from pipeline.core.regularizer_config import (
    BSSConfig,
    L1Config,
    LLSpectralConfig,
    LRConfig,
    NuclearConfig,
    ReadoutSpectralConfig,
    RegularizerConfig,
    RepSpectralConfig,
    parse_regularizer_configs,
)
from pipeline.regularizers.base import Regularizer
from pipeline.regularizers.bss import BatchSpectralShrinkage
from pipeline.regularizers.low_rank import LowRank
from pipeline.regularizers.rep_spectral import LLSpectral, ReadoutSpectral, RepSpectral
from pipeline.regularizers.weight_norms import L1Norm, NuclearNorm

# Settings model -> the regularizer it builds: every field but ``name`` is one of its arguments.
BUILDS: dict[type, type[Regularizer]] = {
    RepSpectralConfig: RepSpectral,
    LLSpectralConfig: LLSpectral,
    ReadoutSpectralConfig: ReadoutSpectral,
    LRConfig: LowRank,
    BSSConfig: BatchSpectralShrinkage,
    NuclearConfig: NuclearNorm,
    L1Config: L1Norm,
}

__all__ = [
    "BUILDS",
    "BSSConfig",
    "L1Config",
    "LLSpectralConfig",
    "LRConfig",
    "NuclearConfig",
    "ReadoutSpectralConfig",
    "RegularizerConfig",
    "RepSpectralConfig",
    "build_regularizer",
    "build_regularizers",
    "parse_regularizer_configs",
]


def build_regularizer(config) -> Regularizer:
    """The regularizer one validated settings model describes."""
    return BUILDS[type(config)](**config.arguments())


def build_regularizers(configs: list) -> list[Regularizer]:
    """One regularizer per config (models or dicts); the training loop calls ``attach`` later."""
    return [build_regularizer(c) for c in parse_regularizer_configs(list(configs))]
