"""``report``: the transfer tables (markdown + CSV), paired statistics, claim check and figures."""

from __future__ import annotations

from pathlib import Path

from pipeline.core import paths
from pipeline.core.io import atomic_write_text, write_csv
from pipeline.report.collect import collect_results
from pipeline.report.compare import compare_with_baseline
from pipeline.report.figures import (
    plot_pretrain_sigmas,
    plot_queries,
    plot_tradeoff,
    plot_transfer,
)
from pipeline.report.findings import claim_check, ranking_sentence, tradeoff_winner
from pipeline.report.stats import IntervalOptions
from pipeline.report.tables import comparison_table, markdown_table
from pipeline.report.variants import summarize_variants
from pipeline.stages.spec import Arg, StageSpec

OUT_MD = paths.REPORTS / "transfer.md"
OUT_CSV = paths.REPORTS / "results.csv"
FIGURES = paths.REPORTS / "figures"


ARGS: tuple[Arg, ...] = ()
STAGES = (
    StageSpec(
        name="report",
        command="report",
        params=("report",),
        # The whole folder: a config without SSL (say) produces no metrics/ssl.
        deps=(str(paths.METRICS),),
        outs=(str(OUT_MD), str(FIGURES), str(OUT_CSV)),
    ),
)


def run(cfg) -> dict:
    spec = cfg.report
    options = IntervalOptions(
        method=spec.interval, resamples=spec.bootstrap_resamples, seed=spec.seed
    )
    results = collect_results(paths.METRICS)
    methods, budgets, models = results["methods"], results["budgets"], results["models"]
    variants = summarize_variants(models, methods, budgets, options)
    comparisons = compare_with_baseline(models, methods, options, spec.baseline)
    targets = sorted({v["target"] for v in variants})
    FIGURES.mkdir(parents=True, exist_ok=True)
    for stale in sorted(FIGURES.glob("*.png")):  # the folder is this stage's output alone
        stale.unlink()

    lines = [f"# {spec.title}", ""]
    lines += _pretraining(results)
    for kind in ("finetune", "readout"):
        lines += _transfer_section(kind, variants, targets, methods, budgets)
    lines += _comparisons(comparisons, targets, options, spec.baseline)
    lines += _claims(variants, comparisons, targets, spec)
    attack_names = ", ".join(methods) if methods else "the attack"
    lines += [
        "",
        f"Δ: ℓ2 distance (pixel space [0, 1]) to the decision boundary found by the hard-label "
        f"attacks ({attack_names}); *best* is, per sample, the smallest distance over the "
        "methods. Larger is more robust.",
        "",
    ]
    write_csv(OUT_CSV, [m.row(methods, budgets) for m in models])
    atomic_write_text(OUT_MD, "\n".join(lines))
    return {
        "finetune_groups": sum(v["kind"] == "finetune" for v in variants),
        "readout_groups": sum(v["kind"] == "readout" for v in variants),
        "comparisons": len(comparisons),
        "report": str(Path(OUT_MD)),
    }


def _pretraining(results: dict) -> list[str]:
    lines = ["## Pretraining", ""]
    lines.append(
        markdown_table(
            results["pretrain"],
            [
                ("variant", "variant"),
                ("test acc", "test_acc"),
                ("Σ σ_max² (features)", "sum_sigma_max_sq"),
                ("max σ_max", "max_sigma_max"),
                ("epochs", "epochs"),
            ],
        )
    )
    sig = plot_pretrain_sigmas(
        paths.METRICS / "pretrain",
        [r["variant"] for r in results["pretrain"]],
        FIGURES / "pretrain_sigma.png",
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
                    ("method", "method"),
                    ("kNN acc", "knn_acc"),
                    ("readout acc", "readout_acc"),
                    ("Σ σ_max² (features)", "sum_sigma_max_sq"),
                    ("epochs", "epochs"),
                ],
            )
        )
        sig = plot_pretrain_sigmas(
            paths.METRICS / "ssl", [r["variant"] for r in results["ssl"]], FIGURES / "ssl_sigma.png"
        )
        if sig:
            lines += ["", "![Σ σ_max² over SSL training](figures/ssl_sigma.png)"]
    return lines


