"""Every stage instance a parameter file defines, with its dependencies: the DAG of ``dvc.yaml``.

Derived from the stage declarations (:mod:`pipeline.stages.registry`), expanded the way DVC
expands the matrices of ``dvc.yaml``: instances are named as DVC names them
(``finetune@cifar10-rep_spectral-none-0``), and an instance depends on every instance whose
outputs it lists among its dependencies.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from pipeline.core.cli import make_parser
from pipeline.core.errors import ConfigError
from pipeline.core.launch import visible_gpus
from pipeline.stages.registry import stage_specs
from pipeline.stages.spec import Contract, contract, gpus, instance_id, items


@dataclass
class StageInstance:
    """One node of the DAG: a stage, its matrix item, and the ids it must wait for."""

    id: str  # DVC's name for it, e.g. ``attack_readout@digits_5to9-none``
    stage: str  # the command (module under pipeline.stages)
    item: dict
    upstream: list[str] = field(default_factory=list)
    gpus: int = 0  # processes/GPUs it runs on: train.gpus for training, 1 for model stages
    trains: bool = False
    contract: Contract = field(default_factory=Contract)

    @property
    def products(self) -> list[str]:
        return self.contract.products

    @property
    def cli_args(self) -> list[str]:
        return cli_args(self.item)


def cli_args(item: dict) -> list[str]:
    """``--key value`` arguments of ``python -m pipeline <stage>`` for a matrix item."""
    return [a for k, v in item.items() if v is not None for a in (f"--{k}", str(v))]


def _ancestors(path: str) -> list[str]:
    p = PurePosixPath(path)
    return [str(p), *(str(a) for a in p.parents if str(a) != ".")]


def plan(cfg) -> list[StageInstance]:
    """The DAG of ``cfg``: instances in a valid execution order, each naming its upstream ids.

    The cross-key rules (:func:`~pipeline.core.config_rules.check_reads`) are checked for what every
    instance reads, so the plan, the flow and its dry run refuse what one of its stages would.
    """
    from pipeline.core.config_rules import check_reads

    dump = cfg.model_dump(mode="json")
    instances = [
        StageInstance(
            id=instance_id(spec, item),
            stage=spec.command,
            item=item,
            gpus=gpus(spec, item, dump),
            trains=spec.trains,
            contract=contract(spec, item, dump),
        )
        for spec in stage_specs()
        for item in items(spec, dump)
    ]
    check_reads(cfg, sorted({key for inst in instances for key in inst.contract.params}))
    # A dependency path matches a product if one contains the other (a file in an output
    # folder, or a folder of metrics files), which is how DVC connects stages too.
    exact: dict[str, set[str]] = {}
    under: dict[str, set[str]] = {}
    for inst in instances:
        for product in inst.products:
            exact.setdefault(str(PurePosixPath(product)), set()).add(inst.id)
            for anc in _ancestors(product):
                under.setdefault(anc, set()).add(inst.id)
    for inst in instances:
        owners: set[str] = set()
        for dep in inst.contract.deps:
            owners |= under.get(str(PurePosixPath(dep)), set())
            for anc in _ancestors(dep):
                owners |= exact.get(anc, set())
        owners.discard(inst.id)
        inst.upstream = [i.id for i in instances if i.id in owners]
    seen: dict[str, dict] = {}
    for inst in instances:  # names may hold "-", the separator of DVC's ids: two items can meet
        if inst.id in seen and seen[inst.id] != inst.item:
            raise ConfigError(
                f"two stage instances share the id {inst.id} ({seen[inst.id]} and {inst.item}): "
                "rename a variant, target or regularizer so that no name ends where another's "
                "'-' begins"
            )
        seen[inst.id] = inst.item
    return _topological(instances)


def _topological(instances: list[StageInstance]) -> list[StageInstance]:
    """Stable order in which every instance follows its upstream (dvc.yaml's order usually is)."""
    by_id = {i.id: i for i in instances}
    done: set[str] = set()
    ordered: list[StageInstance] = []
    visiting: set[str] = set()

    def visit(inst: StageInstance) -> None:
        if inst.id in done:
            return
        if inst.id in visiting:
            raise ValueError(f"dependency cycle through {inst.id}")
        visiting.add(inst.id)
        for up in inst.upstream:
            visit(by_id[up])
        visiting.discard(inst.id)
        done.add(inst.id)
        ordered.append(inst)

    for inst in instances:
        visit(inst)
    return ordered


def _produced(dep: str, instances: list[StageInstance]) -> bool:
    """Whether some instance writes ``dep``, a file inside it, or a folder holding it."""
    dep_parts = PurePosixPath(dep).parts
    for inst in instances:
        for product in inst.products:
            parts = PurePosixPath(product).parts
            n = min(len(parts), len(dep_parts))
            if parts[:n] == dep_parts[:n]:
                return True
    return False


def missing_inputs(instances: list[StageInstance]) -> dict[str, list[str]]:
    """Inputs that no stage produces and that are not on disk (raw data): ``path -> [ids]``.

    Code dependencies are the code that runs; they are not inputs a user supplies.
    """
    missing: dict[str, list[str]] = {}
    for inst in instances:
        for dep in inst.contract.deps:
            code = PurePosixPath(dep).parts[0] == "pipeline"
            if code or Path(dep).exists() or _produced(dep, instances):
                continue
            missing.setdefault(dep, []).append(inst.id)
    return missing


def _some(ids: list[str], shown: int = 3) -> str:
    more = f", ... ({len(ids)} in all)" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more


def problems(instances: list[StageInstance], device: str, visible: int | None = None) -> list[str]:
    """Everything that would stop the plan, one short line each: missing raw data, GPU shortfalls."""
    lines = [
        f"missing input {dep} (read by {_some(ids)})"
        for dep, ids in missing_inputs(instances).items()
    ]
    if device != "cpu":
        visible = visible_gpus() if visible is None else visible
        short = [i for i in instances if i.trains and i.gpus > max(visible, 1)]
        if short:
            need = max(i.gpus for i in short)
            lines.append(
                f"{len(short)} training stage(s) need up to {need} GPUs but {visible} are visible "
                f"with run.device: {device} ({_some([i.id for i in short])})"
            )
    return lines


def format_plan(instances: list[StageInstance], source: str, device: str) -> str:
    """A table: id, GPUs, upstream ids; then anything that would stop the plan."""
    rows = []
    for inst in instances:
        ups = inst.upstream
        shown = ", ".join(ups) if len(ups) <= 3 else f"{', '.join(ups[:2])}, ... ({len(ups)})"
        launcher = f"torchrun x{inst.gpus}" if inst.trains and inst.gpus > 1 else "python"
        rows.append((inst.id, str(inst.gpus), launcher, shown or "-"))
    header = ("stage", "gpus", "launch", "upstream")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(3)]
    multi = sum(i.trains and i.gpus > 1 for i in instances)
    lines = [
        f"# {len(instances)} stage instances from {source}; {multi} launched under torchrun",
        *(
            f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d}"
            for a, b, c, d in [header, *rows]
        ),
    ]
    lines += [f"# problem: {p}" for p in problems(instances, device)]
    return "\n".join(lines)


def plan_main(argv: list[str]) -> int:
    """``python -m pipeline plan --params FILE [--set k=v ...] [--json]``: print, never train."""
    from pipeline.core.config import load_config

    parser = make_parser(
        "python -m pipeline plan",
        "Print every stage instance the parameters define, with GPUs and upstream stages.",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--dry-run", action="store_true", help="accepted; plan never runs")
    ns = parser.parse_args(argv)
    cfg = load_config(ns.params, ns.overrides)
    instances = plan(cfg)
    if ns.json:
        rows = [{k: v for k, v in asdict(i).items() if k != "contract"} for i in instances]
        print(json.dumps(rows, indent=2))
    else:
        print(format_plan(instances, ns.params, cfg.run.device))
    return 0
