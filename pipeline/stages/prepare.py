"""``prepare``: write one configured dataset (all its splits) as webdataset shards.

Embedded datasets (scikit-learn's digits) need no files; raw ones are read from
``data/<name>``, which their DVC stage (``prepare_raw``) declares as a dependency.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline import paths
from pipeline.data import open_source, write_shards
from pipeline.errors import ConfigError
from pipeline.io import write_json
from pipeline.stages.contract import BASE_CODE, Contract

log = logging.getLogger(__name__)


def contract(cfg, dataset: str) -> Contract:
    raw = [f"data/{dataset}"] if dataset in cfg.prepare.raw else []
    return Contract(
        params=[f"prepare.outputs.{dataset}", "prepare.maxcount"],
        deps=[*BASE_CODE, "pipeline/stages/prepare.py", "pipeline/data", *raw],
        outs=[str(paths.prepared(dataset))],
        metrics=[str(paths.stage_metrics("prepare", f"{dataset}.json"))],
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
