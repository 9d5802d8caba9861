"""Typed schema of ``params.yaml`` (its keys, defaults and per-value checks) and its entry,
:func:`load_config`.

Every stage reads its section through :func:`load_config`, so a bad parameter (unknown key,
wrong type, out-of-range value, unknown dataset/model/variant name) is reported before any work
starts, as a :class:`~pipeline.core.errors.ConfigError` naming the key and what is allowed.
Around it: reading and composing the file (:mod:`pipeline.core.params_file`), the one-line
messages (:mod:`pipeline.core.config_errors`) and the rules across sections, checked for what a
command reads (:mod:`pipeline.core.config_rules`).
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.core.config_errors import format_error
from pipeline.core.errors import ConfigError
from pipeline.core.params_file import apply_overrides, read_params
from pipeline.core.regularizer_config import RegularizerConfig

DATA_SOURCES = (
    "shards",
    "digits",
    "cifar10",
    "flowers102",
    "stanford_dogs",
    "mit_indoor",
    "imagenet",
    "image_folder",
)
ARCHITECTURES = ("small_resnet", "resnet18_small", "resnet18", "resnet50", "mlp")


def _known(what: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
    return value


DataSource = Annotated[str, AfterValidator(lambda v: _known("dataset source", v, DATA_SOURCES))]
Architecture = Annotated[str, AfterValidator(lambda v: _known("model arch", v, ARCHITECTURES))]

# Names become path components (artifacts/backbones/<variant>/..., artifacts/prepared/<name>/):
# one pattern for all of them, so no name is absolute, climbs out with "..", or holds a separator.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
NAME_RULE = "letters, digits, '_', '.', '-', starting with a letter or digit, no '..'"
SEED_MAX = 2**31 - 1  # seeds reach numpy/torch generators and file names: one range for all


def check_name(value: str) -> str:
    """``value`` if it is a safe path component (:data:`NAME_PATTERN`), else ValueError."""
    if not isinstance(value, str) or not NAME_PATTERN.match(value) or ".." in value:
        raise ValueError(f"{value!r} is not a valid name ({NAME_RULE})")
    return value


Name = Annotated[str, AfterValidator(check_name)]


class Strict(BaseModel):
    """Unknown keys are errors, not silently ignored settings; a boolean is not a number
    (pydantic would read ``epochs: true`` as 1)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _bool_as_number(field.annotation, value):
            raise ValueError("expected a number, not a boolean")
        return value


