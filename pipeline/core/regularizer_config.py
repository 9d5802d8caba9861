"""Typed settings of each regularizer (pydantic v2): part of the schema of ``params.yaml``.

One model per regularizer, told apart by its ``name`` field, so a params file lists them as
``[{name: rep_spectral, strength: 0.001, burn_in: 80}, ...]``. Unknown fields are errors (a typo
must not silently fall back to a default). Defaults are the papers' settings where they exist:
rep-spectral γ = 1e-3 with refresh every 160 updates (ImageNet ResNet50), one power step (its
Appendix D); LR target rank 100 before the readout, projection every 10 iterations, ``l = 2r``;
BSS λ = 1e-3, k = 1; nuclear/ℓ1 λ = 0.01. Burn-in defaults to 0 because the papers' values
(epoch 80 of 120, 50 warm-up epochs) are tied to their schedules; experiment configs set it.

Settings only, no torch: the schema is read by every command, the control plane included.
:func:`pipeline.regularizers.build_regularizers` turns them into regularizers.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from pipeline.core.errors import ConfigError

Strength = Annotated[float, Field(ge=0, allow_inf_nan=False)]
BurnIn = Annotated[int, Field(ge=0, description="first active epoch (0-based)")]
Positive = Annotated[int, Field(ge=1)]
LayerName = Annotated[str, Field(min_length=1)]


class _Config(BaseModel):
    """Every field but ``name`` is an argument of the regularizer ``name`` builds."""

    model_config = ConfigDict(extra="forbid", strict=True)  # `burn_in: true` is not 1


class RepSpectralConfig(_Config):
    """rep-spectral: ``(γ/2)·Σ σ_max(W_l)²`` over the backbone's Conv2d/Linear layers."""

    name: Literal["rep_spectral"] = "rep_spectral"
    strength: Strength = 1e-3
    burn_in: BurnIn = 0
    power_steps: Positive = 1
    refresh_every: Positive = Field(160, description="optimizer steps between full refreshes")
    layers: list[LayerName] = Field(
        default_factory=list, description="backbone module-name prefixes; empty = all"
    )
    top_frequencies: Positive = Field(4, description="candidate frequencies kept per conv")
    track_candidates: bool = Field(True, description="power-step the candidates every step")
    fold_bn: bool = Field(
        False,
        description="regularize each conv with its BatchNorm2d (eval-mode running statistics)",
    )


class LLSpectralConfig(RepSpectralConfig):
    """ll-spectral: rep-spectral plus the readout layer."""

    name: Literal["ll_spectral"] = "ll_spectral"


class ReadoutSpectralConfig(_Config):
    """readout-spectral: ``(γ/2)·σ_max(W_head)²`` on the readout only (no backbone layer)."""

    name: Literal["readout_spectral"] = "readout_spectral"
    strength: Strength = 1e-3
    burn_in: BurnIn = 0
    power_steps: Positive = 1
    refresh_every: Positive = Field(160, description="optimizer steps between full refreshes")


class LRConfig(_Config):
    """LR virtual layer at 1 (``["features"]``) or 2 (``["features", "layer3"]``) representations."""

    name: Literal["lr"] = "lr"
    projection_weight: Strength = Field(1.0, description="λ_c")
    norm_weight: Strength = Field(1.0, description="λ_n")
    rank: Positive | list[Positive] = Field(100, description="one target rank, or one per site")
    project_every: Positive = 10
    nystrom_runs: Positive = 5
    at: list[LayerName] = Field(default_factory=lambda: ["features"], min_length=1, max_length=2)
    pool: bool = Field(True, description="global-average-pool module outputs (else flatten)")
    burn_in: BurnIn = 0
    seed: int = 0

    @model_validator(mode="after")
    def _sites_match(self) -> LRConfig:
        if len(set(self.at)) != len(self.at):
            raise ValueError(f"`at` lists a representation twice: {self.at}")
        if isinstance(self.rank, list) and len(self.rank) != len(self.at):
            raise ValueError(f"rank has {len(self.rank)} values but `at` has {len(self.at)} sites")
        return self


class BSSConfig(_Config):
    """Batch spectral shrinkage of the k smallest singular values of the batch features."""

    name: Literal["bss"] = "bss"
    strength: Strength = 1e-3
    k: Positive = 1
    burn_in: BurnIn = 0


class NuclearConfig(_Config):
    """``λ·Σ ‖W_l‖_*`` over the backbone's weight layers."""

    name: Literal["nuclear"] = "nuclear"
    strength: Strength = 0.01
    layers: list[LayerName] = Field(default_factory=list)
    burn_in: BurnIn = 0


class L1Config(_Config):
    """``λ·Σ ‖W_l‖_1`` over the backbone's weight layers."""

    name: Literal["l1"] = "l1"
    strength: Strength = 0.01
    layers: list[LayerName] = Field(default_factory=list)
    burn_in: BurnIn = 0


RegularizerConfig = Annotated[
    RepSpectralConfig
    | LLSpectralConfig
    | ReadoutSpectralConfig
    | LRConfig
    | BSSConfig
    | NuclearConfig
    | L1Config,
    Field(discriminator="name"),
]

_ADAPTER = TypeAdapter(list[RegularizerConfig])


def parse_regularizer_configs(raw: list) -> list[RegularizerConfig]:
    """Validate plain dicts (e.g. from YAML); any problem is one :class:`ConfigError`."""
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"invalid regularizer settings: {problems}") from None
