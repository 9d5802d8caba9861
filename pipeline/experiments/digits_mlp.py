"""rep-spectral Appendix F.2 on scikit-learn's 8×8 digits: one-hidden-layer MLP (Figs. 5 and 6).

For every seed and variant (none / ll-spectral / rep-spectral): train the MLP with SGD, measure
test accuracy and the mean Tangent-Attack distance of correctly classified test images (Fig. 5);
then discard the head, fit scikit-learn's LogisticRegression (C = 1) on the frozen hidden
features of the training set, install it as the head and measure both again (Fig. 6).

The attacked images are the first ``n_attack`` of one fixed random order of the test set that
each model classifies correctly, so different models are compared on (almost) the same images.
Variants of a seed share the plain phase up to the first burn-in (see ``trainer``).
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.data import load_tensors, open_source, to_pixel_tensor
from pipeline.experiments import plots
from pipeline.experiments.common import (
    branch_epoch,
    mlp,
    run_attack,
    sigma_keys,
    write_seed_tables,
)
from pipeline.experiments.config import DigitsSettings, ExperimentsConfig
from pipeline.experiments.trainer import TrainSettings, accuracy, train_in_memory, weight_layers
from pipeline.experiments.util import cpu_seconds
from pipeline.readout import fit_readout, install_readout
from pipeline.regularizers import build_regularizers
from pipeline.report.stats import mean_std

log = logging.getLogger(__name__)
IMAGE_SIZE = 8
CLASSES = 10


def load_digits_tensors(s: DigitsSettings) -> dict[str, torch.Tensor]:
    """Train/test pixels in [0, 1], shape (N, 1, 8, 8), from the embedded digits source."""
    transform = to_pixel_tensor(False, IMAGE_SIZE, 1, "none")
    out = {}
    for split in ("train", "test"):
        ds = open_source(
            "digits", split=split, test_fraction=s.test_fraction, split_seed=s.split_seed
        )
        out[f"x_{split}"], out[f"y_{split}"] = load_tensors(ds, transform)
    return out


def attack_order(n: int, seed: int) -> torch.Tensor:
    """One fixed random order of the test set, shared by every model."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def chosen_correct(model, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, n: int):
    """The first ``n`` indices of ``order`` that ``model`` classifies correctly."""
    model.eval()
    pred = model(x).argmax(1)
    keep = order[(pred[order] == y[order])]
    return keep[:n]