class RunSpec(Strict):
    """Where and how stages execute (none of this changes results, so no stage depends on it)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    # CPU intra-op threads; 0 keeps torch's default. Small CPU workloads run faster on one
    # thread: an OpenMP team stalls at every barrier whenever another process holds a core.
    threads: int = Field(1, ge=0)
    # Threads for inference-only work (the attack's oracle), whose results do not depend on
    # the thread count; 0 takes the stage's share of the cores (runtime.device.cpu_share).
    inference_threads: int = Field(0, ge=0)
    num_workers: int = Field(0, ge=0)
    progress: bool = True


class DataSpec(Strict):
    """One dataset: a source read from a local root, at a given resolution."""

    source: DataSource
    root: str | None = None  # relative to the repository (raw data by convention under data/)
    train_split: str = "train"
    test_split: str = "test"
    image_size: int = Field(..., ge=4, le=1024)
    augment: Literal["standard", "resize", "none"] = "standard"
    normalize: Literal["imagenet", "half", "none"] = "imagenet"
    options: dict[str, Any] = Field(default_factory=dict)
    # Use at most this many training / test samples (None = all); for smoke runs.
    limit_train: int | None = Field(None, ge=1)
    limit_test: int | None = Field(None, ge=1)
    # Source 'shards' only: read the prepared shards from disk as needed and stream them in
    # training, instead of holding every encoded sample in memory (for large sets).
    stream: bool = False
    # Streamed training: samples each loader worker mixes through (encoded, so memory is about
    # shuffle_buffer x sample size per worker); 0 reads each shard's samples in written order.
    shuffle_buffer: int = Field(1000, ge=0)

    @model_validator(mode="after")
    def _stream_needs_shards(self) -> DataSpec:
        if self.stream and self.source != "shards":
            raise ValueError(
                f"stream: true needs source 'shards' (prepared shards); got {self.source!r}"
            )
        return self


class ModelSpec(Strict):
    arch: Architecture = "small_resnet"
    widths: list[int] = Field(default_factory=lambda: [16, 32, 64, 128], min_length=1)
    blocks: list[int] = Field(default_factory=lambda: [1, 1, 1, 1], min_length=1)
    hidden: list[int] = Field(default_factory=lambda: [2000], min_length=1)  # mlp only
    activation: Literal["relu", "gelu"] = "relu"  # mlp only

    @model_validator(mode="after")
    def _blocks_match_widths(self) -> ModelSpec:
        if self.arch == "small_resnet" and not (len(self.widths) == len(self.blocks) == 4):
            raise ValueError(
                "small_resnet needs 4 widths and 4 blocks (timm's ResNet has 4 stages)"
            )
        if self.arch == "small_resnet" and any(w % 2 for w in self.widths[:1]):
            raise ValueError("small_resnet: widths[0] must be even (it sets the stem width)")
        return self


class OptimSpec(Strict):
    lr_backbone: float = Field(0.05, gt=0)
    lr_head: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    nesterov: bool = False


class ScheduleSpec(Strict):
    kind: Literal["cosine", "step", "constant"] = "cosine"
    # Cosine period in epochs; None means the run's own length (never a fixed constant).
    t_max: int | None = Field(None, ge=1)
    step_size: int = Field(30, ge=1)  # step schedule: multiply by gamma every step_size epochs
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: int = Field(0, ge=0)


class TrainSpec(Strict):
    epochs: int = Field(..., ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: OptimSpec = Field(default_factory=OptimSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    seed: int = 0
    amp: bool = True  # only takes effect on CUDA
    channels_last: bool = True  # only takes effect on CUDA
    checkpoint_every: int = Field(50, ge=1)  # optimizer steps between checkpoints
    eval_every: int = Field(1, ge=1)  # epochs between test-set evaluations
    diagnostics_every: int = Field(1, ge=1)  # epochs between exact σ_max diagnostics
    gpus: int = Field(1, ge=1)  # >1: launched under torchrun (DDP)
    sync_batchnorm: bool = False


class PrepareOutput(Strict):
    source: DataSource = "digits"
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    splits: list[Name] = Field(default_factory=lambda: ["train", "test"], min_length=1)
    # Write samples in an order drawn from this seed (sources list them class by class): needed
    # for sets trained on with data.stream, whose shuffle buffer mixes only nearby samples.
    shuffle_seed: int | None = None


class PrepareSpec(Strict):
    """Datasets written as shards to artifacts/prepared/<name>.

    ``embedded`` names need no files (scikit-learn's digits); ``raw`` names are read from
    ``data/<name>``, which their DVC stage depends on, so new raw data re-runs them.
    """

    outputs: dict[Name, PrepareOutput] = Field(default_factory=dict)
    embedded: list[str] = Field(default_factory=list)
    raw: list[str] = Field(default_factory=list)
    maxcount: int = Field(1000, ge=1)  # samples per shard

    @model_validator(mode="after")
    def _lists_match_outputs(self) -> PrepareSpec:
        _check_members("prepare.embedded", self.embedded, self.outputs)
        _check_members("prepare.raw", self.raw, self.outputs)
        for name in self.embedded:
            if self.outputs[name].source != "digits":
                raise ValueError(f"prepare.embedded: {name!r} reads files; list it in prepare.raw")
        for name in self.raw:
            out = self.outputs[name]
            if out.source == "digits":
                raise ValueError(f"prepare.raw: {name!r} is embedded; list it in prepare.embedded")
            if out.root not in (None, f"data/{name}"):
                raise ValueError(
                    f"prepare.outputs.{name}.root: raw data for {name!r} lives at data/{name} "
                    f"(symlink it there); got {out.root!r}"
                )
            out.root = f"data/{name}"
        return self


class BackboneRun(Strict):
    """Which backbones a pretraining stage trains: every variant once per seed.

    The seed is the unit of replication of every claim about a variant: it fixes initialisation
    and data order for all variants alike, so variants are compared paired by seed. It replaces
    ``train.seed`` in the DAG's pretraining stages.
    """

    variants: list[str] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0])

    @model_validator(mode="before")
    @classmethod
    def _not_a_list(cls, value: Any) -> Any:
        if isinstance(value, list):
            raise ValueError(
                "expected a mapping {variants: [...], seeds: [...]}, not a list; "
                f"write run: {{variants: {value}, seeds: [0]}}"
            )
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        return _distinct_seed_list(v)


def _distinct_seed_list(v: list[int]) -> list[int]:
    if len(set(v)) != len(v):
        raise ValueError(f"seeds must be distinct, got {v}")
    if any(s < 0 or s > SEED_MAX for s in v):
        raise ValueError(f"seeds must lie in 0..2**31-1, got {v}")
    return v


class PretrainSpec(Strict):
    data: DataSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec
    variants: dict[Name, list[RegularizerConfig]]
    run: BackboneRun = Field(default_factory=BackboneRun)


class SimCLRSpec(Strict):
    temperature: float = Field(0.5, gt=0)
    projection_dim: int = Field(64, ge=1)
    hidden_dim: int = Field(256, ge=1)


class BarlowTwinsSpec(Strict):
    lambda_offdiag: float = Field(5e-3, gt=0)
    projection_dim: int = Field(256, ge=1)
    hidden_dim: int = Field(256, ge=1)


class SSLAugment(Strict):
    """View augmentation strengths (lightly's defaults are for ImageNet-sized images)."""

    min_scale: float = Field(0.08, gt=0, le=1)
    cj_prob: float = Field(0.8, ge=0, le=1)
    gray_scale: float = Field(0.2, ge=0, le=1)
    gaussian_blur: float = Field(0.5, ge=0, le=1)
    hf_prob: float = Field(0.5, ge=0, le=1)


class SSLVariant(Strict):
    method: Literal["simclr", "barlow_twins"]
    regularizers: list[RegularizerConfig] = Field(default_factory=list)


class SSLSpec(Strict):
    data: DataSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec
    simclr: SimCLRSpec = Field(default_factory=SimCLRSpec)
    barlow_twins: BarlowTwinsSpec = Field(default_factory=BarlowTwinsSpec)
    augment: SSLAugment = Field(default_factory=SSLAugment)
    knn_k: int = Field(20, ge=1)
    variants: dict[Name, SSLVariant] = Field(default_factory=dict)
    run: BackboneRun = Field(default_factory=BackboneRun)


class TargetSpec(Strict):
    data: DataSpec
    train: TrainSpec


class FinetuneRun(Strict):
    targets: list[str] = Field(default_factory=list)
    backbones: list[str] = Field(default_factory=list)
    # Pretraining seeds of each backbone to finetune (each must be trained by pretrain.run.seeds
    # or ssl.run.seeds); finetuning ``seeds`` are nested inside each of them.
    backbone_seeds: list[int] = Field(default_factory=lambda: [0])
    regularizers: list[str] = Field(default_factory=lambda: ["none"])
    seeds: list[int] = Field(default_factory=lambda: [0])

    @field_validator("seeds", "backbone_seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        return _distinct_seed_list(v)


class FinetuneSpec(Strict):
    targets: dict[Name, TargetSpec]
    regularizers: dict[Name, list[RegularizerConfig]] = Field(default_factory=lambda: {"none": []})
    run: FinetuneRun = Field(default_factory=FinetuneRun)


class ReadoutSpec(Strict):
    C: float = Field(1.0, gt=0)
    max_iter: int = Field(1000, ge=1)
    batch_size: int = Field(256, ge=1)


class AttackSpec(Strict):
    """The attack stage (docs/methods.md, "Attacks"): which methods, on how many samples, with
    which query budgets and oracle precision."""

    n_samples: int = Field(500, ge=1)
    # More samples than the model classifies correctly is an error unless this is set.
    allow_fewer: bool = False
    methods: list[Literal["tangent", "hsja"]] = Field(
        default_factory=lambda: ["tangent", "hsja"], min_length=1
    )
    # Query counts at which each method's best distance so far is recorded.
    # Doubling, so the report can tell whether Δ converged (the last doubling lowers it < 5%).
    budgets: list[int] = Field(
        default_factory=lambda: [1000, 2000, 4000, 8000, 16_000], min_length=1
    )
    iterations: int = Field(40, ge=1)
    # Per-sample query limit of each method; None: the largest budget.
    max_queries: int | None = Field(None, ge=1)
    gamma: float = Field(1.0, gt=0)
    init_probes: int = Field(100, ge=1)
    max_probes: int = Field(10_000, ge=1)
    chunk_size: int = Field(4096, ge=1)
    # Label oracle (and the correctness check that picks the samples) at this precision.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # Correctly classified test samples kept as starting points of last resort.
    fallback_pool: int = Field(256, ge=0)
    seed: int = 0

    @field_validator("methods")
    @classmethod
    def _distinct_methods(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"methods must be distinct, got {v}")
        return v

    @field_validator("budgets")
    @classmethod
    def _increasing_budgets(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v) or any(a >= b for a, b in zip(v, v[1:])):
            raise ValueError(f"budgets must be positive and strictly increasing, got {v}")
        return v

    def query_limit(self) -> int:
        """Queries each method may spend per sample."""
        return self.max_queries if self.max_queries is not None else self.budgets[-1]


class PrimaryTest(Strict):
    """The report's one declared test per variant against the baseline, fixed before any run.

    Over pretraining seeds (the unit of replication), paired by seed; Holm-adjusted across the
    variants of a target; accuracy is a non-inferiority check at ``accuracy_margin``.
    """

    attack: Literal["tangent", "hsja", "best"] = "tangent"
    statistic: Literal["log_ratio_mean_delta", "log_ratio_median_delta"] = "log_ratio_mean_delta"
    # The claim is a larger Δ: "greater" (one-sided) or "two-sided"; a smaller Δ is never a yes.
    alternative: Literal["greater", "two-sided"] = "greater"
    test: Literal["t", "wilcoxon"] = "t"
    alpha: float = Field(0.05, gt=0, lt=1)
    accuracy_margin: float = Field(0.02, ge=0, le=1)  # non-inferiority margin (absolute)
    # The claim checked: Δ at least this many times the baseline's (the paper: 10% larger).
    min_ratio: float = Field(1.10, gt=0)
    # A model's Δ counts as converged when the last doubling of the query budget lowers its
    # mean by less than this fraction; unconverged models are not ranked.
    converged_below: float = Field(0.05, gt=0, lt=1)
    # For the power line: the per-seed standard deviation of the statistic the design assumed.
    assumed_sd: float = Field(0.1, gt=0)
    # Per backbone, the backbone it is compared with when not ``report.baseline`` (an SSL variant
    # with its unregularized SSL run); null: not compared (it is itself a baseline).
    baselines: dict[str, str | None] = Field(default_factory=dict)


class ReportSpec(Strict):
    title: str = "Robust transfer"
    bootstrap_resamples: int = Field(9999, ge=100)
    seed: int = Field(0, ge=0)
    baseline: str = "none"  # the unregularized pretraining variant and finetune regularizer
    primary: PrimaryTest = Field(default_factory=PrimaryTest)


class Config(Strict):
    run: RunSpec = Field(default_factory=RunSpec)
    # Where it came from, to label errors of the checks run later per instance (check_reads).
    _source: str = PrivateAttr("params")
    _overrides: list[str] = PrivateAttr(default_factory=list)
    prepare: PrepareSpec = Field(default_factory=PrepareSpec)
    pretrain: PretrainSpec
    ssl: SSLSpec | None = None
    finetune: FinetuneSpec
    readout: ReadoutSpec = Field(default_factory=ReadoutSpec)
    attack: AttackSpec = Field(default_factory=AttackSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)

    @model_validator(mode="after")
    def _names_resolve(self) -> Config:
        _check_members("pretrain.run.variants", self.pretrain.run.variants, self.pretrain.variants)
        ssl_variants = self.ssl.variants if self.ssl else {}
        if self.ssl:
            _check_members("ssl.run.variants", self.ssl.run.variants, ssl_variants)
            if not self.ssl.data.root:
                raise ValueError("ssl.data.root: required (the DAG tracks it as a dependency)")
        clash = sorted(set(self.pretrain.variants) & set(ssl_variants))
        if clash:
            raise ValueError(
                f"backbone names must be unique across pretrain.variants and ssl.variants: {clash}"
            )
        run = self.finetune.run
        _check_members("finetune.run.targets", run.targets, self.finetune.targets)
        for target in run.targets:
            data = self.finetune.targets[target].data
            if data.source != "shards" or data.root != f"artifacts/prepared/{target}":
                raise ValueError(
                    f"finetune.targets.{target}.data: a DAG target reads its prepared shards; set "
                    f"source: shards, root: artifacts/prepared/{target} and add {target!r} to "
                    "prepare.outputs (and prepare.raw)"
                )
        if not self.pretrain.data.root:
            raise ValueError("pretrain.data.root: required (the DAG tracks it as a dependency)")
        _check_members("finetune.run.regularizers", run.regularizers, self.finetune.regularizers)
        produced = self.produced_backbones()
        missing = [b for b in run.backbones if b not in produced]
        if missing:
            raise ValueError(
                f"finetune.run.backbones: {missing[0]!r} is not made by pretrain.run.variants or "
                f"ssl.run.variants; allowed: {', '.join(produced) or '(none)'}"
            )
        self._backbone_seeds_trained()
        self._report_baselines_run()
        return self

    def produced_backbones(self) -> list[str]:
        """Backbones some stage of this run writes: pretrain.run.variants and ssl.run.variants."""
        return [*self.pretrain.run.variants, *(self.ssl.run.variants if self.ssl else [])]

    def _report_baselines_run(self) -> None:
        """Every backbone the DAG finetunes is compared with a baseline the DAG also runs (or
        none, declared null): a missing baseline would silently remove the report's answer."""
        run, report = self.finetune.run, self.report
        unknown = [b for b in report.primary.baselines if b not in self.backbone_names()]
        if unknown:
            raise ValueError(
                f"report.primary.baselines: unknown backbone {unknown[0]!r}; "
                f"allowed: {', '.join(self.backbone_names())}"
            )
        for backbone in run.backbones:
            base = report.primary.baselines.get(backbone, report.baseline)
            if base is not None and base not in run.backbones:
                key = (
                    f"report.primary.baselines.{backbone}"
                    if backbone in report.primary.baselines
                    else "report.baseline"
                )
                raise ValueError(
                    f"{key}: {backbone!r} is compared with {base!r}, which finetune.run.backbones "
                    f"does not run; run it, or declare another baseline (null: not compared)"
                )
        if run.regularizers and report.baseline not in run.regularizers:
            raise ValueError(
                f"report.baseline: {report.baseline!r} is not in finetune.run.regularizers "
                f"{run.regularizers}: the finetuned variants would have no baseline to pair with"
            )

    def _backbone_seeds_trained(self) -> None:
        """Every (backbone, backbone seed) a finetune reads is trained by some stage of the DAG."""
        run = self.finetune.run
        for backbone in run.backbones:
            kind = "pretrain" if backbone in self.pretrain.variants else "ssl"
            trained = self.pretrain.run.seeds if kind == "pretrain" else self.ssl.run.seeds
            untrained = [s for s in run.backbone_seeds if s not in trained]
            if untrained:
                raise ValueError(
                    f"finetune.run.backbone_seeds: seed {untrained[0]} of backbone {backbone!r} is "
                    f"not in {kind}.run.seeds {trained}"
                )

    def backbone_names(self) -> list[str]:
        """Every backbone a finetune run may start from: supervised and SSL variants."""
        names = list(self.pretrain.variants)
        if self.ssl:
            names += list(self.ssl.variants)
        return names

    def backbone_kind(self, name: str) -> Literal["pretrain", "ssl"]:
        if name in self.pretrain.variants:
            return "pretrain"
        if self.ssl and name in self.ssl.variants:
            return "ssl"
        raise ConfigError(
            f"unknown backbone {name!r}; allowed: {', '.join(self.backbone_names()) or '(none)'}"
        )


def _bool_as_number(tp: Any, value: Any) -> bool:
    """Whether ``value`` holds a bool where ``tp`` wants an int or float (not a bool)."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    origin = typing.get_origin(tp)
    if isinstance(value, bool):
        members = typing.get_args(tp) if origin in (typing.Union, types.UnionType) else (tp,)
        return bool({int, float} & set(members)) and bool not in members
    if isinstance(value, list | tuple) and origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return any(_bool_as_number(args[0], v) for v in value) if args else False
    return False


def _check_members(key: str, chosen: list, allowed: dict | list) -> None:
    unknown = [c for c in chosen if c not in allowed]
    if unknown:
        raise ValueError(
            f"{key}: unknown name {unknown[0]!r}; allowed: {', '.join(map(str, allowed)) or '(none)'}"
        )


def validate(data: dict, source: str = "params", overrides: list[str] = ()) -> Config:
    """Check ``data``; an error is labelled by the ``--set`` in ``overrides`` behind it, if any.

    Rules that tie keys of different sections together (burn-in against epochs, budgets against
    the query limit) are not checked here but for what a command runs
    (:func:`pipeline.core.config_rules.check_reads`).
    """
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_error(exc, Config, source, list(overrides))) from None
    cfg._source, cfg._overrides = source, list(overrides)
    return cfg


def load_config(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Config:
    """Read, override and validate a parameter file; raises ConfigError with a one-line message."""
    data = apply_overrides(read_params(path), overrides or [])
    return validate(data, source=str(path), overrides=overrides or [])