def _transfer_section(
    kind: str, variants: list[dict], targets: list[str], methods: list[str], budgets: list[int]
) -> list[str]:
    rows = [v for v in variants if v["kind"] == kind]
    finetune = kind == "finetune"
    if finetune:
        title = "Finetuning: accuracy and mean adversarial distance Δ (mean ± std over seeds)"
        columns = [
            ("target", "target"),
            ("backbone", "backbone"),
            ("finetune reg.", "regularizer"),
            ("seeds", "n"),
            ("test acc", "test_acc_mean±test_acc_std"),
        ]
        columns += [
            (f"mean Δ ({m})", f"mean_distance_{m}_mean±mean_distance_{m}_std") for m in methods
        ]
        columns.append(("mean Δ (best)", "mean_distance_mean±mean_distance_std"))
    else:
        if not rows:
            return []
        title = "Readout retraining (logistic regression on frozen features)"
        columns = [("target", "target"), ("backbone", "backbone"), ("test acc", "test_acc_mean")]
        columns += [(f"mean Δ ({m})", f"mean_distance_{m}_mean") for m in methods]
        columns.append(("mean Δ (best)", "mean_distance_mean"))
    columns.append(("attack success", "success_rate_mean"))
    lines = ["", f"## {title}", "", markdown_table(rows, columns), ""]
    for target in targets:
        trows = [v for v in rows if v["target"] == target]
        if trows:
            lines.append(ranking_sentence(kind, target, trows, methods))
            lines.append("")
    label = "finetune" if finetune else "readout retraining"
    for target in targets:
        trows = [v for v in rows if v["target"] == target]
        if not trows:
            continue
        name = f"{kind}_{target}.png"
        keys = ("backbone", "regularizer") if finetune else ("backbone",)
        plot_transfer(trows, keys, FIGURES / name, f"{label} on {target}")
        lines += [f"![{kind} {target}](figures/{name})", ""]
        name = f"queries_{kind}_{target}.png"
        title = f"{label} on {target}: mean Δ within a query budget"
        if plot_queries(trows, methods, budgets, FIGURES / name, title):
            lines += [f"![{kind} {target}: Δ against queries](figures/{name})", ""]
    return lines


def _comparisons(comparisons, targets: list[str], options, baseline: str) -> list[str]:
    lines = [
        "## Paired comparison with the unregularized baseline",
        "",
        f"Each variant against `{baseline}` (finetuning: backbone and finetune regularizer both "
        f"`{baseline}`) on the same target. Distances are paired on (seed, test-split index): "
        "only samples both models attacked count. The difference is the mean over seeds of the "
        "mean paired difference; *best* pairs each sample's best distance over the attacks. "
        + options.describe()
        + " The accuracy difference is the mean over the common seeds, with a t-interval over "
        "seeds when there are two or more. `*` marks an interval that excludes 0.",
        "",
    ]
    for target in targets:
        rows = [c for c in comparisons if c.target == target]
        lines += [f"### {target}", ""]
        lines.append(comparison_table(rows) if rows else f"No variant to pair with `{baseline}`.")
        lines.append("")
    return lines


def _claims(variants, comparisons, targets: list[str], spec) -> list[str]:
    lines = [
        "## Claim check",
        "",
        f"The claim: {spec.claim_backbone} pretraining with plain finetuning gives the largest "
        f"mean Δ among the variants within {spec.accuracy_window:g} (absolute) test accuracy of "
        "the best one.",
        "",
    ]
    panels = []
    for target in targets:
        sentences = []
        for kind in ("finetune", "readout"):
            rows = [v for v in variants if v["kind"] == kind and v["target"] == target]
            if not rows:
                continue
            sentences.append(
                claim_check(
                    kind,
                    target,
                    rows,
                    comparisons,
                    window=spec.accuracy_window,
                    claimed=spec.claim_backbone,
                    baseline=spec.baseline,
                )
            )
            winner = tradeoff_winner(rows, spec.accuracy_window)
            panels.append((f"{kind} on {target}", rows, winner))
        lines += [f"### {target}", ""]
        for sentence in sentences:
            lines += [sentence, ""]
    if plot_tradeoff(panels, FIGURES / "tradeoff.png", spec.accuracy_window, spec.baseline):
        lines += [
            "![test accuracy against mean Δ](figures/tradeoff.png)",
            "",
            "Accuracy against mean Δ per variant. Bars: accuracy t-interval over seeds, Δ "
            "interval over samples; the shaded band is the accuracy window, the star its "
            "largest mean Δ.",
        ]
    return lines