@torch.no_grad()
def features(model, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return model.representation(x).double().numpy()


def evaluate_model(model, data: dict, s: DigitsSettings, order: torch.Tensor, seed: int) -> dict:
    """Accuracy and mean Tangent-Attack distance of one model on the test set."""
    x, y = data["x_test"], data["y_test"]
    idx = chosen_correct(model, x, y, order, s.n_attack)
    attack = run_attack(
        model, x[idx], y[idx], s.attack, pool=(data["x_train"], data["y_train"]), seed_offset=seed
    )
    return {
        "test_acc": accuracy(model, x, y),
        "mean_distance": attack["mean_distance"],
        "attacked": int(idx.numel()),
        "success_rate": attack["success_rate"],
        "mean_queries": attack["mean_queries"],
        "indices": idx.tolist(),
        "distances": attack["distances"],
    }


def retrain_readout(model, data: dict, s: DigitsSettings):
    """Backbone + a LogisticRegression head fitted on frozen training features (paper F.2)."""
    clf, converged = fit_readout(
        features(model, data["x_train"]),
        data["y_train"].numpy(),
        C=s.readout.C,
        max_iter=s.readout.max_iter,
    )
    readout = copy.deepcopy(model)
    install_readout(readout, clf, CLASSES)
    readout.eval()
    return readout, converged


def run_seed(s: DigitsSettings, data: dict, seed: int, order: torch.Tensor, check_t: int | None):
    """Train every variant of one seed (shared plain phase), evaluate, retrain readouts."""

    def make():
        return mlp(1, IMAGE_SIZE, s.hidden, s.activation, CLASSES, seed)

    def settings(epochs: int) -> TrainSettings:
        return TrainSettings(
            epochs=epochs, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay,
            batch_size=s.batch_size, seed=seed, log_every=max(1, s.epochs // 40),
        )  # fmt: skip

    x, y = data["x_train"], data["y_train"]
    branch = branch_epoch(s.variants, s.epochs)
    plain = train_in_memory(make(), x, y, settings(branch))
    rows = []
    for variant, configs in s.variants.items():
        model = make()
        result = train_in_memory(
            model, x, y, settings(s.epochs), build_regularizers(configs), start=plain.snapshot
        )
        hist = plain.history + result.history
        at_branch = next((h for h in hist if h["epoch"] == branch), hist[0])
        row = {"variant": variant, "seed": seed, "train_acc": accuracy(model, x, y)}
        row.update(evaluate_model(model, data, s, order, seed))
        readout, converged = retrain_readout(model, data, s)
        ro = evaluate_model(readout, data, s, order, seed)
        row.update({f"readout_{k}": v for k, v in ro.items()})
        row["readout_converged"] = converged
        for layer, _ in weight_layers(model):
            row[f"sigma_branch/{layer}"] = at_branch[f"sigma/{layer}"]
            row[f"sigma_final/{layer}"] = hist[-1][f"sigma/{layer}"]
        if check_t is not None:  # the same images with more iterations: what T costs
            longer = s.attack.model_copy(update={"iterations": check_t})
            idx = torch.tensor(row["indices"], dtype=torch.long)
            res = run_attack(
                model, data["x_test"][idx], data["y_test"][idx], longer,
                pool=(x, y), seed_offset=seed,
            )  # fmt: skip
            row["check_iterations"] = check_t
            row["check_mean_distance"] = res["mean_distance"]
        rows.append(row)
    return rows


def group_summary(rows: list[dict], keys: list[str]) -> list[dict]:
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        sel = [r for r in rows if r["variant"] == variant]
        g = {"variant": variant, "seeds": len(sel)}
        for k in keys:
            g[f"{k}_mean"], g[f"{k}_std"] = mean_std(r.get(k, math.nan) for r in sel)
        out.append(g)
    return out


def write_outputs(s: DigitsSettings, rows: list[dict], extra: dict) -> None:
    out = Path(s.out)
    variants = list(s.variants)
    keys = ["test_acc", "mean_distance", "readout_test_acc", "readout_mean_distance", "train_acc"]
    groups = group_summary(rows, keys + sigma_keys(rows))
    write_seed_tables(out, "digits_mlp", s, rows, groups, extra)

    def by_variant(key: str) -> dict[str, list[float]]:
        return {v: [r[key] for r in rows if r["variant"] == v] for v in variants}

    n = f"{len(s.seeds)} seeds, Δ over ≤{s.n_attack} test images, T={s.attack.iterations}"
    plots.boxes_with_seeds(
        variants,
        [("test accuracy", by_variant("test_acc")), ("mean Δ", by_variant("mean_distance"))],
        f"Digits MLP, supervised head ({n})",
        out / "fig5_supervised.png",
    )
    plots.boxes_with_seeds(
        variants,
        [
            ("test accuracy", by_variant("readout_test_acc")),
            ("mean Δ", by_variant("readout_mean_distance")),
        ],
        f"Digits MLP, retrained logistic-regression readout ({n})",
        out / "fig6_readout.png",
    )


def run(cfg: ExperimentsConfig) -> dict:
    """All seeds × variants; writes ``metrics.json``, CSVs and Figs. 5-6 under ``digits_mlp.out``."""
    s = cfg.digits_mlp
    data = load_digits_tensors(s)
    order = attack_order(data["x_test"].shape[0], s.attack.seed)
    rows = []
    for i, seed in enumerate(tqdm(s.seeds, desc="digits seeds", disable=not cfg.run.progress)):
        longer = s.check_iterations
        check = longer if i == 0 and longer and longer != s.attack.iterations else None
        rows += run_seed(s, data, seed, order, check)
    extra = {
        "train_size": int(data["x_train"].shape[0]),
        "test_size": int(data["x_test"].shape[0]),
        "cpu_seconds": cpu_seconds(),
    }
    write_outputs(s, rows, extra)
    log.info("digits_mlp: wrote %s", s.out)
    return {"runs": len(rows)}
