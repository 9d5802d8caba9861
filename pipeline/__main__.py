"""CLI: ``python -m pipeline <stage> [--params FILE] [--set section.key=value ...] [stage args]``.

Also ``plan`` (every stage instance of a parameter file), ``shard`` (any source to webdataset
shards), ``dvc-yaml`` (regenerate ``dvc.yaml`` from the stage declarations) and ``use-params``
(write a setting file, composed, into ``params.yaml``).

A problem the user can fix (bad parameter, missing dataset) prints one line and exits with
status 2 before any work starts; nothing already written is touched. A training stage with
``train.gpus`` > 1 relaunches itself under torchrun (:mod:`pipeline.core.launch`).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from contextlib import nullcontext

from pipeline.core import launch, paths
from pipeline.core.cli import make_parser, quiet_broken_pipe, report
from pipeline.core.errors import ConfigError, PipelineError, ResourceError
from pipeline.core.io import describe_resource_error, resource_cause, resource_errors

# Left out of every stage's code deps (pipeline.core.codedeps):
NOT_A_STAGE_DEPENDENCY = (
    "the CLI entry: it validates the config (pipeline.core.config, a dependency of every stage)"
    " and calls the stage's run; how it starts, locks and logs changes no result"
)

log = logging.getLogger("pipeline")
# Results worth a line in the log (and in the Prefect UI) when a stage finishes.
HEADLINE = ("test_acc", "knn_acc", "readout_acc", "mean_distance", "success_rate", "samples")
TOOLS = {
    "plan": "pipeline.plan:plan_main",
    "shard": "pipeline.shard_tool:shard_main",
    "dvc-yaml": "pipeline.dvcyaml:main",
    "use-params": "pipeline.core.workspace:use_params_main",
}


def _usage() -> str:
    from pipeline.stages.registry import COMMANDS

    rows = [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    rows += [f"  {name:<10} (tool)" for name in TOOLS]
    return "usage: python -m pipeline <stage> [--params FILE] [--set K=V ...] [args]\n" + "\n".join(
        rows
    )


def _stage_module(command: str):
    """Only the named stage's module is imported, so a stage depends on no other stage."""
    if not command.isidentifier() or importlib.util.find_spec(f"pipeline.stages.{command}") is None:
        from pipeline.stages.registry import COMMANDS

        allowed = ", ".join([*COMMANDS, *TOOLS])
        raise ConfigError(f"unknown stage {command!r}; allowed: {allowed} (see --help)")
    module = importlib.import_module(f"pipeline.stages.{command}")
    if not hasattr(module, "STAGES"):
        raise ConfigError(f"{command!r} is not a stage (see --help)")
    return module


def _spec_for(module, item: dict):
    """The DVC stage this item belongs to (attack: by its kind)."""
    for spec in module.STAGES:
        if all(item.get(k) == v for k, v in spec.fixed.items()):
            return spec
    return None


def _written_folders(spec, item: dict, dump: dict) -> list[str]:
    """Where the instance writes (outputs, checkpoints): stale temporary files are cleaned."""
    from pathlib import Path

    from pipeline.stages.spec import contract, fill

    if spec is None:
        return []
    try:
        products = contract(spec, item, dump).products
        private = [fill(t, item, dump) for t in spec.private]
    except KeyError:
        return []
    return sorted({str(Path(p).parent) for p in products} | set(private))


def _outputs_text(spec, item: dict, dump: dict, ident: str) -> str:
    """``the outputs of IDENT (a, b)``: what a stage instance writes, for error messages."""
    from pipeline.stages.spec import contract

    try:
        products = contract(spec, item, dump).products if spec is not None else []
    except KeyError:
        products = []
    return f"the outputs of {ident}" + (f" ({', '.join(products)})" if products else "")


def _check_item(module, item: dict) -> None:
    """Names given on the command line become path components, seeds reach the generators:
    both are checked before anything is created (a name's membership is the stage's check)."""
    from pipeline.core.config import check_name
    from pipeline.core.config_rules import check_seed

    for arg in module.ARGS:
        value = item[arg.name]
        if value is None:
            continue
        if arg.type is str:
            try:
                check_name(value)
            except ValueError as exc:
                raise ConfigError(f"--{arg.name}: {exc}") from None
        elif arg.type is int and arg.name.endswith("seed"):
            check_seed(f"--{arg.name}", value)


