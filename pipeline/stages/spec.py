"""How a stage declares itself, once: its arguments, matrix, resources and what it reads/writes.

A stage module defines ``ARGS`` (its command-line arguments), ``STAGES`` (one or more DVC
stages it backs, each a :class:`StageSpec`) and ``run(cfg, **item)``. Everything else derives
from these declarations: the CLI (``python -m pipeline <stage>``), the plan and the Prefect flow
(:mod:`pipeline.plan`) and ``dvc.yaml`` itself (:mod:`pipeline.dvcyaml`).

Paths, parameter keys and GPU counts are templates. ``{name}`` is a matrix item (``${item.name}``
in ``dvc.yaml``); ``{a.b}`` is a parameter value (``${a.b}``). Item references are substituted
first, so ``{finetune.targets.{target}.train.gpus}`` reads the GPU count of the item's target.

Example::

    ARGS = (Arg("variant"),)
    STAGES = (
        StageSpec(
            name="pretrain", command="pretrain", matrix={"variant": "pretrain.run"},
            gpus="{pretrain.train.gpus}", params=("pretrain.variants.{variant}",),
            code=("pipeline/training",), outs=("artifacts/backbones/{variant}/model.pt",),
        ),
    )
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Code every stage runs: the CLI, the schema, errors, file helpers, paths, the declarations.
CORE_CODE = ("pipeline/__main__.py", "pipeline/core", "pipeline/stages/spec.py")
# Stages that load models: their glue (which never imports the training loop), devices, data.
MODEL_CODE = ("pipeline/stages/shared.py", "pipeline/runtime", "pipeline/models", "pipeline/data")
# Stages that train: the loop and the regularizers too.
TRAINING_CODE = (
    *MODEL_CODE,
    "pipeline/stages/supervised.py",
    "pipeline/training",
    "pipeline/regularizers",
)

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
class StageSpec:
    """One DVC stage: ``python -m pipeline <command>`` over the product of parameter lists."""

    name: str  # DVC's stage name; instances are ``name@v1-v2-...``
    command: str  # module under pipeline.stages, and the CLI subcommand
    matrix: dict[str, str] = field(default_factory=dict)  # arg -> dotted key of its list
    fixed: dict[str, Any] = field(default_factory=dict)  # args this DVC stage fixes
    gpus: int | str = 0  # 0: CPU only; 1: one GPU if any; or a template (training stages)
    params: tuple[str, ...] = ()
    code: tuple[str, ...] = ()  # code beyond CORE_CODE and the stage's own module
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
    def module_file(self) -> str:
        return f"pipeline/stages/{self.command}.py"

    @property
    def all_code(self) -> tuple[str, ...]:
        return (*CORE_CODE, self.module_file, *self.code)


@dataclass
class Contract:
    """What one stage instance reads and writes, in the vocabulary of ``dvc.yaml``."""

    params: list[str] = field(default_factory=list)
    deps: list[str] = field(default_factory=list)  # code folders/files and input data
    outs: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)

    @property
    def products(self) -> list[str]:
        """Everything it writes that another stage may read."""
        return [*self.outs, *self.metrics, *self.plots]


def lookup(dump: dict, dotted: str) -> Any:
    """The value at ``a.b.c`` of a config dump; KeyError naming the key when absent."""
    node: Any = dump
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


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
        deps=[*spec.all_code, *each(spec.deps)],
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
