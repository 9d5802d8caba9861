"""rep-spectral Appendix F.1: XOR with a 2-8-2 GELU MLP (Figs. 2, 3 and 4).

Four points ``(±1, ±1)``, label 1 where the signs differ. Full-batch GD (one optimizer step per
epoch), for every weight decay × variant (none / ll-spectral / rep-spectral) × seed. Per model:

* Tangent-Attack distance of each training point, in the box ``attack.box`` (Fig. 2);
* the exact minimal distance to the decision boundary on a dense grid (2-D only: a check on
  the attack, and the "margin" the paper reads off Fig. 3a);
* decision map and volume element ``√det(JᵀJ)`` of the feature map Φ over the plane (Fig. 3),
  summarized per seed as the median volume element near the class centres;
* σ_max of every weight layer over training (Fig. 4).

All variants of a seed share the plain phase up to the first burn-in (epoch 10 500 of 15 000),
which runs once, stacked over seeds; see :mod:`pipeline.experiments.trainer`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.analysis import decision_map, grid, volume_element
from pipeline.core.io import write_csv
from pipeline.experiments import plots
from pipeline.experiments.common import (
    branch_epoch,
    mlp,
    run_attack,
    sigma_keys,
    sigma_layers,
    write_seed_tables,
)
from pipeline.experiments.config import ExperimentsConfig, XorSettings
from pipeline.experiments.trainer import (
    TrainSettings,
    accuracy,
    train_in_memory,
    train_stacked,
    weight_layers,
)
from pipeline.experiments.util import cpu_seconds
from pipeline.regularizers import build_regularizers
from pipeline.report.stats import mean_std

log = logging.getLogger(__name__)


def xor_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The four XOR points and their labels (1 where the two coordinates differ in sign)."""
    x = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    y = (x[:, 0] * x[:, 1] < 0).long()
    return x, y


def grid_margin(
    decisions: np.ndarray, xs: np.ndarray, ys: np.ndarray, points, labels
) -> list[float]:
    """Per point: distance to the nearest grid point labelled differently (inf if none).

    In 2-D a dense grid gives the true minimal adversarial distance inside the window up to the
    grid spacing, which makes it a ground truth for the attack and a direct measure of margin.
    """
    gx, gy = np.meshgrid(xs, ys)
    out = []
    for (px, py), label in zip(np.asarray(points), np.asarray(labels)):
        other = decisions != label
        if not other.any():
            out.append(math.inf)
            continue
        out.append(float(np.sqrt((gx[other] - px) ** 2 + (gy[other] - py) ** 2).min()))
    return out


def _near_centres(points: torch.Tensor, centres: torch.Tensor, radius: float) -> torch.Tensor:
    return (torch.cdist(points, centres) <= radius).any(dim=1)


def model_maps(model, s: XorSettings, x: torch.Tensor, steps: int, volume: bool = True) -> dict:
    """Decision map (and volume element of Φ) on a ``steps × steps`` grid of the window."""
    lo, hi = s.maps.window
    g = grid((lo, hi), (lo, hi), steps)
    model.eval()
    out = {"xs": g.xs.numpy(), "ys": g.ys.numpy(), "decisions": decision_map(model, g).numpy()}
    if volume:
        vol = volume_element(model.backbone, g.points).numpy()
        near = _near_centres(g.points, x, s.maps.center_radius).numpy()
        out["volume"] = g.as_image(vol)
        out["centre_volume_median"] = float(np.median(vol[near]))
        out["centre_log10_volume_mean"] = float(np.mean(np.log10(np.maximum(vol[near], 1e-30))))
    return out


def _settings(s: XorSettings, wd: float, epochs: int) -> TrainSettings:
    return TrainSettings(
        epochs=epochs, lr=s.lr, momentum=s.momentum, weight_decay=wd, log_every=s.log_every
    )


