"""Regularizers from their settings (:mod:`pipeline.core.regularizer_config`): each ``name``
builds one class, with every other field of its settings as an argument."""

from __future__ import annotations

from pipeline.core.regularizer_config import RegularizerConfig, parse_regularizer_configs
from pipeline.regularizers.base import Regularizer
from pipeline.regularizers.bss import BatchSpectralShrinkage
from pipeline.regularizers.low_rank import LowRank
from pipeline.regularizers.rep_spectral import LLSpectral, ReadoutSpectral, RepSpectral
from pipeline.regularizers.weight_norms import L1Norm, NuclearNorm

#: The class each settings ``name`` builds.
REGULARIZERS: dict[str, type[Regularizer]] = {
    "rep_spectral": RepSpectral,
    "ll_spectral": LLSpectral,
    "readout_spectral": ReadoutSpectral,
    "lr": LowRank,
    "bss": BatchSpectralShrinkage,
    "nuclear": NuclearNorm,
    "l1": L1Norm,
}


def build_regularizer(config: RegularizerConfig) -> Regularizer:
    """The regularizer one validated settings model describes."""
    fields = type(config).model_fields
    return REGULARIZERS[config.name](**{f: getattr(config, f) for f in fields if f != "name"})


def build_regularizers(configs: list) -> list[Regularizer]:
    """One regularizer per config (models or dicts); the training loop calls ``attach`` later."""
    return [build_regularizer(config) for config in parse_regularizer_configs(list(configs))]
