"""Regularizers added to the task loss: rep-/ll-/readout-spectral, LR, BSS, nuclear norm, ℓ1.

Each is a :class:`Regularizer` (``attach`` → ``penalty`` per step → ``after_step``); build them
from settings (:mod:`pipeline.core.regularizer_config`) with :func:`build_regularizers`.
"""

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
from pipeline.regularizers.base import Regularizer, StepContext
from pipeline.regularizers.bss import BatchSpectralShrinkage, bss_penalty
from pipeline.regularizers.build import REGULARIZERS, build_regularizer, build_regularizers
from pipeline.regularizers.low_rank import LowRank, nystrom_project
from pipeline.regularizers.rep_spectral import (
    LLSpectral,
    ReadoutSpectral,
    RepSpectral,
    spectral_summary,
)
from pipeline.regularizers.spectral import (
    conv_frequency_matrices,
    conv_sigma_max,
    linear_sigma_max,
    power_iteration,
)
from pipeline.regularizers.weight_norms import (
    L1Norm,
    NuclearNorm,
    effective_rank,
    effective_sparsity,
)

__all__ = [
    "REGULARIZERS",
    "BSSConfig",
    "BatchSpectralShrinkage",
    "L1Config",
    "L1Norm",
    "LLSpectral",
    "LLSpectralConfig",
    "LRConfig",
    "LowRank",
    "NuclearConfig",
    "NuclearNorm",
    "ReadoutSpectral",
    "ReadoutSpectralConfig",
    "RegularizerConfig",
    "RepSpectral",
    "RepSpectralConfig",
    "Regularizer",
    "StepContext",
    "bss_penalty",
    "build_regularizer",
    "build_regularizers",
    "conv_frequency_matrices",
    "conv_sigma_max",
    "effective_rank",
    "effective_sparsity",
    "linear_sigma_max",
    "nystrom_project",
    "parse_regularizer_configs",
    "power_iteration",
    "spectral_summary",
]
