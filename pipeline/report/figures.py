"""Figures: accuracy next to mean adversarial distance (the papers' Fig. 1/7/8), σ_max curves."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_transfer(groups: list[dict], label_keys: tuple[str, ...], out: Path, title: str) -> Path:
    """Two panels: test accuracy and mean Δ per variant, bars with ±1 std over seeds."""
    labels = ["/".join(str(g[k]) for k in label_keys) for g in groups]
    x = np.arange(len(groups))
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.1 * len(groups) + 3), 3.8))
    for ax, key, name in (
        (axes[0], "test_acc", "test accuracy"),
        (axes[1], "mean_distance", "mean adversarial distance Δ (Tangent Attack)"),
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
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_pretrain_sigmas(metrics_root: Path, variants: list[str], out: Path) -> Path | None:
    """Σ σ_max² of the backbone's feature layers over training, one line per pretraining variant."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    drawn = 0
    for v in variants:
        hist_path = metrics_root / v / "history.json"
        if not hist_path.is_file():
            continue
        history = json.loads(hist_path.read_text())
        epochs = [r["epoch"] for r in history if "sum_sigma_max_sq" in r]
        values = [r["sum_sigma_max_sq"] for r in history if "sum_sigma_max_sq" in r]
        if epochs:
            ax.plot(epochs, values, marker="o", ms=3, label=v)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel("Σ σ_max² over feature layers")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
