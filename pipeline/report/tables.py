"""Markdown rendering of the report's tables."""

from __future__ import annotations

import math

from pipeline.report.primary import ModelConvergence, PrimaryResult


def _fmt(value) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """``columns`` is a list of (header, key); ``key`` may be ``a±b`` to show mean ± std."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for _, key in columns:
            if "±" in key:
                m, s = key.split("±")
                cells.append(f"{_fmt(r.get(m, math.nan))} ± {_fmt(r.get(s, math.nan))}")
            else:
                cells.append(_fmt(r.get(key, "")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio_interval(r: PrimaryResult) -> str:
    t = r.test
    if not math.isfinite(t.estimate):
        return "–"
    text = f"{math.exp(t.estimate):.3g}"
    if math.isfinite(t.low) and math.isfinite(t.high):
        text += f" [{math.exp(t.low):.3g}, {math.exp(t.high):.3g}]"
    return text


def _p(p: float) -> str:
    return "–" if not math.isfinite(p) else f"{p:.3g}"


def design_lines(primary, baseline: str, variants: list[dict]) -> list[str]:
    """What was declared before the run, and how many pretraining seeds each arm has."""
    level = 1 - 2 * primary.alpha if primary.alternative != "two-sided" else 1 - primary.alpha
    seeds = sorted({(v["kind"], v["variant"], v["n"], v["runs"]) for v in variants})
    arms = "; ".join(f"{k} {name}: {n} seeds ({runs} runs)" for k, name, n, runs in seeds)
    return [
        f"Declared before the run (`report.primary`): each variant against `{baseline}` (or the "
        f"backbone `report.primary.baselines` names: {primary.baselines or 'none'}) on the "
        f"{primary.attack} attack's Δ; statistic `{primary.statistic}` (log of the ratio of the "
        f"variant's to the baseline's mean Δ on the samples both attacked), alternative "
        f"`{primary.alternative}`, paired `{primary.test}` test over pretraining seeds (the unit "
        f"of replication: finetuning seeds and test samples are nested in them) at α = "
        f"{primary.alpha:g}, Holm-adjusted across the variants of a target. Interval: "
        f"{level:.0%} hierarchical bootstrap over seeds, then samples within a seed (t-widened "
        "percentile), descriptive: not adjusted for multiplicity, and not the inversion of the "
        "test (the verdict follows the Holm-adjusted p). Accuracy: "
        f"non-inferiority at margin {primary.accuracy_margin:g} (one-sided {1 - primary.alpha:.0%} "
        f"t lower bound over seeds). The claim checked: Δ ratio ≥ {primary.min_ratio:g}. A model's "
        f"Δ counts as converged when the last doubling of the query budget lowers its mean by "
        f"< {primary.converged_below:.0%}; unconverged comparisons get no verdict and no rank.",
        "",
        f"Arms: {arms}.",
        "",
    ]


def primary_table(rows: list[PrimaryResult], primary) -> str:
    """One declared test per variant: ratio, p, Holm p, accuracy, convergence, power, verdict."""
    lines = [
        "| variant | vs | seeds | samples (censored v/b) | Δ ratio [CI] | p | Holm p | "
        "acc diff (lower bound) | non-inferior | unconverged models | power | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, a = r.test, r.accuracy
        acc = "–" if not math.isfinite(a.estimate) else f"{a.estimate:+.3g} ({a.lower:+.3g})"
        lines.append(
            f"| {r.variant} | {r.baseline} | {t.units} | {t.samples} ({t.censored_variant}/{t.censored_baseline}) "
            f"| {_ratio_interval(r)} | {_p(t.p)} | {_p(r.p_holm)} | {acc} | "
            f"{'yes' if a.passed else 'no'} | {r.unconverged} | {_p(r.power)} | **{r.verdict}** |"
        )
    lines.append("")
    lines.append(
        f"Power: of the test with this design's number of seeds to reject at Holm's first-step "
        f"level when the true ratio is {primary.min_ratio:g} and the per-seed sd of the log ratio "
        f"is {primary.assumed_sd:g} (declared). It is not the chance of a *yes*, which also needs "
        f"the estimated ratio to reach {primary.min_ratio:g}: about half that at a true ratio of "
        f"exactly {primary.min_ratio:g}, more above it."
    )
    return "\n".join(lines)


def convergence_table(convergence: dict[str, ModelConvergence]) -> str:
    """Per attacked model: mean Δ of the primary attack at the last two doubling budgets."""
    lines = [
        "| model | budget | drop over the last doubling | not fooled at the earlier budget | converged |",
        "|---|---|---|---|---|",
    ]
    for mc in convergence.values():
        m, c = mc.model, mc.result
        if c is None:
            lines.append(f"| {m.kind} {m.run_id} | – | – | – | no (no per-budget data) |")
            continue
        drop = "not measured" if not math.isfinite(c.drop) else f"{c.drop:.1%}"
        budgets = f"{c.previous} → {c.budget}" if c.previous else str(c.budget)
        lines.append(
            f"| {m.kind} {m.run_id} | {budgets} | {drop} | {mc.excluded} | "
            f"{'yes' if c.converged else '**no**'} |"
        )
    return "\n".join(lines)


def exploratory_table(rows: list[tuple[str, PrimaryResult]]) -> str:
    """(attack, result) rows of the declared statistic under attacks other than the declared."""
    lines = [
        "| kind | target | variant | attack | seeds | Δ ratio [CI] | p (unadjusted) |",
        "|---|---|---|---|---|---|---|",
    ]
    for attack, r in rows:
        lines.append(
            f"| {r.kind} | {r.target} | {r.variant} | {attack} | {r.test.units} | "
            f"{_ratio_interval(r)} | {_p(r.test.p)} |"
        )
    return "\n".join(lines)
