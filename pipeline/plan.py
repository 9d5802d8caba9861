"""Every stage instance a parameter file defines, with its dependencies: the DAG of ``dvc.yaml``.

DVC expands the matrices of ``dvc.yaml`` itself; the Prefect flow and ``python -m pipeline plan``
need the same expansion without DVC, so it is written once, here. Instances are named as DVC
names them (``finetune@cifar10-rep_spectral-none-0``), and edges are derived the way DVC derives
them: an instance depends on every instance whose outputs it lists among its dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from pipeline.core import paths
from pipeline.stages.contract import Contract

# Stages that run the training loop, and so may run on several GPUs under torchrun.
TRAINING_STAGES = ("pretrain", "ssl", "finetune")
# Stages that need no accelerator at all.
CPU_STAGES = ("prepare", "report")


@dataclass
class StageInstance:
    """One node of the DAG: a stage module, its matrix item, and the ids it must wait for."""

    id: str  # DVC's name for it, e.g. ``attack_readout@digits_5to9-none``
    stage: str  # module under pipeline.stages
    item: dict
    upstream: list[str] = field(default_factory=list)
    gpus: int = 0  # processes/GPUs it runs on: train.gpus for training, 1 for model stages
    datasets: list[str] = field(default_factory=list)  # the data it reads, for display
    contract: Contract = field(default_factory=Contract)

    @property
    def products(self) -> list[str]:
        """Everything it writes that another stage may read (checkpoints are private)."""
        return [*self.contract.outs, *self.contract.metrics, *self.contract.plots]

    @property
    def cli_args(self) -> list[str]:
        return cli_args(self.item)


def cli_args(item: dict) -> list[str]:
    """``--key value`` arguments of ``python -m pipeline <stage>`` for a matrix item."""
    return [a for k, v in item.items() if v is not None for a in (f"--{k}", str(v))]


def _name(dvc_stage: str, values: list) -> str:
    return f"{dvc_stage}@{'-'.join(map(str, values))}" if values else dvc_stage


def _describe(data) -> str:
    return f"{data.source}:{data.root}" if data.root else data.source


def expand(cfg) -> list[tuple[str, str, dict]]:
    """``(id, stage, item)`` for every instance, in the order of dvc.yaml's stages and matrices."""
    out: list[tuple[str, str, dict]] = []
    for kind, names in (("prepare", cfg.prepare.embedded), ("prepare_raw", cfg.prepare.raw)):
        out += [(_name(kind, [d]), "prepare", {"dataset": d}) for d in names]
    out += [(_name("pretrain", [v]), "pretrain", {"variant": v}) for v in cfg.pretrain.run]
    if cfg.ssl is not None:
        out += [(_name("ssl", [v]), "ssl", {"variant": v}) for v in cfg.ssl.run]
    run = cfg.finetune.run
    finetune = list(itertools.product(run.targets, run.backbones, run.regularizers, run.seeds))
    readout = list(itertools.product(run.targets, run.backbones))
    keys_ft = ("target", "backbone", "regularizer", "seed")
    out += [(_name("finetune", v), "finetune", dict(zip(keys_ft, v))) for v in finetune]
    out += [(_name("readout", v), "readout", dict(zip(keys_ft, v))) for v in readout]
    out += [
        (_name("attack_finetune", v), "attack", {"kind": "finetune", **dict(zip(keys_ft, v))})
        for v in finetune
    ]
    out += [
        (_name("attack_readout", v), "attack", {"kind": "readout", **dict(zip(keys_ft, v))})
        for v in readout
    ]
    out.append(("report", "report", {}))
    return out


def _gpus_and_data(cfg, stage: str, item: dict) -> tuple[int, list[str]]:
    if stage == "prepare":
        out = cfg.prepare.outputs[item["dataset"]]
        return 0, [f"{out.source}:{out.root}" if out.root else f"{out.source} (embedded)"]
    if stage == "pretrain":
        return cfg.pretrain.train.gpus, [_describe(cfg.pretrain.data)]
    if stage == "ssl":
        return cfg.ssl.train.gpus, [_describe(cfg.ssl.data)]
    if stage == "report":
        return 0, []
    target = cfg.finetune.targets[item["target"]]
    gpus = target.train.gpus if stage == "finetune" else 1
    return gpus, [_describe(target.data)]


def _ancestors(path: str) -> list[str]:
    p = PurePosixPath(path)
    return [str(p), *(str(a) for a in p.parents if str(a) != ".")]


def plan(cfg) -> list[StageInstance]:
    """The DAG of ``cfg``: instances in a valid execution order, each naming its upstream ids."""
    instances = []
    for ident, stage, item in expand(cfg):
        contract = importlib.import_module(f"pipeline.stages.{stage}").contract(cfg, **item)
        gpus, datasets = _gpus_and_data(cfg, stage, item)
        instances.append(StageInstance(ident, stage, item, [], gpus, datasets, contract))
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


def missing_inputs(instances: list[StageInstance]) -> dict[str, list[str]]:
    """Raw-data dependencies not on disk: ``path -> [ids]``.

    Code and generated paths (artifacts/, metrics/, reports/) are not inputs the user supplies.
    """
    generated = {str(p) for p in (paths.ARTIFACTS, paths.METRICS, paths.REPORTS)}
    missing: dict[str, list[str]] = {}
    for inst in instances:
        for dep in inst.contract.deps:
            top = PurePosixPath(dep).parts[0]
            if top == "pipeline" or top in generated or Path(dep).exists():
                continue
            missing.setdefault(dep, []).append(inst.id)
    return missing


def format_plan(instances: list[StageInstance], source: str) -> str:
    """A table: id, GPUs, datasets read, upstream ids; then any input missing on disk."""
    rows = []
    for inst in instances:
        ups = inst.upstream
        shown = ", ".join(ups) if len(ups) <= 3 else f"{', '.join(ups[:2])}, ... ({len(ups)})"
        rows.append((inst.id, str(inst.gpus), ", ".join(inst.datasets) or "-", shown or "-"))
    widths = [max(len(r[c]) for r in [("stage", "gpus", "datasets", ""), *rows]) for c in range(3)]
    multi = sum(i.gpus > 1 for i in instances)
    lines = [
        f"# {len(instances)} stage instances from {source}; "
        f"{multi} on more than one GPU (launched under torchrun)",
        f"{'stage':<{widths[0]}}  {'gpus':>{widths[1]}}  {'datasets':<{widths[2]}}  upstream",
    ]
    lines += [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
    for dep, ids in missing_inputs(instances).items():
        more = ", ..." if len(ids) > 3 else ""
        lines.append(f"# missing input: {dep} (read by {', '.join(ids[:3])}{more})")
    return "\n".join(lines)


def plan_main(argv: list[str]) -> int:
    """``python -m pipeline plan --params FILE [--set k=v ...] [--json]``: print, never train."""
    from pipeline.core.config import load_config

    parser = argparse.ArgumentParser(
        prog="python -m pipeline plan",
        description="Print every stage instance the parameters define, with datasets and GPUs.",
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--dry-run", action="store_true", help="accepted for symmetry; plan never runs"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    ns = parser.parse_args(argv)
    cfg = load_config(ns.params, ns.overrides)
    instances = plan(cfg)
    if ns.json:
        rows = [{k: v for k, v in asdict(i).items() if k != "contract"} for i in instances]
        print(json.dumps(rows, indent=2))
    else:
        print(format_plan(instances, ns.params))
    return 0
