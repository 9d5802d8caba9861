"""Figures: accuracy and mean adversarial distance Δ (the papers' Fig. 1/7/8), Δ against queries,
the accuracy-robustness trade-off, σ_max curves. PNGs carry no software/time metadata, so the same
inputs give the same bytes."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.report.collect import sigma_history  # noqa: E402

# PNG text chunks: matplotlib writes "Software" (its version) unless told not to.
PNG_METADATA = {"Software": None}


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, metadata=PNG_METADATA)
    plt.close(fig)
    return out


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max_cols, max(1, n))
    return math.ceil(n / cols), cols


def plot_transfer(groups: list[dict], label_keys: tuple[str, ...], out: Path, title: str) -> Path:
    """Two panels: test accuracy and mean Δ per variant, bars with ±1 std over seeds."""
    labels = ["/".join(str(g[k]) for k in label_keys) for g in groups]
    x = np.arange(len(groups))
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.1 * len(groups) + 3), 3.8))
    for ax, key, name in (
        (axes[0], "test_acc", "test accuracy"),
        (axes[1], "mean_distance", "mean adversarial distance Δ (best over attacks)"),
    ):
        means = np.array([g.get(f"{key}_mean", np.nan) for g in groups], dtype=float)
        stds = np.nan_to_num(np.array([g.get(f"{key}_std", np.nan) for g in groups], dtype=float))
        ax.bar(x, means, yerr=stds, capsize=4, color=plt.cm.tab10(x % 10))
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(name, fontsize=10)
        finite = means[np.isfinite(means)]
        if key == "test_acc" and finite.size:
            ax.set_ylim(max(0.0, finite.min() - 0.1), 1.0)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, out)


def plot_pretrain_sigmas(metrics_root: Path, runs: list[tuple[str, str]], out: Path) -> Path | None:
    """Σ σ_max² of the backbone's feature layers over training: ``runs`` are (variant, run id)
    pairs; one colour per variant, one line per pretraining seed."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    drawn = 0
    colors: dict[str, tuple] = {}
    for variant, run_id in runs:
        hist_path = metrics_root / run_id / "history.json"
        if not hist_path.is_file():
            continue
        epochs, values = sigma_history(hist_path)
        if epochs:
            first = variant not in colors
            colors.setdefault(variant, plt.cm.tab10(len(colors) % 10))
            label = variant if first else None
            ax.plot(epochs, values, marker="o", ms=3, color=colors[variant], label=label)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel("Σ σ_max² over feature layers")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def plot_queries(
    variants: list[dict], methods: list[str], budgets: list[int], out: Path, title: str
) -> Path | None:
    """Small multiples, one panel per variant: mean Δ within each query budget, a line per method.

    ``variants``: rows of ``summarize_variants`` of one kind and target (``at<budget>_<method>``
    columns, averaged over seeds). Panels share the y axis so variants compare at a glance.
    None when no variant has a per-budget value.
    """
    curves = []
    for v in variants:
        lines = {}
        for m in methods:
            y = np.array([v.get(f"at{b}_{m}_mean", np.nan) for b in budgets], dtype=float)
            if np.isfinite(y).any():
                lines[m] = y
        if lines:
            curves.append((v["variant"], lines))
    if not curves or not budgets:
        return None
    rows, cols = _grid(len(curves))
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.0 * cols, 2.4 * rows + 0.6), sharex=True, sharey=True, squeeze=False
    )
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for ax, (name, lines) in zip(axes.flat, curves, strict=False):
        for m, y in lines.items():
            ax.plot(budgets, y, marker="o", ms=3, color=colors[m], label=m)
        ax.set_title(name, fontsize=8)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(curves) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("queries", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("mean Δ", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    return _save(fig, out)


def _sd(row: dict, field: str) -> float | None:
    sd = row.get(f"{field}_std", math.nan)
    return sd if isinstance(sd, float) and math.isfinite(sd) else None


def plot_tradeoff(panels: list[tuple[str, list[dict]]], out: Path, margin: float, baseline: str):
    """Test accuracy against mean Δ per variant, one panel per (title, variants).

    Bars: ±1 standard deviation over pretraining seeds (``test_acc_std``, ``mean_distance_std``);
    the shaded band is the accuracy non-inferiority margin below the baseline. None without data.
    """
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    rows, cols = _grid(len(panels), max_cols=2)
    fig, axes = plt.subplots(rows, cols, figsize=(7.0 * cols, 4.0 * rows), squeeze=False)
    markers = "o^vDPXph<>"
    for ax, (title, variants) in zip(axes.flat, panels, strict=False):
        base = [v for v in variants if v["variant"] in (baseline, f"{baseline}/{baseline}")]
        if base and math.isfinite(base[0]["test_acc_mean"]):
            top = base[0]["test_acc_mean"]
            ax.axvspan(top - margin, top, color="0.9", zorder=0)
        # Colour by backbone, marker by finetune regularizer: groups stay visible with many runs.
        backbones = sorted({v["backbone"] for v in variants})
        regs = sorted({str(v["regularizer"]) for v in variants})
        for v in variants:
            x, y = v["test_acc_mean"], v["mean_distance_mean"]
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            is_base = v["variant"] in (baseline, f"{baseline}/{baseline}")
            color = "black" if is_base else plt.cm.tab10(backbones.index(v["backbone"]) % 10)
            marker = "s" if is_base else markers[regs.index(str(v["regularizer"])) % len(markers)]
            ax.errorbar(
                x,
                y,
                xerr=_sd(v, "test_acc"),
                yerr=_sd(v, "mean_distance"),
                fmt=marker,
                color=color,
                ms=5,
                capsize=2,
                lw=0.8,
                label=v["variant"],
            )
            if len(variants) <= 8:
                ax.annotate(
                    v["variant"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7
                )
        if len(variants) > 8:
            ncol = math.ceil(len(variants) / 16)
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=ncol)
        ax.set_title(title, fontsize=9)
        ax.locator_params(axis="x", nbins=5)
        ax.set_xlabel("test accuracy", fontsize=8)
        ax.set_ylabel("mean Δ (best over attacks)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, out)
