"""rep-spectral strength sweep on the embedded transfer task: accuracy vs adversarial distance.

For each strength γ and each mode - ``plain`` (σ_max of each conv kernel alone) and ``folded``
(σ_max of conv + BatchNorm as the eval-mode network applies them, ``fold_bn``) - pretrain a
small ResNet on digits 0-4 with rep-spectral, freeze it, fit a logistic-regression readout on
digits 5-9 (classes the backbone never saw) and measure on the 5-9 test split:

* readout test accuracy;
* mean Tangent-Attack distance of correctly classified test images (the first ``n_attack`` of
  one fixed random order, so models are compared on almost the same images);
* Σ σ_max² and max σ_max of the backbone, plain and folded (what each penalty acts on).

γ = 0 is the shared unregularized baseline. All runs of a seed share the plain phase up to the
burn-in epoch (see :mod:`pipeline.experiments.trainer`), so the sweep costs one plain phase plus
one regularized tail per (mode, γ). A run whose loss becomes non-finite is kept as a row with
``diverged: true`` and NaN metrics (a strong folded penalty can diverge under plain SGD: see
docs/methods.md). The question it answers: does giving up at most
``accuracy_budget`` of accuracy buy a ``distance_gain`` larger mean distance at CPU scale?
Per γ the outputs carry the mean over seeds with a 95% t-interval, and γ is recommended only
where target and pretraining accuracy are shown non-inferior to γ = 0 within
``accuracy_budget`` (:mod:`pipeline.experiments.sweep_stats`); that choice is exploratory.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.core.config import ModelSpec
from pipeline.core.errors import TrainingError
from pipeline.core.io import write_csv, write_json
from pipeline.data import load_tensors, open_source, to_pixel_tensor
from pipeline.experiments import plots
from pipeline.experiments.common import run_attack
from pipeline.experiments.config import ExperimentsConfig, SweepSettings
from pipeline.experiments.sweep_stats import curves, recommend
from pipeline.experiments.trainer import TrainSettings, accuracy, train_in_memory
from pipeline.experiments.util import cpu_seconds
from pipeline.models import SplitModel, build_model
from pipeline.readout import fit_readout, install_readout
from pipeline.regularizers import RepSpectral, spectral_summary

log = logging.getLogger(__name__)
MODES = ("plain", "folded")
METRICS = ("pretrain_acc", "sum_sigma_sq_plain", "max_sigma_plain", "sum_sigma_sq_folded",
           "max_sigma_folded", "target_acc", "mean_distance", "success_rate", "attacked",
           "readout_converged")  # fmt: skip


def load_split(s: SweepSettings, classes: list[int]) -> dict[str, torch.Tensor]:
    """Train/test pixels in [0, 1], ``(N, 1, size, size)``, of the given digits (relabelled 0..k-1)."""
    transform = to_pixel_tensor(False, s.image_size, 1, "none")
    out = {}
    for split in ("train", "test"):
        ds = open_source(
            "digits", split=split, classes=classes, image_size=s.image_size,
            test_fraction=s.test_fraction, split_seed=s.split_seed,
        )  # fmt: skip
        out[f"x_{split}"], out[f"y_{split}"] = load_tensors(ds, transform)
    return out


def make_model(s: SweepSettings, classes: int, seed: int) -> SplitModel:
    """A fresh small ResNet on [0, 1] pixels normalized with mean = std = 0.5 (as the main DAG)."""
    torch.manual_seed(seed)
    spec = ModelSpec(arch="small_resnet", widths=list(s.widths), blocks=list(s.blocks))
    return build_model(spec, 1, classes, s.image_size, mean=(0.5,), std=(0.5,))


def regularizers(s: SweepSettings, mode: str, strength: float) -> list[RepSpectral]:
    if strength == 0:
        return []
    return [
        RepSpectral(
            strength=strength,
            burn_in=s.burn_in,
            power_steps=s.power_steps,
            refresh_every=s.refresh_every,
            fold_bn=mode == "folded",
        )
    ]


@torch.no_grad()
def _features(model: SplitModel, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return model.representation(x).double().numpy()


def evaluate_transfer(model: SplitModel, s: SweepSettings, target: dict, order, seed: int) -> dict:
    """Frozen backbone + logistic readout on the target: accuracy and Tangent-Attack distance."""
    clf, converged = fit_readout(
        _features(model, target["x_train"]), target["y_train"].numpy(),
        C=s.readout.C, max_iter=s.readout.max_iter,
    )  # fmt: skip
    readout = copy.deepcopy(model)
    install_readout(readout, clf, len(s.target_classes))
    readout.eval()
    x, y = target["x_test"], target["y_test"]
    with torch.no_grad():
        pred = readout(x).argmax(1)
    idx = order[pred[order] == y[order]][: s.n_attack]
    attack = run_attack(
        readout, x[idx], y[idx], s.attack, pool=(target["x_train"], target["y_train"]),
        seed_offset=seed,
    )  # fmt: skip
    return {
        "target_acc": accuracy(readout, x, y),
        "mean_distance": attack["mean_distance"],
        "success_rate": attack["success_rate"],
        "attacked": int(idx.numel()),
        "readout_converged": converged,
    }


def spectra(model: SplitModel, example: torch.Tensor) -> dict[str, float]:
    plain = spectral_summary(model, example)
    folded = spectral_summary(model, example, fold_bn=True)
    return {
        "sum_sigma_sq_plain": plain["sum_sigma_max_sq"],
        "max_sigma_plain": plain["max_sigma_max"],
        "sum_sigma_sq_folded": folded["sum_sigma_max_sq"],
        "max_sigma_folded": folded["max_sigma_max"],
    }


def run_seed(s: SweepSettings, source: dict, target: dict, order, seed: int, bar) -> list[dict]:
    """The shared plain phase, then γ = 0 and every (mode, γ > 0) from its snapshot."""

    def settings(epochs: int) -> TrainSettings:
        return TrainSettings(
            epochs=epochs, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay,
            batch_size=s.batch_size, seed=seed, log_every=epochs, log_sigma=False,
        )  # fmt: skip

    def make() -> SplitModel:
        return make_model(s, len(s.pretrain_classes), seed)

    x, y = source["x_train"], source["y_train"]
    plain = train_in_memory(make(), x, y, settings(s.burn_in))
    runs = [("none", 0.0)] + [(m, g) for m in s.modes for g in s.strengths if g > 0]
    rows = []
    for mode, strength in runs:
        model = make()
        row = {"seed": seed, "mode": mode, "strength": strength}
        try:
            train_in_memory(
                model, x, y, settings(s.epochs), regularizers(s, mode, strength),
                start=plain.snapshot,
            )  # fmt: skip
        except TrainingError as err:  # a diverged run is a result of the sweep, not a crash
            log.warning("strength_sweep: %s γ=%g seed %d diverged: %s", mode, strength, seed, err)
            rows.append({**row, **dict.fromkeys(METRICS, math.nan), "diverged": True})
            bar.update(1)
            continue
        row["pretrain_acc"] = accuracy(model, source["x_test"], source["y_test"])
        row.update(spectra(model, x[:4]))
        row.update(evaluate_transfer(model, s, target, order, seed))
        row["diverged"] = False
        rows.append(row)
        bar.update(1)
    return rows


def write_outputs(s: SweepSettings, rows: list[dict], extra: dict) -> None:
    out = Path(s.out)
    by_mode = curves(rows, s.modes, margin=s.accuracy_budget)
    best = {m: recommend(points) for m, points in by_mode.items()}
    write_json(
        out / "metrics.json",
        {"experiment": "strength_sweep", "settings": s.model_dump(mode="json"), "runs": rows,
         "curves": by_mode, "best": best, **extra},
    )  # fmt: skip
    write_csv(out / "sweep.csv", rows)
    write_csv(out / "curves.csv", [p for points in by_mode.values() for p in points])
    plots.tradeoff_curves(
        {m: [(p["mean_distance_mean"], p["target_acc_mean"], p["strength"]) for p in pts]
         for m, pts in by_mode.items()},
        {m: [(p["strength"], p["sum_sigma_sq_folded_mean"]) for p in pts]
         for m, pts in by_mode.items()},
        f"rep-spectral strength sweep: digits 0-4 → 5-9 readout ({len(s.seeds)} seed(s), "
        f"{s.epochs} epochs, Δ over ≤{s.n_attack} images, T={s.attack.iterations})",
        out / "tradeoff.png",
    )  # fmt: skip


def run(cfg: ExperimentsConfig) -> dict:
    """Every seed × mode × γ; writes ``metrics.json``, ``sweep.csv``, ``curves.csv``, a figure."""
    s = cfg.strength_sweep
    source = load_split(s, list(s.pretrain_classes))
    target = load_split(s, list(s.target_classes))
    order = torch.randperm(
        target["x_test"].shape[0], generator=torch.Generator().manual_seed(s.attack.seed)
    )
    total = len(s.seeds) * (1 + len(s.modes) * sum(g > 0 for g in s.strengths))
    rows = []
    with tqdm(total=total, desc="strength sweep", disable=not cfg.run.progress) as bar:
        for seed in s.seeds:
            rows += run_seed(s, source, target, order, seed, bar)
    write_outputs(s, rows, {"cpu_seconds": cpu_seconds()})
    log.info("strength_sweep: wrote %s", s.out)
    return {"runs": len(rows)}
