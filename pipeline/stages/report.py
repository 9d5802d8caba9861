"""``report``: the transfer table (markdown + CSV) and figures from every metrics file."""

from __future__ import annotations

from pathlib import Path

from pipeline.core import paths
from pipeline.core.io import atomic_write_text, write_csv
from pipeline.report import (
    aggregate,
    collect_results,
    markdown_table,
    plot_pretrain_sigmas,
    plot_transfer,
)
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
        code=("pipeline/report",),
        # The whole folder: a config without SSL (say) produces no metrics/ssl.
        deps=(str(paths.METRICS),),
        outs=(str(OUT_MD), str(FIGURES), str(OUT_CSV)),
    ),
)


def run(cfg) -> dict:
    results = collect_results(paths.METRICS)
    values = ("test_acc", "mean_distance", "median_distance", "success_rate")
    finetune = aggregate(results["finetune"], ("target", "backbone", "regularizer"), values)
    readout = aggregate(results["readout"], ("target", "backbone"), values)
    lines = [f"# {cfg.report.title}", ""]

    lines += ["## Pretraining", ""]
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

    lines += [
        "",
        "## Finetuning: accuracy and mean adversarial distance Δ (mean ± std over seeds)",
        "",
    ]
    lines.append(
        markdown_table(
            finetune,
            [
                ("target", "target"),
                ("backbone", "backbone"),
                ("finetune reg.", "regularizer"),
                ("seeds", "n"),
                ("test acc", "test_acc_mean±test_acc_std"),
                ("mean Δ", "mean_distance_mean±mean_distance_std"),
                ("attack success", "success_rate_mean"),
            ],
        )
    )
    lines += ["", "## Readout retraining (logistic regression on frozen features)", ""]
    lines.append(
        markdown_table(
            readout,
            [
                ("target", "target"),
                ("backbone", "backbone"),
                ("test acc", "test_acc_mean"),
                ("mean Δ", "mean_distance_mean"),
                ("attack success", "success_rate_mean"),
            ],
        )
    )
    FIGURES.mkdir(parents=True, exist_ok=True)
    for target in sorted({g["target"] for g in finetune}):
        rows = [g for g in finetune if g["target"] == target]
        name = f"finetune_{target}.png"
        plot_transfer(rows, ("backbone", "regularizer"), FIGURES / name, f"finetune on {target}")
        lines += ["", f"![finetune {target}](figures/{name})"]
        rows = [g for g in readout if g["target"] == target]
        if rows:
            name = f"readout_{target}.png"
            plot_transfer(rows, ("backbone",), FIGURES / name, f"readout retraining on {target}")
            lines += ["", f"![readout {target}](figures/{name})"]
    lines += [
        "",
        "Δ: mean ℓ2 distance to the decision boundary found by the hard-label Tangent Attack "
        "(pixel space [0, 1]); larger is more robust.",
        "",
    ]
    write_csv(
        OUT_CSV,
        [{"stage": "finetune", **r} for r in results["finetune"]]
        + [{"stage": "readout", **r} for r in results["readout"]],
    )
    atomic_write_text(OUT_MD, "\n".join(lines))
    return {
        "finetune_groups": len(finetune),
        "readout_groups": len(readout),
        "report": str(Path(OUT_MD)),
    }