def _check_writes_inside(spec, item: dict, dump: dict, ident: str) -> None:
    """Every folder the instance creates (its lock, outputs, checkpoints) lies in the workspace,
    checkpoints possibly in ``$PIPELINE_CHECKPOINT_DIR``: checked before the lock is taken."""
    import os

    paths.check_inside(paths.run_dir(ident), "run folder")
    if spec is None:
        return
    from pipeline.stages.spec import contract, fill

    try:
        products = contract(spec, item, dump).products
        private = [fill(t, item, dump) for t in spec.private]
    except KeyError:  # a name the item gives does not exist: the stage's own check says which
        return
    for product in products:
        paths.check_inside(product, "output")
    shared = os.environ.get(paths.CHECKPOINT_DIR_ENV)
    for folder in private:
        paths.check_inside(folder, "checkpoint folder", (shared,) if shared else ())


def run_stage(command: str, argv: list[str]) -> int:
    from pipeline.core.config import load_config
    from pipeline.core.config_rules import check_reads
    from pipeline.stages.spec import contract, gpus, instance_id

    module = _stage_module(command)
    parser = make_parser(f"python -m pipeline {command}", module.__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="validate and print what would run")
    for arg in module.ARGS:
        parser.add_argument(f"--{arg.name}", type=arg.type, required=arg.required, help=arg.help)
    ns = parser.parse_args(argv)
    cfg = load_config(ns.params, ns.overrides)
    item = {a.name: getattr(ns, a.name) for a in module.ARGS}
    _check_item(module, item)
    spec = _spec_for(module, item)
    dump = cfg.model_dump(mode="json")
    if spec is not None:
        try:
            reads = contract(spec, item, dump).params
        except KeyError:  # a name the item gives does not exist: the stage's own check says
            reads = []
        check_reads(cfg, reads)  # cross-key rules, for the values this instance reads
    ident = instance_id(spec, item) if spec else command
    _check_writes_inside(spec, item, dump, ident)
    if ns.dry_run:
        try:
            shown = contract(spec, item, dump).as_dvc() if spec else {}
        except KeyError as exc:
            raise ConfigError(f"{exc.args[0]}: no such parameter for this item") from None
        print(json.dumps({"stage": command, **item, **shown}, indent=2))
        return 0
    try:
        nproc = gpus(spec, item, dump) if spec else 0
    except KeyError:  # a name the item gives does not exist: the stage's own check says which
        nproc = 1
    relaunch = spec is not None and spec.trains and nproc > 1 and not launch.under_torchrun()
    if relaunch:
        launch.check_devices(nproc, cfg.run.device, what=ident)
    # One process per instance at a time (torchrun's children run under their launcher's lock).
    from pipeline.core.runlock import hold_run_lock

    if launch.under_torchrun():
        lock = nullcontext()
    else:
        lock = hold_run_lock(paths.run_dir(ident), clean=_written_folders(spec, item, dump))
    with lock:
        if relaunch:
            return launch.relaunch([command, *argv], nproc, ident)
        t0 = time.perf_counter()
        # A refused write the stage did not name itself (a shard tar, a figure) names its outputs.
        with resource_errors(_outputs_text(spec, item, dump, ident), writing=False):
            summary = module.run(cfg, **item) or {}
    shown = {k: summary[k] for k in HEADLINE if isinstance(summary.get(k), (int, float))}
    log.info("%s finished in %.1f s %s", ident, time.perf_counter() - t0, shown or "")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(_usage())
            return 0 if argv else 2
        command, rest = argv[0], argv[1:]
        if command in TOOLS:
            module, func = TOOLS[command].split(":")
            code = getattr(importlib.import_module(module), func)(rest)
            sys.stdout.flush()  # a closed pipe shows here, inside the handler below
            return code
        code = run_stage(command, rest)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except PipelineError as exc:
        launch.record_child_error(exc)
        return report(exc)
    except BrokenPipeError:
        return quiet_broken_pipe()
    except Exception as exc:  # disk full, read-only, file-size limit anywhere: one line too
        cause = resource_cause(exc)
        if cause is None:
            raise
        error = ResourceError(describe_resource_error(cause, None, writing=False))
        launch.record_child_error(error)
        return report(error)


if __name__ == "__main__":
    sys.exit(main())