def train_all(s: XorSettings, progress: bool = True) -> dict:
    """Train every (weight decay, variant, seed); returns models and σ histories by key."""
    x, y = xor_data()

    def make(seed: int):
        return mlp(2, 1, [s.hidden], s.activation, 2, seed)

    branch = branch_epoch(s.variants, s.epochs)
    models, histories = {}, {}
    total = len(s.weight_decays) * sum(
        1 if not regs else len(s.seeds) for regs in s.variants.values()
    )
    bar = tqdm(total=total, desc="xor train", disable=not progress, dynamic_ncols=True)
    for wd in s.weight_decays:
        plain_models = [make(seed) for seed in s.seeds]
        plain = train_stacked(plain_models, x, y, _settings(s, wd, branch))
        starts = [r.snapshot for r in plain]
        for variant, configs in s.variants.items():
            full = _settings(s, wd, s.epochs)
            if not configs:  # no regularizer: all seeds at once
                ms = [make(seed) for seed in s.seeds]
                results = train_stacked(ms, x, y, full, starts=starts)
                bar.update(1)
            else:
                ms, results = [], []
                for seed, snap in zip(s.seeds, starts):
                    m = make(seed)
                    results.append(
                        train_in_memory(m, x, y, full, build_regularizers(configs), start=snap)
                    )
                    ms.append(m)
                    bar.update(1)
            for seed, m, p, r in zip(s.seeds, ms, plain, results):
                models[(wd, variant, seed)] = m
                histories[(wd, variant, seed)] = p.history + r.history
    bar.close()
    return {"models": models, "histories": histories, "branch": branch, "x": x, "y": y}


def evaluate(s: XorSettings, trained: dict, progress: bool = True) -> tuple[list[dict], dict]:
    """Attack, grid margin, volume statistics and σ_max summary of every model."""
    x, y = trained["x"], trained["y"]
    branch = trained["branch"]
    rows, figure_maps = [], {}
    items = list(trained["models"].items())
    for (wd, variant, seed), model in tqdm(
        items, desc="xor evaluate", disable=not progress, dynamic_ncols=True
    ):
        acc = accuracy(model, x, y)
        with torch.no_grad():
            correct = (model(x).argmax(1) == y).nonzero().flatten()
        attack = run_attack(
            model, x[correct], y[correct], s.attack, pool=(x, y), seed_offset=seed
        ) if correct.numel() else {"distances": [], "mean_distance": math.nan}  # fmt: skip
        fine = model_maps(model, s, x, s.maps.steps, volume=seed == s.maps.seed)
        margins = grid_margin(fine["decisions"], fine["xs"], fine["ys"], x[correct], y[correct])
        stats = model_maps(model, s, x, s.maps.stats_steps)
        if seed == s.maps.seed:
            figure_maps[(wd, variant)] = fine
        hist = trained["histories"][(wd, variant, seed)]
        at_branch = next((h for h in hist if h["epoch"] == branch), hist[0])
        row = {
            "weight_decay": wd,
            "variant": variant,
            "seed": seed,
            "train_acc": acc,
            "mean_distance": attack["mean_distance"],
            "distances": attack["distances"],
            "mean_grid_margin": float(np.mean(margins)) if margins else math.nan,
            "grid_margins": margins,
            "centre_volume_median": stats["centre_volume_median"],
            "centre_log10_volume_mean": stats["centre_log10_volume_mean"],
        }
        for layer, _ in weight_layers(model):
            row[f"sigma_branch/{layer}"] = at_branch[f"sigma/{layer}"]
            row[f"sigma_final/{layer}"] = hist[-1][f"sigma/{layer}"]
        rows.append(row)
    return rows, figure_maps


