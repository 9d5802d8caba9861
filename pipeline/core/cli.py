"""What every command line of the project shares: one-line usage errors and ``--params``/``--set``.

argparse prints the whole usage block before its error, several lines a user has to scroll
through; here a usage error is one line, ``error: <message> (see --help)``, with exit status 2,
the same shape as every :class:`~pipeline.core.errors.PipelineError`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from pipeline.core.errors import PipelineError

# Left out of every stage's code deps (pipeline.core.codedeps):
NOT_A_STAGE_DEPENDENCY = (
    "how a command line is parsed and its help text: never what a stage computes"
)


def one_line(text: object) -> str:
    """Collapse whitespace (argparse wraps long choice lists) so a message stays on one line."""
    return " ".join(str(text).split())


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and exit with status 2.

    Sub-command parsers made by ``add_subparsers`` are of this class too (argparse uses the
    parent's class), so errors of a sub-command look the same.
    """

    def error(self, message: str) -> NoReturn:
        print(f"error: {one_line(message)} (see --help)", file=sys.stderr)
        self.exit(2)


def add_params_options(parser: argparse.ArgumentParser, default: str = "params.yaml") -> None:
    """``--params FILE`` and repeatable ``--set section.key=value`` (dest ``overrides``)."""
    parser.add_argument("--params", default=default, help=f"parameter file (default {default})")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, e.g. --set pretrain.train.epochs=5 (repeatable)",
    )


def report(exc: PipelineError) -> int:
    """Print a user-fixable error as one line on stderr; return its exit status."""
    print(f"error: {one_line(exc)}", file=sys.stderr)
    return exc.exit_code


def make_parser(prog: str, description: str, params: bool = True) -> Parser:
    """A one-line-error parser, with ``--params``/``--set`` unless ``params`` is False."""
    parser = Parser(prog=prog, description=description)
    if params:
        add_params_options(parser)
    return parser


def quiet_broken_pipe() -> int:
    """The reader of stdout went away (``... | head``): exit quietly, as a shell tool does.

    stdout is pointed at /dev/null so the interpreter's final flush does not raise again;
    the status is the shell's for a process ended by SIGPIPE (128 + 13).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141
