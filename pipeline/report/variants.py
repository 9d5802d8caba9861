"""One row per transfer variant (kind, target, backbone[, finetune regularizer]): runs aggregated.

Averages respect the nesting: a pretraining seed's finetuning runs are averaged first, then the
pretraining seeds (the unit of replication), so ``_std`` is the spread between pretraining runs.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from pipeline.report.collect import AttackedModel
from pipeline.report.primary import group
from pipeline.report.samples import read_distances
from pipeline.report.stats import mean_std

IDENTITY = ("stage", "target", "backbone", "backbone_seed", "regularizer", "seed")


def _unit_means(rows: list[dict], seeds: list[int], field: str) -> list[float]:
    """Per pretraining seed, the mean of ``field`` over its finetuning runs (None/NaN skipped)."""
    by_seed: dict[int, list[float]] = defaultdict(list)
    for seed, row in zip(seeds, rows, strict=True):
        v = row.get(field)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            by_seed[seed].append(float(v))
    return [float(np.mean(v)) for _, v in sorted(by_seed.items()) if v]


def summarize_variants(
    models: list[AttackedModel], methods: list[str], budgets: list[int], primary: str
) -> list[dict]:
    """Per variant: ``<field>_mean``/``_std`` over pretraining seeds of every numeric field of the
    model rows; ``n`` (pretraining seeds), ``runs`` (models) and ``censored`` (samples the
    ``primary`` attack did not fool, kept as Δ = inf by the comparisons)."""
    out = []
    for (kind, target, variant), members in group(models).items():
        rows = [m.row(methods, budgets) for m in members]
        seeds = [m.backbone_seed for m in members]
        first = members[0]
        summary = {
            "kind": kind,
            "target": target,
            "variant": variant,
            "backbone": first.backbone,
            "regularizer": first.regularizer,
            "n": len(set(seeds)),
            "runs": len(members),
            "attacked": sum(bool(m.attack) for m in members),
            "censored": sum(
                sum(math.isinf(d) for d in read_distances(m.samples, primary).values())
                for m in members
            ),
        }
        for field in rows[0]:
            if field in IDENTITY:
                continue
            summary[f"{field}_mean"], summary[f"{field}_std"] = mean_std(
                _unit_means(rows, seeds, field)
            )
        out.append(summary)
    return out
