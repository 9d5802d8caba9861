"""``prepare``: write one configured dataset (all its splits) as webdataset shards.

Embedded datasets (scikit-learn's digits) need no files; raw ones are read from
``data/<name>``, which their DVC stage (``prepare_raw``) declares as a dependency.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

from pipeline.core import paths
from pipeline.core.errors import ConfigError
from pipeline.core.io import TEMP_MARK, write_json
from pipeline.core.progress import Progress
from pipeline.data import open_source, write_shards
from pipeline.data.shard_writer import replace_dir
from pipeline.data.shards import META_FILE
from pipeline.stages.spec import Arg, StageSpec

log = logging.getLogger(__name__)


ARGS = (Arg("dataset", help="a name under prepare.outputs"),)
_PREPARE = {
    "command": "prepare",
    "matrix": {"dataset": "prepare.embedded"},
    "params": ("prepare.outputs.{dataset}", "prepare.maxcount"),
    "outs": (str(paths.prepared("{dataset}")),),
    "metrics": (str(paths.stage_metrics("prepare", "{dataset}.json")),),
}
STAGES = (
    # Embedded datasets (scikit-learn's digits) need no files.
    StageSpec(name="prepare", **_PREPARE),
    # Raw datasets read data/<name>, so a new version of it re-runs the stage.
    StageSpec(
        name="prepare_raw",
        **{**_PREPARE, "matrix": {"dataset": "prepare.raw"}, "deps": ("data/{dataset}",)},
    ),
)


def run(cfg, dataset: str) -> dict:
    if dataset not in cfg.prepare.outputs:
        allowed = ", ".join(cfg.prepare.outputs) or "(none)"
        raise ConfigError(f"--dataset {dataset!r} is not in prepare.outputs; allowed: {allowed}")
    out = cfg.prepare.outputs[dataset]
    # The raw-data root exists from the first run on, so data.dvc (which records it empty until
    # `dvc add data`) is up to date and a user sees where datasets go.
    paths.RAW.mkdir(exist_ok=True)
    # Open every split first, so a missing dataset fails before anything is written.
    opened = {
        split: open_source(out.source, Path(out.root) if out.root else None, split, **out.options)
        for split in out.splits
    }
    target = paths.prepared(dataset)
    _check_replaceable(target)
    # Every split goes into a hidden sibling; it replaces the dataset only once all are written,
    # so a failure (a corrupt image in the last split) leaves the previous dataset whole.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    summary = {}
    total = sum(len(data) for data in opened.values())
    try:
        with Progress(f"prepare {dataset}", total, "images", enabled=cfg.run.progress) as progress:
            for split, data in opened.items():
                before = sum(s["samples"] for s in summary.values())
                meta = write_shards(
                    data,
                    staging / split,
                    maxcount=cfg.prepare.maxcount,
                    source=out.source,
                    shuffle_seed=out.shuffle_seed,
                    progress=lambda n, b=before, s=split: progress.update(b + n, split=s),
                )
                summary[split] = {"samples": meta["num_samples"], "classes": len(meta["classes"])}
                log.info("prepared %s/%s: %d samples", dataset, split, meta["num_samples"])
        replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_json(paths.stage_metrics("prepare", f"{dataset}.json"), summary)
    return summary


def _check_replaceable(target: Path) -> None:
    """Only an earlier prepared dataset (or nothing) may be replaced: never unrelated files."""
    if not target.exists():
        return
    entries = [e for e in target.iterdir()] if target.is_dir() else None
    if entries is None or any(not (e / META_FILE).is_file() for e in entries):
        raise ConfigError(
            f"prepared dataset {target} exists but is not one (each entry must be a shard set "
            f"with {META_FILE}); move it away"
        )
