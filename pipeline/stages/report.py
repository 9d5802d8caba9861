"""``report``: the transfer tables (markdown + CSV), paired statistics, claim check and figures."""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.core import paths
from pipeline.core.io import atomic_write_text, staged_replace, write_csv, write_json
from pipeline.report.collect import collect_results, planned_runs
from pipeline.report.figures import (
    plot_pretrain_sigmas,
    plot_queries,
    plot_tradeoff,
    plot_transfer,
)
from pipeline.report.findings import ranking_sentence
from pipeline.report.plot_data import (
    ACCURACY_VS_DELTA,
    DELTA_VS_QUERIES,
    PLOTS,
    SIGMA_OVER_TRAINING,
    write_plot_data,
)
from pipeline.report.primary import UNCONVERGED, UNTESTABLE, YES, primary_results
from pipeline.report.tables import (
    convergence_table,
    design_lines,
    exploratory_table,
    markdown_table,
    primary_table,
)
from pipeline.report.variants import summarize_variants
from pipeline.stages.spec import Arg, Overlay, StageSpec

OUT_MD = paths.REPORTS / "transfer.md"
OUT_CSV = paths.REPORTS / "results.csv"
# The few numbers a person compares across experiments (dvc exp show / dvc metrics diff).
HEADLINE = paths.REPORTS / "headline.json"
FIGURES = paths.REPORTS / "figures"


ARGS: tuple[Arg, ...] = ()
STAGES = (
    StageSpec(
        name="report",
        command="report",
        # The matrices say which runs the report reads (a hand run outside them is not).
        params=("report", "pretrain.run", "ssl.run", "finetune.run"),
        # The whole folder: a config without SSL (say) produces no metrics/ssl.
        deps=(str(paths.METRICS),),
        outs=(str(OUT_MD), str(FIGURES), str(OUT_CSV), str(PLOTS)),
        metrics=(str(HEADLINE),),
    ),
)
# The charts `dvc plots show` draws over the variants (dvc.yaml's top-level plots).
OVERLAYS = (
    Overlay(str(ACCURACY_VS_DELTA), "overlay_points", "mean_delta", "test_acc",
            "test accuracy against mean Δ of the declared attack, per model"),
    Overlay(str(DELTA_VS_QUERIES), "overlay_lines", "queries", "mean_delta",
            "mean Δ found within a query budget, per model"),
    Overlay(str(SIGMA_OVER_TRAINING), "overlay_lines", "epoch", "sum_sigma_max_sq",
            "Σ σ_max² of the feature layers over pretraining, per run"),
)  # fmt: skip


def run(cfg) -> dict:
    spec = cfg.report
    primary = spec.primary
    results = collect_results(paths.METRICS, planned_runs(cfg))
    methods, budgets, models = results["methods"], results["budgets"], results["models"]
    variants = summarize_variants(models, methods, budgets, primary.attack)
    tests, convergence = primary_results(
        models, primary, spec.baseline, spec.bootstrap_resamples, spec.seed
    )
    targets = sorted({v["target"] for v in variants})
    # Everything is written beside the old report and swapped in at the end: a failure (a
    # corrupt metrics file, a full disk) leaves the previous report and figures as they were.
    with staged_replace(paths.REPORTS, (OUT_MD, OUT_CSV, HEADLINE, FIGURES, PLOTS)) as staged:
        out = _write_report(cfg, results, variants, tests, convergence, targets, staged)
    return out


def _write_report(cfg, results, variants, tests, convergence, targets, staged: Path) -> dict:
    spec, primary = cfg.report, cfg.report.primary
    methods, budgets, models = results["methods"], results["budgets"], results["models"]
    figures = staged / FIGURES.name
    figures.mkdir(parents=True)

    lines = [f"# {spec.title}", ""]
    lines += _answer(tests, variants, targets, primary, spec.baseline)
    lines += ["## Convergence of Δ in the query budget", "", convergence_table(convergence), ""]
    if results["ignored"]:
        lines += [
            f"{results['ignored']} summaries under metrics/ belong to no run of these parameters' "
            "DAG (hand runs, other settings) and are not read.",
            "",
        ]
    lines += _pretraining(results, figures)
    for kind in ("finetune", "readout"):
        lines += _transfer_section(kind, variants, targets, methods, budgets, tests, figures)
    lines += _exploratory(models, methods, primary, spec)
    lines += _tradeoff(variants, targets, primary, spec.baseline, figures)
    attack_names = ", ".join(methods) if methods else "the attack"
    lines += [
        "",
        f"Δ: ℓ2 distance (pixel space [0, 1]) to the decision boundary found by the hard-label "
        f"attacks ({attack_names}); *best* is, per sample, the smallest distance over the "
        "methods. Larger is more robust. A sample an attack did not fool within its budget is "
        "censored (Δ at least as large as anything measured): the declared test keeps it (see "
        "docs/methods.md); the descriptive means of the tables are over fooled samples, with the "
        "censored ones counted beside them.",
        "",
    ]
    write_csv(staged / OUT_CSV.name, [m.row(methods, budgets) for m in models])
    write_plot_data(staged / PLOTS.name, models, primary.attack, budgets, _histories(results))
    write_json(staged / HEADLINE.name, headline(tests, variants))
    atomic_write_text(staged / OUT_MD.name, "\n".join(lines))
    return {
        "finetune_groups": sum(v["kind"] == "finetune" for v in variants),
        "readout_groups": sum(v["kind"] == "readout" for v in variants),
        "primary_tests": len(tests),
        "verdicts": {f"{t.kind}:{t.target}:{t.variant}": t.verdict for t in tests},
        "report": str(Path(OUT_MD)),
    }


