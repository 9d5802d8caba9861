"""Sentences computed from the data: do the attacks agree on how they rank the variants.

Exploratory: the declared test and its verdicts are in :mod:`pipeline.report.primary`.
"""

from __future__ import annotations

import math

from scipy import stats

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
