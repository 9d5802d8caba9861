"""Sentences computed from the data: do the attacks agree on the ranking; does the claim hold."""

from __future__ import annotations

import math

from scipy import stats

from pipeline.report.compare import PairedComparison, baseline_variant
from pipeline.report.samples import BEST

KIND_NAMES = {"finetune": "finetuning", "readout": "readout retraining"}


def _num(x: float) -> str:
    return f"{x:.4g}"


def rank_variants(means: dict[str, float]) -> list[str]:
    """Variants by mean Δ, largest first (ties by name); non-finite means left out."""
    finite = {v: m for v, m in means.items() if m is not None and math.isfinite(m)}
    return sorted(finite, key=lambda v: (-finite[v], v))


def ranking_sentence(kind: str, target: str, variants: list[dict], methods: list[str]) -> str:
    """Whether every attack method ranks the variants (rows of ``summarize_variants``) alike."""
    where = f"{KIND_NAMES[kind].capitalize()} on {target}"
    rankings = {
        m: rank_variants({v["variant"]: v.get(f"mean_distance_{m}_mean") for v in variants})
        for m in methods
    }
    rankings = {m: r for m, r in rankings.items() if r}
    if len(rankings) < 2:
        only = f" ({next(iter(rankings))})" if rankings else ""
        return f"{where}: only one attack method{only} was run, so there is no ranking to compare."
    first, *others = rankings
    if len({len(r) for r in rankings.values()}) == 1 and all(
        rankings[m] == rankings[first] for m in others
    ):
        names = " and ".join(rankings) if len(rankings) == 2 else "all of " + ", ".join(rankings)
        order = " > ".join(rankings[first])
        return (
            f"{where}: the ranking of the {len(rankings[first])} variants by mean Δ is the same "
            f"under {names}: {order}."
        )
    clauses = []
    for m in others:
        common = [v for v in rankings[first] if v in rankings[m]]
        a = [v["mean_distance_" + first + "_mean"] for v in _rows(variants, common)]
        b = [v["mean_distance_" + m + "_mean"] for v in _rows(variants, common)]
        tau = stats.kendalltau(a, b).statistic if len(common) >= 2 else math.nan
        same = [v for v in rankings[m] if v in common] == common
        verdict = "the same" if same else "different"
        clauses.append(
            f"{m} ranks them {' > '.join(rankings[m])} ({verdict}; Kendall τ = {_num(tau)})"
        )
    return (
        f"{where}: the ranking by mean Δ differs between the attacks. "
        f"{first} ranks the variants {' > '.join(rankings[first])}; " + "; ".join(clauses) + "."
    )


def _rows(variants: list[dict], names: list[str]) -> list[dict]:
    by_name = {v["variant"]: v for v in variants}
    return [by_name[n] for n in names]


def _tradeoff(variants: list[dict], window: float):
    rows = [
        v
        for v in variants
        if math.isfinite(v.get("test_acc_mean", math.nan))
        and math.isfinite(v.get("mean_distance_mean", math.nan))
    ]
    if not rows:
        return rows, None, [], None
    best = max(rows, key=lambda v: (v["test_acc_mean"], v["variant"]))
    near = [v for v in rows if v["test_acc_mean"] >= best["test_acc_mean"] - window - 1e-12]
    winner = max(near, key=lambda v: (v["mean_distance_mean"], v["variant"]))
    return rows, best, near, winner


def tradeoff_winner(variants: list[dict], window: float) -> dict | None:
    """The variant with the largest mean Δ among those within ``window`` of the best accuracy."""
    return _tradeoff(variants, window)[3]


def claim_check(
    kind: str,
    target: str,
    variants: list[dict],
    comparisons: list[PairedComparison],
    *,
    window: float,
    claimed: str,
    baseline: str,
) -> str:
    """Which variant has the largest mean Δ within ``window`` accuracy of the best; is it better?

    ``variants``: rows of ``summarize_variants`` for this kind and target; ``claimed``: the backbone
    of the claim (with the baseline finetune regularizer for finetuning).
    """
    where = f"{KIND_NAMES[kind].capitalize()} on {target}"
    rows, best, near, winner = _tradeoff(variants, window)
    if winner is None:
        return f"{where}: no attacked variant, nothing to check."
    text = [
        f"{where}: the best test accuracy is {_num(best['test_acc_mean'])} ({best['variant']}); "
        f"{len(near)} of {len(rows)} variants lie within {_num(window)} of it. Among them "
        f"{winner['variant']} has the largest mean Δ ({_num(winner['mean_distance_mean'])})."
    ]
    base = baseline_variant(kind, baseline)
    if winner["variant"] == base:
        text.append("That is the unregularized baseline: no regularized variant beats it here.")
    else:
        match = [
            c
            for c in comparisons
            if (c.kind, c.target, c.variant, c.method) == (kind, target, winner["variant"], BEST)
        ]
        text.append(_significance(match[0] if match else None, base))
    claimed_variant = claimed if kind == "readout" else f"{claimed}/{baseline}"
    names = {v["variant"] for v in rows}
    if claimed_variant not in names:
        text.append(f"The claim about {claimed_variant} is not tested: it has no attacked run.")
    else:
        holds = winner["variant"] == claimed_variant
        text.append(
            f"The claim that {claimed_variant} gives the largest mean Δ within {_num(window)} "
            f"accuracy of the best {'holds' if holds else 'does not hold'} here"
        )
        if holds:
            text[-1] += "."
        else:
            own = next(v for v in rows if v["variant"] == claimed_variant)
            inside = "inside" if own in near else "outside"
            text[-1] += (
                f" ({claimed_variant}: accuracy {_num(own['test_acc_mean'])}, {inside} the "
                f"window; mean Δ {_num(own['mean_distance_mean'])})."
            )
    return " ".join(text)


def _significance(c: PairedComparison | None, base: str) -> str:
    if c is None:
        return f"It has no sample paired with {base}, so its advantage cannot be tested."
    d = c.delta
    head = f"Its paired difference in Δ over {base} is {_num(d.estimate)}"
    where = f"({d.n} paired samples, {d.strata} seed{'s' if d.strata != 1 else ''})"
    if not d.has_interval:
        return f"{head} {where}, with no interval (too few samples)."
    verdict = (
        "significant: the interval excludes 0"
        if d.excludes_zero
        else "not significant: the interval includes 0"
    )
    return f"{head} [{_num(d.low)}, {_num(d.high)}] {where}, {verdict}."