def group_summary(rows: list[dict], keys: list[str]) -> list[dict]:
    """Mean and std over seeds of each numeric metric, per weight decay and variant."""
    out = []
    for wd in sorted({r["weight_decay"] for r in rows}):
        for variant in dict.fromkeys(r["variant"] for r in rows):
            sel = [r for r in rows if r["weight_decay"] == wd and r["variant"] == variant]
            if not sel:
                continue
            g = {"weight_decay": wd, "variant": variant, "seeds": len(sel)}
            for k in keys:
                g[f"{k}_mean"], g[f"{k}_std"] = mean_std(r[k] for r in sel)
            out.append(g)
    return out


def _sigma_panels(s: XorSettings, histories: dict, layers: list[str]) -> dict:
    panels = {}
    for wd in s.weight_decays:
        for layer in layers:
            series = {}
            for variant in s.variants:
                hs = [histories[(wd, variant, seed)] for seed in s.seeds]
                ep = np.array([h["epoch"] for h in hs[0]])
                vals = np.array([[h[f"sigma/{layer}"] for h in hist] for hist in hs])
                series[variant] = (ep, vals.mean(0), vals.std(0))
            panels[(f"wd={wd:g}", layer)] = series
    return panels


def write_outputs(s: XorSettings, trained: dict, rows: list[dict], maps: dict):
    out = Path(s.out)
    x, y = trained["x"].numpy(), trained["y"].numpy()
    variants = list(s.variants)
    layers = sigma_layers(rows)
    keys = ["mean_distance", "mean_grid_margin", "centre_volume_median", "train_acc"]
    groups = group_summary(rows, keys + sigma_keys(rows))
    extra = {"branch_epoch": trained["branch"], "cpu_seconds": cpu_seconds()}
    write_seed_tables(out, "xor", s, rows, groups, extra)
    sigma_rows = [
        {"weight_decay": wd, "variant": v, "seed": seed, "epoch": h["epoch"], **{
            la: h[f"sigma/{la}"] for la in layers}}
        for (wd, v, seed), hist in trained["histories"].items()
        for h in hist
    ]  # fmt: skip
    write_csv(out / "sigma_history.csv", sigma_rows)

    wd_names = [f"wd={wd:g}" for wd in s.weight_decays]
    for key, label, name in (
        ("mean_distance", "mean Δ (Tangent Attack)", "fig2_distance.png"),
        ("mean_grid_margin", "mean exact distance (grid)", "fig2_exact_margin.png"),
    ):
        values = {(f"wd={r['weight_decay']:g}", r["variant"]): [] for r in rows}
        for r in rows:
            values[(f"wd={r['weight_decay']:g}", r["variant"])].append(r[key])
        plots.bars_with_seeds(
            wd_names, variants, values, label,
            f"XOR: {label} over {len(s.seeds)} seeds (±1 std)", out / name,
        )  # fmt: skip
    for wd in s.weight_decays:
        plots.xor_maps(
            maps[(wd, variants[0])]["xs"], maps[(wd, variants[0])]["ys"],
            {v: maps[(wd, v)]["decisions"] for v in variants},
            {v: maps[(wd, v)]["volume"] for v in variants},
            x, y, f"XOR seed {s.maps.seed}, weight decay {wd:g}",
            out / f"fig3_maps_wd{wd:g}.png",
        )  # fmt: skip
    plots.sigma_curves(
        _sigma_panels(s, trained["histories"], layers), wd_names, layers, trained["branch"],
        "XOR: σ_max per layer over training (mean ± std over seeds)", out / "fig4_sigma.png",
    )  # fmt: skip


def run(cfg: ExperimentsConfig) -> dict:
    """Train, evaluate and write ``metrics.json``, CSVs and Figs. 2-4 under ``xor.out``."""
    s = cfg.xor
    trained = train_all(s, cfg.run.progress)
    rows, maps = evaluate(s, trained, cfg.run.progress)
    write_outputs(s, trained, rows, maps)
    log.info("xor: wrote %s", s.out)
    return {"runs": len(rows)}


__all__ = ["grid_margin", "model_maps", "run", "train_all", "xor_data"]
