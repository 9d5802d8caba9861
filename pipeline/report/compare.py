"""Paired comparison of every regularized variant with the unregularized baseline.

The attack draws its samples from a permutation of the test split fixed by (attack seed, finetune
seed), independent of the model, and each model keeps the first ones it classifies correctly; so
two models of one seed attacked mostly the same test points. Pairing the distances on (seed,
test-split index) removes the point-to-point spread of Δ from the comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.report.collect import AttackedModel
from pipeline.report.samples import BEST, read_distances
from pipeline.report.stats import Interval, IntervalOptions, stratified_mean_interval
from pipeline.report.variants import group_models


@dataclass(frozen=True)
class PairedComparison:
    kind: str
    target: str
    variant: str
    baseline: str
    method: str  # an attack method, or "best" (best over methods per sample)
    delta: Interval  # of Δ(variant) − Δ(baseline) over paired samples; n = pairs, strata = seeds
    accuracy: Interval  # of test accuracy (variant) − (baseline) over the common seeds


def baseline_variant(kind: str, baseline: str) -> str:
    """The variant every other is compared with: no regularizer anywhere."""
    return baseline if kind == "readout" else f"{baseline}/{baseline}"


def paired_differences(
    models: list[AttackedModel], baselines: list[AttackedModel], method: str = BEST
) -> list[np.ndarray]:
    """Per seed both have: Δ(model) − Δ(baseline) on the test indices both attacked (sorted).

    Seeds without a common finite sample are left out.
    """
    by_seed = {b.seed: b for b in baselines}
    out = []
    for m in models:
        base = by_seed.get(m.seed)
        if base is None:
            continue
        a, b = read_distances(m.samples, method), read_distances(base.samples, method)
        diffs = [a[i] - b[i] for i in sorted(a.keys() & b.keys())]
        diffs = np.asarray([d for d in diffs if math.isfinite(d)], dtype=float)
        if diffs.size:
            out.append(diffs)
    return out


def accuracy_differences(models: list[AttackedModel], baselines: list[AttackedModel]) -> list:
    by_seed = {b.seed: b for b in baselines}
    return [
        m.test_acc - by_seed[m.seed].test_acc
        for m in models
        if m.seed in by_seed and m.test_acc is not None and by_seed[m.seed].test_acc is not None
    ]


def compare_with_baseline(
    models: list[AttackedModel],
    methods: list[str],
    options: IntervalOptions,
    baseline: str = "none",
) -> list[PairedComparison]:
    """Every non-baseline variant against its target's baseline, for ``best`` and each method.

    Accuracy: the mean over common seeds of the accuracy difference, with a t-interval over seeds
    (none with one seed). Rows whose method paired no sample are left out.
    """
    groups = group_models(models)
    out = []
    for (kind, target, variant), members in groups.items():
        base_name = baseline_variant(kind, baseline)
        base = groups.get((kind, target, base_name))
        if variant == base_name or base is None:
            continue
        acc = stratified_mean_interval([[d] for d in accuracy_differences(members, base)], "t")
        for method in (BEST, *methods):
            delta = options(paired_differences(members, base, method))
            if delta.n:
                out.append(PairedComparison(kind, target, variant, base_name, method, delta, acc))
    return out