def headline(tests, variants) -> dict:
    """Per tested finetuned variant: accuracy, the declared test's Δ ratio and its Holm-adjusted
    p (a dozen numbers, not every summary), for ``dvc exp show`` and ``dvc metrics diff``."""
    out = {}
    for t in tests:
        if t.kind != "finetune":
            continue
        out[f"{t.target}/{t.variant}"] = {
            "acc": _rounded(_variant_acc(variants, t.kind, t.target, t.variant)),
            "ratio": _rounded(t.ratio),
            "p_holm": _rounded(t.p_holm),
        }
    return out


def _variant_acc(variants, kind: str, target: str, variant: str) -> float:
    rows = [
        v for v in variants if (v["kind"], v["target"], v["variant"]) == (kind, target, variant)
    ]
    return rows[0]["test_acc_mean"] if rows else math.nan


def _rounded(x: float) -> float | None:
    return round(float(x), 4) if math.isfinite(x) else None


def _answer(tests, variants, targets, primary, baseline: str) -> list[str]:
    """The question, the declared test, and the answer per kind and target."""
    lines = ["## The answer", ""]
    lines += design_lines(primary, baseline, variants)
    for kind, title in (("finetune", "Finetuning"), ("readout", "Readout retraining")):
        for target in targets:
            rows = [t for t in tests if t.kind == kind and t.target == target]
            if not rows:
                continue
            lines += [f"### {title} on {target}", "", primary_table(rows, primary), ""]
            lines += [f"* **{t.variant}: {t.verdict}**: {t.reason}." for t in rows]
            ranked = [t for t in rows if t.verdict not in (UNTESTABLE, UNCONVERGED)]
            ranked.sort(key=lambda t: -t.ratio)
            if ranked:
                lines.append(
                    "* Ranked by Δ ratio (converged, testable variants only; exploratory): "
                    + " > ".join(f"{t.variant} ({t.ratio:.3g})" for t in ranked)
                    + "."
                )
            yes = [t.variant for t in rows if t.verdict == YES]
            lines += [
                "",
                f"**Does regularized pretraining make the {title.lower()} model on {target} harder "
                f"to attack at ≤ {primary.accuracy_margin:g} accuracy cost?** "
                + (f"Yes, for {', '.join(yes)}." if yes else "No variant shows it."),
                "",
            ]
    return lines


def _pretraining(results: dict, figures: Path) -> list[str]:
    lines = ["## Pretraining", ""]
    lines.append(
        markdown_table(
            results["pretrain"],
            [
                ("variant", "variant"),
                ("seed", "seed"),
                ("test acc", "test_acc"),
                ("Σ σ_max² (features)", "sum_sigma_max_sq"),
                ("max σ_max", "max_sigma_max"),
                ("epochs", "epochs"),
            ],
        )
    )
    sig = plot_pretrain_sigmas(
        paths.METRICS / "pretrain", _runs(results["pretrain"]), figures / "pretrain_sigma.png"
    )
    if sig:
        lines += ["", "![Σ σ_max² over training](figures/pretrain_sigma.png)"]
    if results["ssl"]:
        lines += ["", "## Self-supervised pretraining (on the pretraining data)", ""]
        lines.append(
            markdown_table(
                results["ssl"],
                [
                    ("variant", "variant"),
                    ("seed", "seed"),
                    ("method", "method"),
                    ("kNN acc", "knn_acc"),
                    ("readout acc", "readout_acc"),
                    ("Σ σ_max² (features)", "sum_sigma_max_sq"),
                    ("epochs", "epochs"),
                ],
            )
        )
        sig = plot_pretrain_sigmas(
            paths.METRICS / "ssl", _runs(results["ssl"]), figures / "ssl_sigma.png"
        )
        if sig:
            lines += ["", "![Σ σ_max² over SSL training](figures/ssl_sigma.png)"]
    return lines


