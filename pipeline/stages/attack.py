"""``attack``: mean black-box adversarial distance of a finetuned or readout-retrained model.

Draws ``attack.n_samples`` random correctly classified test samples (fixed seed) and runs the
batched hard-label Tangent Attack on them; writes a per-sample CSV and a summary for dvc metrics.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from pipeline.attacks import LabelOracle, tangent_attack
from pipeline.core import paths
from pipeline.core.errors import ConfigError
from pipeline.core.io import write_csv, write_json
from pipeline.models import load_model
from pipeline.stages.shared import (
    Pixels,
    check_names,
    load_pixels,
    open_split,
    pixel_transform,
    start,
)
from pipeline.stages.spec import MODEL_CODE, Arg, StageSpec

KINDS = ("finetune", "readout")
ARGS = (
    Arg("kind", help="finetune or readout"),
    Arg("target", help="a name under finetune.targets"),
    Arg("backbone", help="a pretrain or ssl variant"),
    Arg("regularizer", required=False, help="the finetune regularizer (kind finetune)"),
    Arg("seed", type=int, required=False, help="the finetune seed (kind finetune)"),
)
_FINETUNE_RUN = paths.finetune_id("{target}", "{backbone}", "{regularizer}", "{seed}")
_READOUT_RUN = paths.readout_id("{target}", "{backbone}")
_ATTACK = {
    "command": "attack",
    "gpus": 1,
    "params": ("attack", "finetune.targets.{target}.data"),
    "code": (*MODEL_CODE, "pipeline/attacks"),
}
STAGES = (
    StageSpec(
        name="attack_finetune",
        matrix={
            "target": "finetune.run.targets",
            "backbone": "finetune.run.backbones",
            "regularizer": "finetune.run.regularizers",
            "seed": "finetune.run.seeds",
        },
        fixed={"kind": "finetune"},
        deps=(str(paths.finetune_model(_FINETUNE_RUN)), str(paths.prepared("{target}"))),
        outs=(str(paths.attack_metrics("finetune", _FINETUNE_RUN) / "samples.csv"),),
        metrics=(str(paths.attack_metrics("finetune", _FINETUNE_RUN) / "summary.json"),),
        **_ATTACK,
    ),
    StageSpec(
        name="attack_readout",
        matrix={"target": "finetune.run.targets", "backbone": "finetune.run.backbones"},
        fixed={"kind": "readout"},
        deps=(str(paths.readout_model(_READOUT_RUN)), str(paths.prepared("{target}"))),
        outs=(str(paths.attack_metrics("readout", _READOUT_RUN) / "samples.csv"),),
        metrics=(str(paths.attack_metrics("readout", _READOUT_RUN) / "summary.json"),),
        **_ATTACK,
    ),
)


def run_id_for(
    kind: str, target: str, backbone: str, regularizer: str | None, seed: int | None
) -> str:
    if kind == "finetune":
        if regularizer is None or seed is None:
            raise ConfigError("attack --kind finetune needs --regularizer and --seed")
        return paths.finetune_id(target, backbone, regularizer, seed)
    if kind == "readout":
        return paths.readout_id(target, backbone)
    raise ConfigError(f"--kind {kind!r}; allowed: {', '.join(KINDS)}")


def _model_path(kind: str, run_id: str):
    return paths.finetune_model(run_id) if kind == "finetune" else paths.readout_model(run_id)


def summarize(distances: np.ndarray, success: np.ndarray, queries: np.ndarray) -> dict:
    """Mean, median, std and a normal-approximation 95% CI of the mean over successful samples."""
    d = distances[success]
    n = int(d.size)
    std = float(d.std(ddof=1)) if n > 1 else 0.0
    mean = float(d.mean()) if n else math.nan
    half = 1.96 * std / math.sqrt(n) if n > 1 else math.nan
    return {
        "n": int(distances.size),
        "mean_distance": mean,
        "median_distance": float(np.median(d)) if n else math.nan,
        "std_distance": std,
        "ci95_low": mean - half,
        "ci95_high": mean + half,
        "success_rate": float(success.mean()) if success.size else math.nan,
        "mean_queries": float(queries.mean()) if queries.size else math.nan,
    }


def run(cfg, kind: str, target: str, backbone: str, regularizer=None, seed=None) -> dict:
    check_names(cfg, target, backbone, regularizer)
    run_id = run_id_for(kind, target, backbone, regularizer, seed)
    spec = cfg.attack
    data = cfg.finetune.targets[target].data
    test_raw = open_split(data, cfg.run, "test")
    model, _ = load_model(_model_path(kind, run_id))
    stage = start(cfg, spec.seed)
    model.to(stage.device).eval()

    x_all, y_all = load_pixels(
        Pixels(test_raw, pixel_transform(data, test_raw.channels, train=False))
    )
    oracle = LabelOracle(model, chunk_size=spec.chunk_size, device=stage.device)
    with torch.no_grad():
        pred = oracle(x_all.to(stage.device)).cpu()
    correct = torch.nonzero(pred == y_all).flatten()
    test_acc = float((pred == y_all).float().mean())
    if correct.numel() == 0:
        raise ConfigError(f"attack: the {kind} model {run_id} classifies no test sample correctly")
    # The sample draw depends on the attack seed and the run's seed, never on the model.
    g = torch.Generator().manual_seed(spec.seed * 1_000_003 + (seed or 0))
    chosen = correct[torch.randperm(correct.numel(), generator=g)[: spec.n_samples]]
    chosen = chosen.sort().values
    oracle.reset_counts()

    t0 = time.perf_counter()
    result = tangent_attack(
        oracle,
        x_all[chosen].to(stage.device),
        y_all[chosen].to(stage.device),
        iterations=spec.iterations,
        max_queries=spec.max_queries,
        gamma=spec.gamma,
        init_probes=spec.init_probes,
        max_probes=spec.max_probes,
        seed=spec.seed + (seed or 0),
        fallback_pool=(x_all[correct].to(stage.device), y_all[correct].to(stage.device)),
    )
    seconds = time.perf_counter() - t0
    dist = result.distances.cpu().numpy()
    ok = result.success.cpu().numpy()
    q = result.queries.cpu().numpy()
    out = paths.attack_metrics(kind, run_id)
    write_csv(
        out / "samples.csv",
        [
            {
                "index": int(i),
                "label": int(y_all[i]),
                "distance": float(d),
                "queries": int(qq),
                "success": bool(s),
            }
            for i, d, qq, s in zip(chosen.tolist(), dist, q, ok, strict=True)
        ],
    )
    summary = {
        "kind": kind,
        "target": target,
        "backbone": backbone,
        "regularizer": regularizer,
        "seed": seed,
        "test_acc": test_acc,
        "iterations": spec.iterations,
        "seconds": round(seconds, 2),
        **summarize(dist, ok, q),
    }
    write_json(out / "summary.json", summary)
    return summary
