"""CLI: ``python -m pipeline.experiments <xor|digits_mlp|strength_sweep|diagnostics|summary>``.

Run from the repository root (the DVC stages in ``experiments/dvc.yaml`` ``cd ..`` first); every
path in the params file is relative to it. A problem the user can fix prints one line and exits
with status 2.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import sys
import time

from threadpoolctl import threadpool_limits

from pipeline.core.cli import Parser, add_params_options, report
from pipeline.core.errors import PipelineError

COMMANDS = ("xor", "digits_mlp", "strength_sweep", "diagnostics", "summary")


def build_parser() -> Parser:
    parser = Parser(prog="python -m pipeline.experiments", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=COMMANDS)
    add_params_options(parser, default="experiments/params.yaml")
    parser.add_argument("--backbone", help="diagnostics: only this backbone (default: all)")
    return parser


def tune_malloc() -> None:
    """Keep freed memory in the process instead of returning it to the OS (glibc only).

    The attack allocates and frees many multi-megabyte buffers (probe batches, hidden
    activations); with glibc's defaults each one is a fresh ``mmap`` whose pages fault in again,
    which measured as more system than user CPU time. Raising the mmap and trim thresholds
    makes those buffers reuse the heap: the same results for about half the CPU time.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)  # glibc's maximum on 64-bit
    libc.mallopt(m_trim_threshold, 1 << 30)


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from pipeline.experiments.config import load_experiments_config
        from pipeline.experiments.util import set_threads

        cfg = load_experiments_config(ns.params, ns.overrides)
        tune_malloc()
        set_threads(cfg.run.threads)
        t0 = time.process_time()
        with threadpool_limits(cfg.run.threads):  # scikit-learn's BLAS too, not only torch
            _dispatch(ns, cfg)
        logging.getLogger("pipeline.experiments").info(
            "%s: %.1f s CPU in this process", ns.command, time.process_time() - t0
        )
        return 0
    except PipelineError as exc:
        return report(exc)


def _dispatch(ns: argparse.Namespace, cfg) -> None:
    """Import only the module the command needs (the stages depend on different code)."""
    if ns.command == "xor":
        from pipeline.experiments import xor

        xor.run(cfg)
    elif ns.command == "digits_mlp":
        from pipeline.experiments import digits_mlp

        digits_mlp.run(cfg)
    elif ns.command == "strength_sweep":
        from pipeline.experiments import strength_sweep

        strength_sweep.run(cfg)
    elif ns.command == "diagnostics":
        from pipeline.experiments import diagnostics

        diagnostics.run(cfg, ns.backbone)
    else:
        from pipeline.experiments import summary

        summary.run(cfg)


if __name__ == "__main__":
    sys.exit(main())
