"""CLI: ``python -m pipeline.experiments <xor|digits_mlp|diagnostics|summary> [--params FILE]``.

Run from the repository root (the DVC stages in ``experiments/dvc.yaml`` ``cd ..`` first); every
path in the params file is relative to it. A problem the user can fix prints one line and exits
with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from pipeline.errors import PipelineError

COMMANDS = ("xor", "digits_mlp", "diagnostics", "summary")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.experiments", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--params", default="experiments/params.yaml")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a parameter, e.g. --set xor.epochs=300 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--backbone", help="diagnostics: only this backbone (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from pipeline.experiments.common import set_threads
        from pipeline.experiments.config import load_experiments_config

        cfg = load_experiments_config(ns.params, ns.overrides)
        set_threads(cfg.run.threads)
        t0 = time.process_time()
        if ns.command == "xor":
            from pipeline.experiments import xor

            xor.run(cfg)
        elif ns.command == "digits_mlp":
            from pipeline.experiments import digits_mlp

            digits_mlp.run(cfg)
        elif ns.command == "diagnostics":
            from pipeline.experiments import diagnostics

            diagnostics.run(cfg, ns.backbone)
        else:
            from pipeline.experiments import summary

            summary.run(cfg)
        logging.getLogger("pipeline.experiments").info(
            "%s: %.1f s CPU in this process", ns.command, time.process_time() - t0
        )
        return 0
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
