"""The data of the overlay plots ``dvc plots show`` draws: the variants a researcher compares,
in one chart each (accuracy against Δ, Δ against queries, Σ σ_max² over training).

One CSV per chart, one row per point, with a ``variant`` column the templates colour by and a
``run`` column that keeps each training run its own line (``.dvc/plots/overlay_*.json``; the
charts are declared in ``dvc.yaml``'s top-level ``plots``). ``dvc plots diff`` overlays
experiments on top (their revision is the marker shape or the dash).
"""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.core import paths
from pipeline.core.io import atomic_write_text, write_csv
from pipeline.report.collect import AttackedModel, sigma_history

PLOTS = paths.REPORTS / "plots"
ACCURACY_VS_DELTA = PLOTS / "accuracy_vs_delta.csv"
DELTA_VS_QUERIES = PLOTS / "delta_vs_queries.csv"
SIGMA_OVER_TRAINING = PLOTS / "sigma_over_training.csv"


def _label(model: AttackedModel) -> str:
    return f"{model.kind} {model.target} {model.variant}"


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _method_stats(model: AttackedModel, method: str) -> dict:
    return (model.attack.get("by_method") or {}).get(method) or {}


def accuracy_vs_delta(models: list[AttackedModel], method: str) -> list[dict]:
    """Per attacked model: its accuracy and the mean Δ of ``method`` (the declared attack)."""
    rows = []
    for m in models:
        delta = _method_stats(m, method).get("mean_distance")
        if _finite(delta) and _finite(m.test_acc):
            rows.append({"variant": _label(m), "run": m.run_id, "test_acc": m.test_acc,
                         "mean_delta": delta})  # fmt: skip
    return rows


def delta_vs_queries(models: list[AttackedModel], method: str, budgets: list[int]) -> list[dict]:
    """Per attacked model and query budget: the mean Δ found within that budget."""
    rows = []
    for m in models:
        at = _method_stats(m, method).get("at_queries") or {}
        for budget in budgets:
            delta = at.get(str(budget))
            if _finite(delta):
                rows.append({"variant": _label(m), "run": m.run_id, "queries": budget,
                             "mean_delta": delta})  # fmt: skip
    return rows


def sigma_over_training(runs: list[tuple[str, str, Path]]) -> list[dict]:
    """Per pretraining run (``(stage, variant, history.json)``) and epoch: Σ σ_max²."""
    rows = []
    for stage, variant, history in runs:
        if not history.is_file():
            continue
        epochs, values = sigma_history(history)
        run = str(history.parent.relative_to(paths.METRICS))
        rows += [{"variant": f"{stage} {variant}", "run": run, "epoch": e,
                  "sum_sigma_max_sq": v} for e, v in zip(epochs, values, strict=True)]  # fmt: skip
    return rows


def write_plot_data(folder: Path, models, method: str, budgets: list[int], runs) -> None:
    """The three CSVs into ``folder`` (the report's staging copy of ``reports/plots``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path, rows, columns in (
        (ACCURACY_VS_DELTA, accuracy_vs_delta(models, method), "test_acc,mean_delta"),
        (DELTA_VS_QUERIES, delta_vs_queries(models, method, budgets), "queries,mean_delta"),
        (SIGMA_OVER_TRAINING, sigma_over_training(runs), "epoch,sum_sigma_max_sq"),
    ):
        if rows:
            write_csv(folder / path.name, rows)
        else:  # nothing measured (say, no attack ran): the header, so the chart is just empty
            atomic_write_text(folder / path.name, f"variant,run,{columns}\n")
