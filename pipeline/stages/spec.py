"""How a stage declares itself, once: its arguments, matrix, resources and what it reads/writes.

A stage module defines ``ARGS`` (its command-line arguments), ``STAGES`` (one or more DVC
stages it backs, each a :class:`StageSpec`) and ``run(cfg, **item)``. Everything else derives
from these declarations: the CLI (``python -m pipeline <stage>``), the plan and the Prefect flow
(:mod:`pipeline.plan`) and ``dvc.yaml`` itself (:mod:`pipeline.dvcyaml`).

Paths, parameter keys and GPU counts are templates. ``{name}`` is a matrix item (``${item.name}``
in ``dvc.yaml``); ``{a.b}`` is a parameter value (``${a.b}``). Item references are substituted
first, so ``{finetune.targets.{target}.train.gpus}`` reads the GPU count of the item's target.

Example::

    ARGS = (Arg("variant"), Arg("seed", type=int))
    STAGES = (
        StageSpec(
            name="pretrain", command="pretrain",
            matrix={"variant": "pretrain.run.variants", "seed": "pretrain.run.seeds"},
            gpus="{pretrain.train.gpus}", params=("pretrain.variants.{variant}",),
            outs=("artifacts/backbones/{variant}/seed{seed}/model.pt",),
        ),
    )

A stage declares no code: its code dependencies are derived from what its module imports
(:mod:`pipeline.core.codedeps`), the same list in ``dvc.yaml``, the plan, the flow and the
checkpoint fingerprint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.codedeps import code_deps
from pipeline.core.params_file import lookup

# What the CLI runs for every stage before ``run`` that can change its result: the schema of
# params.yaml (its defaults and checks) and the rules across its sections checked for what the
# instance reads. The rest of the CLI (pipeline/__main__.py: argument
# parsing and help, the run lock, the torchrun launcher, the stage registry)
# decides how and when a stage runs, not what it computes, so it is no stage's dependency.
RUNNER_MODULES = ("pipeline.core.config", "pipeline.core.config_rules")

_ITEM = re.compile(r"\{(\w+)\}")
_PARAM = re.compile(r"\{([\w.-]+)\}")


@dataclass(frozen=True)
class Arg:
    """One ``--name`` option of a stage's command line."""

    name: str
    type: type = str
    required: bool = True
    help: str = ""


@dataclass(frozen=True)
class Plot:
    path: str
    x: str
    y: str


@dataclass(frozen=True)
class Overlay:
    """A chart of ``dvc.yaml``'s top-level ``plots``: one file drawn with a template of
    ``.dvc/plots`` (the overlay ones colour by a ``variant`` column)."""

    path: str
    template: str
    x: str
    y: str
    title: str


@dataclass(frozen=True)
class StageSpec:
    """One DVC stage: ``python -m pipeline <command>`` over the product of parameter lists."""

    name: str  # DVC's stage name; instances are ``name@v1-v2-...``
    command: str  # module under pipeline.stages, and the CLI subcommand
    matrix: dict[str, str] = field(default_factory=dict)  # arg -> dotted key of its list
    fixed: dict[str, Any] = field(default_factory=dict)  # args this DVC stage fixes
    gpus: int | str = 0  # 0: CPU only; 1: one GPU if any; or a template (training stages)
    params: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()  # data it reads (raw datasets, other stages' outputs)
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[Plot, ...] = ()
    private: tuple[str, ...] = ()  # folders it alone writes, not outputs (its checkpoints)

    @property
    def trains(self) -> bool:
        """Training stages may run on several GPUs (relaunched under torchrun)."""
        return isinstance(self.gpus, str)

    @property
    def module(self) -> str:
        return f"pipeline.stages.{self.command}"

    @property
    def code_deps(self) -> list[str]:
        """The project files (or whole folders) its module and the runner's config code import."""
        return code_deps((self.module, *RUNNER_MODULES))

    def contract(self, item: dict, dump: dict) -> Contract:
        """What one instance reads and writes (see :func:`contract`)."""
        return contract(self, item, dump)


@dataclass
class Contract:
    """What one stage instance reads and writes, in the vocabulary of ``dvc.yaml``."""

    params: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)  # input data (raw datasets, other outputs)
    outs: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    code: tuple[str, ...] = ()  # the modules it runs, whose files are its code deps

    @property
    def deps(self) -> list[str]:
        """Code files/folders, then input data, as ``dvc.yaml`` lists them.

        Derived on demand: reading the import closure costs a stage process about 0.3 s, and
        only the plan and the training stages' checkpoint fingerprint need it (not the outputs
        a stage checks before it runs)."""
        return [*code_deps(self.code), *self.data]

    def as_dvc(self) -> dict[str, list[str]]:
        """The instance's entries as ``dvc.yaml`` names them (what ``--dry-run`` prints)."""
        return {"params": self.params, "deps": self.deps, "outs": self.outs,
                "metrics": self.metrics, "plots": self.plots}  # fmt: skip

    @property
    def products(self) -> list[str]:
        """Everything it writes that another stage may read."""
        return [*self.outs, *self.metrics, *self.plots]


def fill(template: str, item: dict, dump: dict | None = None) -> str:
    """Substitute item values, then (with ``dump``) parameter values, into a template."""
    text = _ITEM.sub(lambda m: str(item[m[1]]) if m[1] in item else m[0], template)
    if dump is None:
        return text
    return _PARAM.sub(lambda m: str(lookup(dump, m[1])), text)


def to_dvc(template: str) -> str:
    """The same template in ``dvc.yaml``'s interpolation syntax."""
    return _PARAM.sub(lambda m: "${" + (m[1] if "." in m[1] else f"item.{m[1]}") + "}", template)


def instance_id(spec: StageSpec, item: dict) -> str:
    """DVC's name for an instance: ``finetune@digits_5to9-none-none-0``."""
    values = [item[k] for k in spec.matrix]
    return f"{spec.name}@{'-'.join(map(str, values))}" if values else spec.name


def contract(spec: StageSpec, item: dict, dump: dict) -> Contract:
    """The concrete contract of one instance under a validated config dump."""

    def each(templates) -> list[str]:
        return [fill(t, item, dump) for t in templates]

    return Contract(
        params=each(spec.params),
        data=each(spec.deps),
        code=(spec.module, *RUNNER_MODULES),
        outs=each(spec.outs),
        metrics=each(spec.metrics),
        plots=each(p.path for p in spec.plots),
    )


def gpus(spec: StageSpec, item: dict, dump: dict) -> int:
    """Processes (GPUs) the instance runs on: 1 unless a training stage asks for more."""
    if isinstance(spec.gpus, int):
        return spec.gpus
    return int(fill(spec.gpus, item, dump))


def items(spec: StageSpec, dump: dict) -> list[dict]:
    """Every matrix item of a stage under a config dump, in DVC's order (last key fastest)."""
    combos: list[dict] = [dict(spec.fixed)]
    for arg, key in spec.matrix.items():
        try:
            values = lookup(dump, key) or []
        except KeyError:
            values = []
        combos = [{**c, arg: v} for c in combos for v in values]
    return combos
