"""One row per transfer variant (kind, target, backbone[, finetune regularizer]): seeds aggregated."""

from __future__ import annotations

import math
from collections import defaultdict

from pipeline.report.collect import AttackedModel
from pipeline.report.samples import read_distances
from pipeline.report.stats import IntervalOptions, mean_std, stratified_mean_interval

IDENTITY = ("stage", "target", "backbone", "regularizer", "seed")


def group_models(models: list[AttackedModel]) -> dict[tuple[str, str, str], list[AttackedModel]]:
    """(kind, target, variant) -> its models ordered by seed; groups in a stable sorted order."""
    groups: dict[tuple[str, str, str], list[AttackedModel]] = defaultdict(list)
    for m in models:
        groups[(m.kind, m.target, m.variant)].append(m)
    return {
        k: sorted(v, key=lambda m: (m.seed is None, m.seed or 0)) for k, v in sorted(groups.items())
    }


def summarize_variants(
    models: list[AttackedModel],
    methods: list[str],
    budgets: list[int],
    options: IntervalOptions,
) -> list[dict]:
    """Per variant: ``<field>_mean``/``_std`` over seeds of every numeric field of the model rows.

    Also ``n`` (models, one per seed), ``test_acc_low``/``_high`` (t-interval over seeds, NaN with
    one seed) and ``delta_low``/``_high``: the interval of the mean best-over-methods distance from
    the per-sample CSVs (``options``; NaN without samples).
    """
    out = []
    for (kind, target, variant), members in group_models(models).items():
        rows = [m.row(methods, budgets) for m in members]
        first = members[0]
        summary = {
            "kind": kind,
            "target": target,
            "variant": variant,
            "backbone": first.backbone,
            "regularizer": first.regularizer,
            "n": len(members),
            "attacked": sum(bool(m.attack) for m in members),
        }
        for field in rows[0]:
            if field in IDENTITY:
                continue
            summary[f"{field}_mean"], summary[f"{field}_std"] = mean_std(r[field] for r in rows)
        acc = stratified_mean_interval(
            [[m.test_acc] for m in members if m.test_acc is not None], "t"
        )
        summary["test_acc_low"], summary["test_acc_high"] = acc.low, acc.high
        strata = [list(read_distances(m.samples).values()) for m in members]
        delta = options(strata) if any(strata) else None
        summary["delta_low"] = delta.low if delta else math.nan
        summary["delta_high"] = delta.high if delta else math.nan
        out.append(summary)
    return out
