"""Figures of the paper experiments (matplotlib, Agg backend), written atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from pipeline.report.stats import mean_std  # noqa: E402

COLORS = {
    "none": "tab:gray",
    "ll_spectral": "tab:orange",
    "rep_spectral": "tab:blue",
    "lr": "tab:green",
    "simclr": "tab:purple",
    "simclr_rep_spectral": "tab:cyan",
    "barlow_twins": "tab:brown",
    "barlow_twins_rep_spectral": "tab:olive",
    "readout_spectral": "tab:red",
    "plain": "tab:blue",  # strength sweep: rep-spectral on kernels alone
    "folded": "tab:green",  # strength sweep: rep-spectral on conv + BatchNorm
}
_SPARE = ("tab:red", "tab:pink", "black", "gold", "navy", "teal")


def color(name: str) -> str:
    """A fixed colour per variant, so one variant looks the same in every figure."""
    if name in COLORS:
        return COLORS[name]
    return _SPARE[sum(map(ord, name)) % len(_SPARE)]


def save_figure(fig, path: str | Path) -> None:
    """Write to a temporary name, then rename: a crash never leaves half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def _jitter(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.12, 0.12, n)


def bars_with_seeds(
    groups: Sequence[str],
    variants: Sequence[str],
    values: dict[tuple[str, str], list[float]],
    ylabel: str,
    title: str,
    path: str | Path,
) -> None:
    """Mean ± 1 std over seeds as bars (one cluster per group), individual seeds as dots (Fig. 2)."""
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 3.4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, group in zip(axes, groups):
        for i, v in enumerate(variants):
            vals = np.asarray(values.get((group, v), []), dtype=float)
            vals = vals[np.isfinite(vals)]
            if vals.size == 0:
                continue
            mean, std = mean_std(vals)
            ax.bar(i, mean, yerr=std, color=color(v), alpha=0.7, capsize=4)
            ax.scatter(i + _jitter(vals.size, i), vals, s=10, color="k", zorder=3)
        ax.set_xticks(range(len(variants)), variants, rotation=20)
        ax.set_title(group)
    axes[0].set_ylabel(ylabel)
    fig.suptitle(title, y=1.03)
    save_figure(fig, path)


