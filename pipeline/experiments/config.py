"""Typed schema of ``experiments/params.yaml``, the parameters of the paper-figure pipeline.

Defaults are the papers' settings (rep-spectral Appendix F.1/F.2, LR paper Tables 4-5); the
params file states every deviation the CPU budget forced, and the summary repeats it. Unknown
keys are errors, as in the main ``params.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from pipeline.core.config import Strict
from pipeline.core.config_errors import override_behind
from pipeline.core.errors import ConfigError
from pipeline.core.params_file import apply_overrides, read_params
from pipeline.core.regularizer_config import RegularizerConfig

# The variants every claim compares; other names may be added and are reported too.
REQUIRED_VARIANTS = ("none", "ll_spectral", "rep_spectral")


class RunSettings(Strict):
    """Execution only: none of this changes results."""

    threads: int = Field(1, ge=1, description="torch CPU threads (1 is cheapest in CPU time)")
    progress: bool = True


class AttackSettings(Strict):
    """Tangent Attack settings (docs/methods.md)."""

    iterations: int = Field(40, ge=1, description="T")
    gamma: float = Field(1.0, gt=0, description="binary-search tolerance θ = γ/(d√d)")
    init_probes: int = Field(100, ge=1)
    max_probes: int = Field(10_000, ge=1)
    box: tuple[float, float] = (0.0, 1.0)
    # Rows per model call. 2048 keeps a 2000-unit hidden layer's activations (16 MB) below
    # glibc's largest mmap threshold, so buffers are reused instead of faulted in on every call
    # (8192 rows measured as much system time as user time).
    chunk_size: int = Field(2048, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _box_ordered(self) -> AttackSettings:
        if not self.box[0] < self.box[1]:
            raise ValueError(f"box must be (lo, hi) with lo < hi; got {self.box}")
        return self


def _variants_ok(variants: dict) -> dict:
    missing = [v for v in REQUIRED_VARIANTS if v not in variants]
    if missing:
        raise ValueError(f"variants must include {', '.join(REQUIRED_VARIANTS)}; missing {missing}")
    if variants["none"]:
        raise ValueError("variant 'none' must have no regularizers")
    return variants


def _activation_ok(v: str) -> str:
    if v not in ("relu", "gelu"):
        raise ValueError(f"activation must be relu or gelu; got {v!r}")
    return v


#: Regularizer lists by variant name; REQUIRED_VARIANTS must be there, ``none`` empty.
Variants = Annotated[dict[str, list[RegularizerConfig]], AfterValidator(_variants_ok)]
Activation = Annotated[str, AfterValidator(_activation_ok)]


class MapSettings(Strict):
    """Decision-boundary and volume-element maps over the input plane (rep-spectral Fig. 3)."""

    seed: int = Field(0, description="the seed whose models are drawn")
    window: tuple[float, float] = (-2.0, 2.0)
    steps: int = Field(201, ge=3, description="grid points per axis for the figure")
    stats_steps: int = Field(101, ge=3, description="grid points per axis for per-seed statistics")
    center_radius: float = Field(0.5, gt=0, description="'near a class centre' = this close")


class XorSettings(Strict):
    """rep-spectral Appendix F.1: XOR, MLP 2-8-2 GELU, full-batch GD."""

    out: str = "reports/papers/xor"
    seeds: list[int] = Field(default_factory=lambda: list(range(10)), min_length=1)
    hidden: int = Field(8, ge=1)
    activation: Activation = "gelu"
    epochs: int = Field(15_000, ge=1)
    lr: float = Field(1.0, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decays: list[float] = Field(default_factory=lambda: [0.0, 1e-4], min_length=1)
    variants: Variants
    log_every: int = Field(50, ge=1, description="epochs between σ_max records (Fig. 4)")
    attack: AttackSettings = Field(
        default_factory=lambda: AttackSettings(box=(-2.0, 2.0), gamma=0.01)
    )
    maps: MapSettings = Field(default_factory=MapSettings)


class ReadoutSettings(Strict):
    """Readout retraining: scikit-learn LogisticRegression on frozen features (paper: C = 1)."""

    C: float = Field(1.0, gt=0)
    max_iter: int = Field(2000, ge=1)


class DigitsSettings(Strict):
    """rep-spectral Appendix F.2 with scikit-learn's 8×8 digits in place of MNIST."""

    out: str = "reports/papers/digits_mlp"
    seeds: list[int] = Field(default_factory=lambda: list(range(10)), min_length=1)
    test_fraction: float = Field(0.25, gt=0, lt=1, description="digits split (1347 / 450)")
    split_seed: int = 0
    hidden: list[int] = Field(default_factory=lambda: [2000], min_length=1)
    activation: Activation = "relu"
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    variants: Variants
    readout: ReadoutSettings = Field(default_factory=ReadoutSettings)
    n_attack: int = Field(1000, ge=1, description="test images attacked per model (at most all)")
    attack: AttackSettings = Field(default_factory=AttackSettings)
    check_iterations: int | None = Field(
        40, ge=1, description="also attack the first seed with this T (null: no check)"
    )


