"""CLI: ``python -m pipeline <stage> [--params FILE] [--set section.key=value ...] [stage args]``.

A problem the user can fix (bad parameter, missing dataset) prints one line and exits with
status 2 before any work starts; nothing already written is touched.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from pipeline.errors import PipelineError

STAGE_ARGS = {
    "prepare": ["dataset"],
    "pretrain": ["variant"],
    "ssl": ["variant"],
    "finetune": ["target", "backbone", "regularizer", "seed"],
    "readout": ["target", "backbone"],
    "attack": ["kind", "target", "backbone", "regularizer", "seed"],
    "report": [],
}
OPTIONAL = {"attack": {"regularizer", "seed"}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="stage")
    for stage, args in STAGE_ARGS.items():
        p = sub.add_parser(stage, help=f"run the {stage} stage")
        p.add_argument(
            "--params", default="params.yaml", help="parameter file (default params.yaml)"
        )
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a parameter, e.g. --set pretrain.train.epochs=5 (repeatable)",
        )
        p.add_argument("--dry-run", action="store_true", help="validate and print what would run")
        for a in args:
            p.add_argument(
                f"--{a}",
                required=a not in OPTIONAL.get(stage, set()),
                type=int if a == "seed" else str,
            )
    sub.add_parser("shard", help="write any dataset source to webdataset shards", add_help=False)
    sub.add_parser("plan", help="print every stage instance the parameters define", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if argv and argv[0] == "shard":
            from pipeline.data.shard_cli import shard_main

            return shard_main(argv[1:])
        if argv and argv[0] == "plan":
            from pipeline.plan import plan_main

            return plan_main(argv[1:])
        ns = build_parser().parse_args(argv)
        from pipeline.config import load_config

        cfg = load_config(ns.params, ns.overrides)
        item = {a: getattr(ns, a) for a in STAGE_ARGS[ns.stage]}
        module = importlib.import_module(f"pipeline.stages.{ns.stage}")
        if ns.dry_run:
            contract = module.contract(cfg, **item)
            print(json.dumps({"stage": ns.stage, **item, **contract.__dict__}, indent=2))
            return 0
        module.run(cfg, **item)
        return 0
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
