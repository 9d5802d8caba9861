"""``prepare``: write one configured dataset (all its splits) as webdataset shards.

Embedded datasets (scikit-learn's digits) need no files; raw ones are read from
``data/<name>``, which their DVC stage (``prepare_raw``) declares as a dependency.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.core import paths
from pipeline.core.errors import ConfigError
from pipeline.core.io import write_json
from pipeline.data import open_source, write_shards
from pipeline.stages.spec import Arg, StageSpec

log = logging.getLogger(__name__)


ARGS = (Arg("dataset", help="a name under prepare.outputs"),)
_PREPARE = {
    "command": "prepare",
    "matrix": {"dataset": "prepare.embedded"},
    "params": ("prepare.outputs.{dataset}", "prepare.maxcount"),
    "code": ("pipeline/data",),
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
    # Open every split first, so a missing dataset fails before anything is written.
    opened = {
        split: open_source(out.source, Path(out.root) if out.root else None, split, **out.options)
        for split in out.splits
    }
    summary = {}
    for split, data in opened.items():
        meta = write_shards(
            data, paths.prepared(dataset) / split, maxcount=cfg.prepare.maxcount, source=out.source
        )
        summary[split] = {"samples": meta["num_samples"], "classes": len(meta["classes"])}
        log.info("prepared %s/%s: %d samples", dataset, split, meta["num_samples"])
    write_json(paths.stage_metrics("prepare", f"{dataset}.json"), summary)
    return summary