class DiagnosticsSettings(Strict):
    """LR-paper diagnostics of the main DAG's backbones on the transfer target."""

    out: str = "reports/papers/diagnostics"
    backbones: list[str] = Field(default_factory=list)
    target: str = "digits_5to9"
    artifacts: str = "artifacts"
    image_size: int = Field(16, ge=1)
    channels: int = Field(1, ge=1)
    ks: list[int] = Field(default_factory=lambda: [1, 2, 3, 5, 10, 20, 50, 100], min_length=1)
    noise_ps: list[float] = Field(default_factory=lambda: [0.4, 0.6, 0.8, 1.0], min_length=1)
    noise_seed: int = 0
    thresholds: list[float] = Field(default_factory=lambda: [0.9, 0.99], min_length=1)
    finetune_regularizer: str = "none"
    finetune_seed: int = 0
    # The pretraining run of each backbone whose diagnostics are computed (one run: descriptive).
    backbone_seed: int = Field(0, ge=0)

    @field_validator("noise_ps")
    @classmethod
    def _probabilities(cls, v: list[float]) -> list[float]:
        if any(not 0.0 <= p <= 1.0 for p in v):
            raise ValueError(f"noise probabilities must lie in [0, 1]; got {v}")
        return v


class SweepSettings(Strict):
    """rep-spectral strength sweep, plain vs BatchNorm-folded, on digits 0-4 → 5-9 (readout)."""

    out: str = "reports/papers/strength_sweep"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    strengths: list[float] = Field(
        default_factory=lambda: [0.0, 0.003, 0.01, 0.03, 0.1], min_length=2
    )
    modes: list[Literal["plain", "folded"]] = Field(
        default_factory=lambda: ["plain", "folded"], min_length=1
    )
    pretrain_classes: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=2)
    target_classes: list[int] = Field(default_factory=lambda: [5, 6, 7, 8, 9], min_length=2)
    image_size: int = Field(16, ge=4)
    test_fraction: float = Field(0.25, gt=0, lt=1)
    split_seed: int = 0
    widths: list[int] = Field(default_factory=lambda: [8, 16, 32, 64], min_length=4, max_length=4)
    blocks: list[int] = Field(default_factory=lambda: [1, 1, 1, 1], min_length=4, max_length=4)
    epochs: int = Field(12, ge=1)
    burn_in: int = Field(6, ge=0, description="first regularized epoch (0-based)")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    power_steps: int = Field(1, ge=1)
    refresh_every: int = Field(10, ge=1)
    readout: ReadoutSettings = Field(default_factory=ReadoutSettings)
    n_attack: int = Field(32, ge=1)
    attack: AttackSettings = Field(default_factory=lambda: AttackSettings(iterations=10))
    accuracy_budget: float = Field(0.02, ge=0, description="accuracy one may give up")
    distance_gain: float = Field(0.10, ge=0, description="relative distance gain asked for")

    @field_validator("strengths")
    @classmethod
    def _strengths(cls, v: list[float]) -> list[float]:
        if 0.0 not in v or any(g < 0 for g in v) or len(set(v)) != len(v):
            raise ValueError(f"strengths must be distinct, >= 0 and include 0 (baseline); got {v}")
        return sorted(v)

    @model_validator(mode="after")
    def _burn_in_inside(self) -> SweepSettings:
        if self.burn_in >= self.epochs:
            raise ValueError(f"burn_in ({self.burn_in}) must be below epochs ({self.epochs})")
        if set(self.pretrain_classes) & set(self.target_classes):
            raise ValueError("pretrain_classes and target_classes must not share a digit")
        return self


class SummarySettings(Strict):
    """How claims are judged (see pipeline.experiments.verdicts)."""

    out: str = "reports/papers/summary.md"
    alpha: float = Field(
        0.05, gt=0, lt=0.5,
        description="level of each claim's declared one-sided test, after Holm across claims",
    )  # fmt: skip
    accuracy_tolerance: float = Field(
        0.01, ge=0, description="non-inferiority margin of 'does not hurt accuracy'"
    )
    budget_minutes: float = Field(30.0, gt=0)


class ExperimentsConfig(Strict):
    run: RunSettings = Field(default_factory=RunSettings)
    xor: XorSettings
    digits_mlp: DigitsSettings
    diagnostics: DiagnosticsSettings = Field(default_factory=DiagnosticsSettings)
    strength_sweep: SweepSettings = Field(default_factory=SweepSettings)
    summary: SummarySettings = Field(default_factory=SummarySettings)
    notes: list[str] = Field(
        default_factory=list, description="deviations from the papers, copied into the summary"
    )


def load_experiments_config(
    path: str | Path = "experiments/params.yaml", overrides: list[str] | None = None
) -> ExperimentsConfig:
    """Read, override and validate; any problem is one :class:`ConfigError` line."""
    data = apply_overrides(read_params(path), overrides or [])
    try:
        return ExperimentsConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = f"{loc}: {err['msg']}"
        raise ConfigError(f"{override_behind(loc, msg, overrides or []) or path}: {msg}") from None
