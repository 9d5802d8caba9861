"""``python -m pipeline shard``: write one split of a source as webdataset shards.

Kept apart from ``pipeline.__main__`` so the CLI dispatcher only has to call ``shard_main``, and
out of ``pipeline/data`` (the library it drives) so that a stage importing all of that library
depends on it as one folder, not file by file: a tool no stage runs is no stage's dependency.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pipeline.core.cli import Parser, report
from pipeline.core.errors import ConfigError, PipelineError
from pipeline.core.io import resource_errors
from pipeline.data.shard_writer import write_shards
from pipeline.data.sources import available_sources, open_source


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as JSON when it parses (``16``, ``[5,6]``, ``true``),
    else kept as a string, so list and number options need no per-source parsing."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--option expects key=value; got {text!r}")
    try:
        return key, json.loads(raw)
    except ValueError:
        lowered = raw.strip().lower()
        if lowered in ("true", "false"):
            return key, lowered == "true"
        return key, raw


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m pipeline shard",
        description="Write one split of a dataset source as webdataset shards (PNG + label).",
    )
    parser.add_argument("source", help=f"one of: {', '.join(available_sources())}")
    parser.add_argument("--root", default=None, help="dataset root (unused for digits)")
    parser.add_argument("--split", default="train", help="split to write (default: train)")
    parser.add_argument("--out", required=True, help="output directory, replaced atomically")
    parser.add_argument("--maxcount", type=int, default=10000, help="samples per shard")
    parser.add_argument("--prefix", default="shard", help="shard file name prefix")
    parser.add_argument("--workers", type=int, default=0, help="decode/encode processes")
    parser.add_argument(
        "--option",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="source options (e.g. --option classes=[5,6,7,8,9] image_size=16); repeatable",
    )
    return parser


def shard_main(argv: Sequence[str] | None = None) -> int:
    """Run the command; a ``PipelineError`` is printed as one line and gives its exit code."""
    args = build_parser().parse_args(argv)
    try:
        options = dict(parse_option(o) for o in args.option)
        dataset = open_source(args.source, args.root, args.split, **options)
        # The set is written beside --out and renamed into place: a refused write keeps the old.
        with resource_errors(args.out, kept="the previous shard set (if any) is intact"):
            meta = write_shards(
                dataset,
                args.out,
                maxcount=args.maxcount,
                prefix=args.prefix,
                source=args.source,
                extra_meta={"split": args.split, "options": options},
                num_workers=args.workers,
            )
    except PipelineError as e:
        return report(e)
    print(
        f"wrote {meta['num_samples']} samples ({len(meta['classes'])} classes) "
        f"in {meta['num_shards']} shard(s) to {args.out}"
    )
    return 0