def boxes_with_seeds(
    variants: Sequence[str],
    panels: Sequence[tuple[str, dict[str, list[float]]]],
    title: str,
    path: str | Path,
) -> None:
    """Box plots (median, quartiles) with every seed as a gray dot (Figs. 5-6)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    axes = np.atleast_1d(axes)
    for ax, (label, values) in zip(axes, panels):
        data = [np.asarray(values.get(v, []), dtype=float) for v in variants]
        ax.boxplot(data, showmeans=True)
        for i, vals in enumerate(data):
            ax.scatter(i + 1 + _jitter(vals.size, i), vals, s=12, color="gray", zorder=3)
        ax.set_xticks(range(1, len(variants) + 1), variants, rotation=20)
        ax.set_ylabel(label)
    fig.tight_layout()
    fig.suptitle(title, y=1.03)
    save_figure(fig, path)


def xor_maps(
    xs: np.ndarray,
    ys: np.ndarray,
    decisions: dict[str, np.ndarray],
    volumes: dict[str, np.ndarray],
    points: np.ndarray,
    labels: np.ndarray,
    title: str,
    path: str | Path,
) -> None:
    """Decision regions (top row) and log-scaled volume element √det g (bottom row) (Fig. 3)."""
    names = list(decisions)
    fig, axes = plt.subplots(2, len(names), figsize=(3.4 * len(names), 6.6), squeeze=False)
    positive = np.concatenate([v[v > 0].ravel() for v in volumes.values()] + [np.ones(1)])
    norm = LogNorm(vmin=max(positive.min(), positive.max() * 1e-6), vmax=positive.max())
    for j, name in enumerate(names):
        ax = axes[0, j]
        ax.contourf(xs, ys, decisions[name], levels=[-0.5, 0.5, 1.5], colors=["#c6dbef", "#fdd0a2"])
        ax.contour(xs, ys, decisions[name], levels=[0.5], colors="k", linewidths=1)
        ax.set_title(name)
        mesh = axes[1, j].pcolormesh(
            xs, ys, np.clip(volumes[name], norm.vmin, None), norm=norm, shading="auto"
        )
        for ax in axes[:, j]:
            ax.scatter(
                points[:, 0], points[:, 1], c=["tab:blue" if c == 0 else "tab:red" for c in labels],
                edgecolors="k", s=40, zorder=3,
            )  # fmt: skip
            ax.set_aspect("equal")
    fig.colorbar(mesh, ax=axes[1, :].tolist(), label="volume element √det(JᵀJ)", shrink=0.8)
    axes[0, 0].set_ylabel("decision regions")
    axes[1, 0].set_ylabel("volume element")
    fig.suptitle(title)
    save_figure(fig, path)


def sigma_curves(
    panels: dict[tuple[str, str], dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]],
    rows: Sequence[str],
    cols: Sequence[str],
    burn_in: int | None,
    title: str,
    path: str | Path,
) -> None:
    """σ_max per layer over training, mean ± std over seeds per variant (Fig. 4).

    ``panels[(row, col)][variant] = (epochs, mean, std)``.
    """
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(4.2 * len(cols), 3.0 * len(rows)), squeeze=False
    )
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            ax = axes[i, j]
            for variant, (ep, mean, std) in panels.get((row, col), {}).items():
                ax.plot(ep, mean, color=color(variant), label=variant)
                ax.fill_between(ep, mean - std, mean + std, color=color(variant), alpha=0.2)
            if burn_in is not None:
                ax.axvline(burn_in, color="k", ls=":", lw=1)
            ax.set_title(f"{col} ({row})", fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel("σ_max")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def line_panels(
    panels: Sequence[tuple[str, str, str, dict[str, tuple[Sequence[float], Sequence[float]]]]],
    title: str,
    path: str | Path,
    logx: Sequence[bool] = (),
) -> None:
    """Several panels of one line per series: ``(title, xlabel, ylabel, {name: (x, y)})``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.5), squeeze=False)
    for j, (sub, xlabel, ylabel, series) in enumerate(panels):
        ax = axes[0, j]
        for name, (xv, yv) in series.items():
            ax.plot(xv, yv, marker="o", ms=3, color=color(name), label=name)
        if j < len(logx) and logx[j]:
            ax.set_xscale("log")
        ax.set_title(sub, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if not series:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    if axes[0, 0].get_legend_handles_labels()[0]:
        axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def tradeoff_curves(
    tradeoff: dict[str, Sequence[tuple[float, float, float]]],
    spectrum: dict[str, Sequence[tuple[float, float]]],
    title: str,
    path: str | Path,
) -> None:
    """Left: accuracy vs mean distance per series, points labelled with their strength γ.

    Right: the backbone's folded Σ σ_max² against γ (symlog x, since γ = 0 is a point).
    ``tradeoff``: ``{name: [(distance, accuracy, γ), ...]}``; ``spectrum``: ``{name: [(γ, v)]}``.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, points in tradeoff.items():
        xs, ys, gammas = zip(*points)
        left.plot(xs, ys, marker="o", color=color(name), label=name)
        for x, y, g in points:
            left.annotate(f"{g:g}", (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
    left.set_xlabel("mean Tangent-Attack distance Δ")
    left.set_ylabel("target test accuracy")
    left.set_title("accuracy vs distance (labels: γ)", fontsize=9)
    for name, points in spectrum.items():
        gs, vs = zip(*points)
        right.plot(gs, vs, marker="o", color=color(name), label=name)
    right.set_xscale(
        "symlog", linthresh=min(g for pts in spectrum.values() for g, _ in pts if g > 0)
    )
    right.set_yscale("log")
    right.set_xlabel("strength γ")
    right.set_ylabel("Σ σ_max² (conv+BN folded)")
    right.set_title("what the folded penalty sees", fontsize=9)
    left.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
