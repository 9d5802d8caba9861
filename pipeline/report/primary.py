"""The report's declared test: each variant against the baseline, at the unit of replication.

Declared in ``report.primary`` before anything runs (``params.yaml``): the attack, the statistic
(log ratio of mean Δ on shared samples), the direction, the test over pretraining seeds, the
level, the accuracy non-inferiority margin and the claimed ratio. For every (kind, target):

* one paired test per non-baseline variant over the pretraining seeds both have (finetuning seeds
  and test samples nested inside each), with a hierarchical bootstrap interval
  (:func:`pipeline.report.inference.paired_test`); censored samples (not fooled within the budget)
  are kept, never dropped;
* Holm's adjustment across the variants of that kind and target;
* accuracy as non-inferiority at the margin (one-sided t lower bound over seeds);
* per model, whether its Δ has converged in the query budget; a variant with an unconverged model
  on either side of its comparison gets no verdict and no rank.

Verdicts (no verdict from the sign of a mean): **yes** when the Holm-adjusted test passes, the
estimated ratio reaches ``min_ratio`` and accuracy is non-inferior; **partly** names the part that
passed when the test passes but one of the other two does not; **no** when the test does not
pass; **not testable** with fewer than two seeds; **not converged** as above.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from pipeline.report.collect import AttackedModel
from pipeline.report.inference import (
    Convergence,
    NonInferiority,
    TestResult,
    Unit,
    convergence,
    holm,
    non_inferiority,
    paired_test,
    power_paired_t,
)
from pipeline.report.samples import read_budget_distances, read_distances

YES, PARTLY, NO = "yes", "partly", "no"
UNTESTABLE, UNCONVERGED = "not testable", "not converged"


def baseline_variant(kind: str, baseline: str) -> str:
    """The variant every other is compared with: no regularizer anywhere."""
    return baseline if kind == "readout" else f"{baseline}/{baseline}"


def compared_with(kind: str, backbone: str, baseline: str, baselines: dict) -> str | None:
    """The variant a model of ``backbone`` is compared with: ``baselines[backbone]`` (None: not
    compared) or the baseline backbone, with the baseline finetune regularizer."""
    base = baselines.get(backbone, baseline)
    if base is None:
        return None
    return base if kind == "readout" else f"{base}/{baseline}"


@dataclass(frozen=True)
class ModelConvergence:
    model: AttackedModel
    result: Convergence | None  # None: the model was not attacked with the primary attack
    excluded: int = 0  # samples not fooled within the earlier budget: not in the drop


@dataclass(frozen=True)
class PrimaryResult:
    kind: str
    target: str
    variant: str
    baseline: str
    test: TestResult  # of log(Δ variant / Δ baseline) over pretraining seeds
    p_holm: float
    accuracy: NonInferiority  # of accuracy(variant) - accuracy(baseline) over the same seeds
    unconverged: int  # models of the variant or the baseline whose Δ has not converged
    power: float  # of the declared design to detect min_ratio at Holm's first-step level
    verdict: str
    reason: str

    @property
    def ratio(self) -> float:
        return math.exp(self.test.estimate) if math.isfinite(self.test.estimate) else math.nan


def group(models: list[AttackedModel]) -> dict[tuple[str, str, str], list[AttackedModel]]:
    """(kind, target, variant) -> its models ordered by (pretraining seed, finetuning seed)."""
    groups: dict[tuple[str, str, str], list[AttackedModel]] = defaultdict(list)
    for m in models:
        groups[(m.kind, m.target, m.variant)].append(m)
    return {k: sorted(v, key=lambda m: m.cell) for k, v in sorted(groups.items())}


def paired_units(
    members: list[AttackedModel], baselines: list[AttackedModel], method: str
) -> tuple[list[Unit], list[float]]:
    """Units (pretraining seeds both have) of aligned distances, and per-unit accuracy
    differences (mean over the unit's cells). Samples both models attacked count; a censored
    distance (+inf) is kept."""
    base = {b.cell: b for b in baselines}
    cells: dict[int, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    accs: dict[int, list[float]] = defaultdict(list)
    for m in members:
        b = base.get(m.cell)
        if b is None:
            continue
        dv, db = read_distances(m.samples, method), read_distances(b.samples, method)
        shared = sorted(dv.keys() & db.keys())
        if not shared:
            continue
        v = np.array([dv[i] for i in shared], dtype=float)
        w = np.array([db[i] for i in shared], dtype=float)
        cells[m.backbone_seed].append((v, w))
        if m.test_acc is not None and b.test_acc is not None:
            accs[m.backbone_seed].append(m.test_acc - b.test_acc)
    units = [Unit(seed, tuple(c)) for seed, c in sorted(cells.items())]
    # the same cells as Δ: accuracy is compared on the runs whose distances are
    acc = [float(np.mean(accs[s])) for s in sorted(accs)]
    return units, acc


def model_convergence(model: AttackedModel, method: str, threshold: float) -> ModelConvergence:
    """The drop of mean Δ over the last doubling, on the samples fooled within both budgets: a
    sample not fooled at the earlier one has no distance there to fall from (counted apart)."""
    by_budget = read_budget_distances(model.samples, method)
    if not by_budget:
        return ModelConvergence(model, None)
    last = max(by_budget)
    earlier = [b for b in by_budget if 2 * b <= last]
    if not earlier:
        return ModelConvergence(model, convergence({last: math.nan}, threshold))
    prev = max(earlier)
    a, z = by_budget[prev], by_budget[last]
    common = [i for i in a if math.isfinite(a[i]) and math.isfinite(z.get(i, math.nan))]
    means = {
        prev: float(np.mean([a[i] for i in common])) if common else math.nan,
        last: float(np.mean([z[i] for i in common])) if common else math.nan,
    }
    return ModelConvergence(model, convergence(means, threshold), excluded=len(a) - len(common))


def _converged(mc: ModelConvergence) -> bool:
    return mc.result is not None and mc.result.converged


def _verdict(
    test: TestResult, p_holm: float, acc: NonInferiority, unconverged: int, spec
) -> tuple[str, str]:
    if test.units < 2:
        return UNTESTABLE, f"{test.units} paired pretraining seed(s); a test needs at least 2"
    if not math.isfinite(p_holm):
        return UNTESTABLE, "no p-value (a statistic without a finite value, e.g. a censored median)"
    if unconverged:
        return UNCONVERGED, f"Δ of {unconverged} model(s) still falls with the budget"
    if p_holm > spec.alpha:
        return NO, f"the declared test does not pass (Holm-adjusted p = {p_holm:.3g})"
    ratio = math.exp(test.estimate)
    if ratio <= 1:  # a two-sided test can pass the other way: that is no claim of larger Δ
        return NO, f"Δ is smaller than the baseline's (ratio {ratio:.3g}, Holm p = {p_holm:.3g})"
    big = ratio >= spec.min_ratio
    if big and acc.passed:
        return YES, (
            f"Δ ratio {ratio:.3g} ≥ {spec.min_ratio:g} (Holm-adjusted p = {p_holm:.3g}) and "
            f"accuracy non-inferior at margin {acc.margin:g}"
        )
    parts = [f"Δ larger (Holm-adjusted p = {p_holm:.3g})"]
    if not big:
        parts.append(f"but the ratio {ratio:.3g} is below the claimed {spec.min_ratio:g}")
    if not acc.passed:
        parts.append(
            f"{'and' if not big else 'but'} an accuracy cost within {acc.margin:g} is not shown "
            f"(lower bound {acc.lower:+.3g})"
        )
    return PARTLY, " ".join(parts)


def primary_results(
    models: list[AttackedModel], spec, baseline: str, resamples: int, seed: int
) -> tuple[list[PrimaryResult], dict[str, ModelConvergence]]:
    """The declared test of every variant against its (kind, target)'s baseline, Holm-adjusted
    within each (kind, target); and each model's convergence under the primary attack."""
    groups = group(models)
    conv = {
        m.run_id + "@" + m.kind: model_convergence(m, spec.attack, spec.converged_below)
        for m in models
        if m.samples is not None
    }
    out: list[PrimaryResult] = []
    families: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for (kind, target, variant), members in groups.items():
        base_name = compared_with(kind, members[0].backbone, baseline, spec.baselines)
        base = groups.get((kind, target, base_name)) if base_name else None
        if variant == base_name or base_name is None:
            continue
        if base is None:  # a declared comparison whose baseline did not run: said, not dropped
            base = []
        units, acc_diffs = paired_units(members, base, spec.attack)
        test = paired_test(
            units, statistic=spec.statistic, alternative=spec.alternative, test=spec.test,
            confidence=1 - spec.alpha if spec.alternative == "two-sided" else 1 - 2 * spec.alpha,
            resamples=resamples, seed=seed,
        )  # fmt: skip
        seeds = {u.seed for u in units}
        involved = [m for m in (*members, *base) if m.backbone_seed in seeds]
        unconverged = sum(
            not _converged(conv[m.run_id + "@" + m.kind])
            for m in involved
            if m.run_id + "@" + m.kind in conv
        )
        acc = non_inferiority(acc_diffs, spec.accuracy_margin, spec.alpha)
        families[(kind, target)].append((variant, base_name, test, acc, unconverged))
    for (kind, target), rows in families.items():
        adjusted = holm([r[2].p for r in rows])
        m = max(1, sum(math.isfinite(r[2].p) for r in rows))  # Holm's family: the tested ones
        for (variant, base_name, test, acc, unconverged), p_adj in zip(rows, adjusted, strict=True):
            power = power_paired_t(
                test.units, math.log(spec.min_ratio), spec.assumed_sd, spec.alpha / m,
                spec.alternative,
            )  # fmt: skip
            verdict, reason = _verdict(test, p_adj, acc, unconverged, spec)
            out.append(
                PrimaryResult(
                    kind,
                    target,
                    variant,
                    base_name,
                    test,
                    p_adj,
                    acc,
                    unconverged,
                    power,
                    verdict,
                    reason,
                )  # fmt: skip
            )
    return out, conv
