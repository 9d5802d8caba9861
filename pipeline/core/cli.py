"""The command lines' shared parts: one-line errors and the ``--params`` / ``--set`` options.

Every CLI of the project (stages, plan, shard, dvc-yaml, experiments, flows) builds its parser
here, so a usage mistake prints one line (``error: ... (see --help)``) and exits with status 2,
like every other user error.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.core.errors import PipelineError


class UsageError(PipelineError):
    """A command line the parser cannot read."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line naming the problem, and raises instead of exiting."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see --help)")


def make_parser(prog: str, description: str, params: bool = True) -> OneLineParser:
    parser = OneLineParser(prog=prog, description=description)
    if params:
        add_params_options(parser)
    return parser


def add_params_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params", default="params.yaml", help="parameter file (default params.yaml)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, e.g. --set pretrain.train.epochs=5 (repeatable)",
    )


def fail(exc: PipelineError) -> int:
    """Print a user error as one line; its exit status."""
    print(f"error: {exc}", file=sys.stderr)
    return exc.exit_code