def _histories(results: dict) -> list[tuple[str, str, Path]]:
    """(stage, variant, history.json) of every pretraining run the report reads."""
    return [
        (stage, r["variant"], paths.METRICS / stage / run_id / "history.json")
        for stage in ("pretrain", "ssl")
        for r in results[stage]
        for run_id in [paths.backbone_id(r["variant"], r.get("seed", 0))]
    ]


def _runs(rows: list[dict]) -> list[tuple[str, str]]:
    """(variant, run id) of pretraining summaries, for the σ-over-training figure."""
    return [(r["variant"], paths.backbone_id(r["variant"], r.get("seed", 0))) for r in rows]


def _transfer_section(kind, variants, targets, methods, budgets, tests, figures) -> list[str]:
    rows = [v for v in variants if v["kind"] == kind]
    if not rows:
        return []
    finetune = kind == "finetune"
    title = (
        "Finetuning" if finetune else "Readout retraining (logistic regression on frozen features)"
    )
    columns = [("target", "target"), ("backbone", "backbone")]
    if finetune:
        columns.append(("finetune reg.", "regularizer"))
    columns += [
        ("pretraining seeds", "n"),
        ("runs", "runs"),
        ("test acc", "test_acc_mean±test_acc_std"),
    ]
    columns += [(f"mean Δ ({m})", f"mean_distance_{m}_mean±mean_distance_{m}_std") for m in methods]
    columns += [
        ("mean Δ (best)", "mean_distance_mean±mean_distance_std"),
        ("censored", "censored"),
    ]
    lines = [
        "",
        f"## {title}: accuracy and mean Δ (mean ± std over pretraining seeds; descriptive)",
        "",
        markdown_table(rows, columns),
        "",
    ]
    unconverged = {t.variant for t in tests if t.kind == kind and t.verdict == UNCONVERGED}
    for target in targets:
        trows = [v for v in rows if v["target"] == target and v["variant"] not in unconverged]
        if trows:
            lines += [ranking_sentence(kind, target, trows, methods), ""]
    label = "finetune" if finetune else "readout retraining"
    for target in targets:
        trows = [v for v in rows if v["target"] == target]
        if not trows:
            continue
        name = f"{kind}_{target}.png"
        keys = ("backbone", "regularizer") if finetune else ("backbone",)
        plot_transfer(trows, keys, figures / name, f"{label} on {target}")
        lines += [f"![{kind} {target}](figures/{name})", ""]
        name = f"queries_{kind}_{target}.png"
        title = f"{label} on {target}: mean Δ within a query budget"
        if plot_queries(trows, methods, budgets, figures / name, title):
            lines += [f"![{kind} {target}: Δ against queries](figures/{name})", ""]
    return lines


def _exploratory(models, methods, primary, spec) -> list[str]:
    """The same paired statistic under the other attacks: exploratory, unadjusted, no verdict."""
    # with one method, "best" is that method: nothing to add
    others = [m for m in ("best", *methods) if m != primary.attack and len(methods) > 1]
    rows = []
    for method in others:
        declared = primary.model_copy(update={"attack": method})
        found = primary_results(
            models, declared, spec.baseline, spec.bootstrap_resamples, spec.seed
        )
        rows += [(method, r) for r in found[0]]
    if not rows:
        return []
    return [
        "## Exploratory: the same comparison under the other attacks",
        "",
        "Not part of the declared test: p-values are unadjusted and carry no verdict.",
        "",
        exploratory_table(rows),
        "",
    ]


def _tradeoff(variants, targets, primary, baseline: str, figures: Path) -> list[str]:
    panels = [
        (
            f"{kind} on {target}",
            [v for v in variants if v["kind"] == kind and v["target"] == target],
        )
        for target in targets
        for kind in ("finetune", "readout")
    ]
    if not plot_tradeoff(panels, figures / "tradeoff.png", primary.accuracy_margin, baseline):
        return []
    return [
        "## Accuracy against Δ",
        "",
        "![test accuracy against mean Δ](figures/tradeoff.png)",
        "",
        "Per variant, mean over pretraining seeds; bars ±1 std over them. The shaded band is the "
        f"accuracy margin ({primary.accuracy_margin:g}) below the baseline.",
    ]
