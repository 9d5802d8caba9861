"""Pieces shared by the experiment stages: model construction, the attack call, branching,
the per-seed tables."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel
from torch import nn

from pipeline.attacks import LabelOracle, tangent_attack
from pipeline.core.config import ModelSpec
from pipeline.core.io import write_csv, write_json
from pipeline.experiments.config import AttackSettings
from pipeline.experiments.trainer import Snapshot, TrainResult, TrainSettings, train_in_memory
from pipeline.models import SplitModel, build_model
from pipeline.regularizers import Regularizer, build_regularizers


def mlp(
    in_chans: int, image_size: int, hidden: list[int], activation: str, classes: int, seed: int
):
    """A fresh MLP SplitModel whose init depends only on ``seed``."""
    torch.manual_seed(seed)
    spec = ModelSpec(arch="mlp", hidden=list(hidden), activation=activation)
    return build_model(spec, in_chans, classes, image_size)


def branch_epoch(variants: dict[str, list], epochs: int) -> int:
    """First epoch at which any variant's training differs from plain training.

    Every regularizer is inactive before its burn-in, so all variants of a seed are identical up
    to the smallest burn-in and can share that prefix (see :mod:`pipeline.experiments.trainer`).
    """
    burn_ins = [r.burn_in for regs in variants.values() for r in regs]
    return min([epochs, *burn_ins])


def build_variant(configs: list) -> list[Regularizer]:
    return build_regularizers(configs)


@dataclass
class VariantRun:
    """One trained model of one variant and seed, with its training history."""

    model: SplitModel
    history: list[dict]


def train_variants(
    make_model: Callable[[], SplitModel],
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    variants: dict[str, list],
    start: Snapshot,
) -> dict[str, VariantRun]:
    """Continue each regularized variant from the shared plain-phase snapshot."""
    runs = {}
    for name, configs in variants.items():
        model = make_model()
        result: TrainResult = train_in_memory(
            model, x, y, settings, build_variant(configs), start=start
        )
        runs[name] = VariantRun(model, result.history)
    return runs


def run_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: AttackSettings,
    pool: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed_offset: int = 0,
) -> dict:
    """Tangent Attack on the given (correctly classified) points: per-point distances and queries.

    The model is queried only through a :class:`LabelOracle` (hard labels, counted queries).
    """
    model.eval()
    oracle = LabelOracle(model, chunk_size=settings.chunk_size)
    result = tangent_attack(
        oracle,
        x,
        y,
        iterations=settings.iterations,
        gamma=settings.gamma,
        init_probes=settings.init_probes,
        max_probes=settings.max_probes,
        box=tuple(settings.box),
        seed=settings.seed + seed_offset,
        fallback_pool=pool,
    )
    dist = result.distances.double().numpy()
    ok = result.success.numpy()
    return {
        "distances": dist.tolist(),
        "success": ok.tolist(),
        # over the fooled samples; the others are censored (Δ at least anything measured),
        # counted here and kept in "distances" as inf
        "mean_distance": float(dist[ok].mean()) if ok.any() else math.nan,
        "success_rate": float(ok.mean()),
        "censored": int((~ok).sum()),
        "mean_queries": float(result.queries.double().mean()),
        "total_queries": int(oracle.total_queries),
    }


def sigma_layers(rows: list[dict]) -> list[str]:
    """The layers whose final σ_max the runs recorded (``sigma_final/<layer>``)."""
    return [k.split("/", 1)[1] for k in rows[0] if k.startswith("sigma_final/")]


def sigma_keys(rows: list[dict]) -> list[str]:
    """The σ_max metrics of those layers: at the branch epoch, then at the end."""
    layers = sigma_layers(rows)
    return [f"sigma_branch/{la}" for la in layers] + [f"sigma_final/{la}" for la in layers]


def write_seed_tables(
    out: Path,
    experiment: str,
    settings: BaseModel,
    rows: list[dict],
    groups: list[dict],
    extra: dict,
) -> None:
    """``metrics.json`` (settings, every run, the per-group means over seeds, ``extra``) and the
    same runs and groups as ``runs.csv`` and ``groups.csv`` (list-valued fields left out)."""
    layers = sigma_layers(rows)
    write_json(
        out / "metrics.json",
        {
            "experiment": experiment,
            "settings": settings.model_dump(mode="json"),
            "feature_layers": [la for la in layers if la != "head"],
            "runs": rows,
            "groups": groups,
            **extra,
        },
    )
    write_csv(
        out / "runs.csv", [{k: v for k, v in r.items() if not isinstance(v, list)} for r in rows]
    )
    write_csv(out / "groups.csv", groups)
