"""``attack``: mean black-box adversarial distance of a finetuned or readout-retrained model.

Predicts the test split in streamed batches (keeping only labels and predictions), draws the
samples from a model-independent permutation (:mod:`pipeline.attacks.draw`), loads only those and
a bounded fallback pool, and runs each of ``attack.methods`` on them from the same starting
points; writes a long per-sample CSV and a summary for dvc metrics (docs/methods.md, "Attacks").
Outputs hold no wall-clock values, so they are byte-identical for the same inputs on CPU.
"""

from __future__ import annotations

import logging
import time

import torch

from pipeline.attacks import LabelOracle
from pipeline.attacks.draw import draw_samples
from pipeline.attacks.methods import run_methods
from pipeline.attacks.oracle import UnsupportedPrecision
from pipeline.attacks.streaming import gather, predict_split
from pipeline.attacks.summary import sample_rows, summarize
from pipeline.core import paths
from pipeline.core.errors import ConfigError
from pipeline.core.io import write_csv, write_json
from pipeline.core.progress import Progress
from pipeline.data.splits import Pixels, example_batch, open_split, pixel_transform
from pipeline.models import load_model
from pipeline.models.fused import fuse_batchnorm
from pipeline.runtime import device as runtime
from pipeline.stages.shared import check_names, start
from pipeline.stages.spec import Arg, StageSpec

log = logging.getLogger(__name__)

KINDS = ("finetune", "readout")
ARGS = (
    Arg("kind", help="finetune or readout"),
    Arg("target", help="a name under finetune.targets"),
    Arg("backbone", help="a pretrain or ssl variant"),
    Arg("backbone_seed", type=int, help="the backbone's pretraining seed"),
    Arg("regularizer", required=False, help="the finetune regularizer (kind finetune)"),
    Arg("seed", type=int, required=False, help="the finetune seed (kind finetune)"),
)
_FINETUNE_RUN = paths.finetune_id(
    "{target}", "{backbone}", "{backbone_seed}", "{regularizer}", "{seed}"
)
_READOUT_RUN = paths.readout_id("{target}", "{backbone}", "{backbone_seed}")
_ATTACK = {
    "command": "attack",
    "gpus": 1,
    "params": ("attack", "finetune.targets.{target}.data"),
}
STAGES = (
    StageSpec(
        name="attack_finetune",
        matrix={
            "target": "finetune.run.targets",
            "backbone": "finetune.run.backbones",
            "backbone_seed": "finetune.run.backbone_seeds",
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
        matrix={
            "target": "finetune.run.targets",
            "backbone": "finetune.run.backbones",
            "backbone_seed": "finetune.run.backbone_seeds",
        },
        fixed={"kind": "readout"},
        deps=(str(paths.readout_model(_READOUT_RUN)), str(paths.prepared("{target}"))),
        outs=(str(paths.attack_metrics("readout", _READOUT_RUN) / "samples.csv"),),
        metrics=(str(paths.attack_metrics("readout", _READOUT_RUN) / "summary.json"),),
        **_ATTACK,
    ),
)


def run_id_for(
    kind: str,
    target: str,
    backbone: str,
    backbone_seed: int,
    regularizer: str | None,
    seed: int | None,
) -> str:
    if kind == "finetune":
        if regularizer is None or seed is None:
            raise ConfigError("attack --kind finetune needs --regularizer and --seed")
        return paths.finetune_id(target, backbone, backbone_seed, regularizer, seed)
    if kind == "readout":
        return paths.readout_id(target, backbone, backbone_seed)
    raise ConfigError(f"--kind {kind!r}; allowed: {', '.join(KINDS)}")


def _model_path(kind: str, run_id: str):
    return paths.finetune_model(run_id) if kind == "finetune" else paths.readout_model(run_id)


def run(
    cfg, kind: str, target: str, backbone: str, backbone_seed: int, regularizer=None, seed=None
) -> dict:
    check_names(cfg, target, backbone, regularizer)
    run_id = run_id_for(kind, target, backbone, backbone_seed, regularizer, seed)
    spec = cfg.attack
    run_seed = seed or 0  # the finetune seed; a readout has none
    data = cfg.finetune.targets[target].data
    test_raw = open_split(data, cfg.run, "test")
    pixels = Pixels(test_raw, pixel_transform(data, test_raw.channels, train=False))
    model, _ = load_model(_model_path(kind, run_id))
    stage = start(cfg, spec.seed)
    oracle = _oracle(cfg, model, pixels, stage)

    t0 = time.perf_counter()
    labels, preds = _predict(oracle, pixels, spec.chunk_size, cfg.run.num_workers)
    correct = labels == preds
    draw = draw_samples(
        correct, spec.n_samples, attack_seed=spec.seed, run_seed=run_seed,
        pool_size=spec.fallback_pool, allow_fewer=spec.allow_fewer,
    )  # fmt: skip
    x, y = gather(pixels, draw.samples)
    pool = gather(pixels, draw.pool) if draw.pool.size else None
    log.info(
        "attack %s: predicted %d test samples in %.1fs (%d correct), attacking %d",
        run_id, len(labels), time.perf_counter() - t0, draw.available, len(x),
    )  # fmt: skip

    t0 = time.perf_counter()
    limit = spec.query_limit()
    with Progress(f"attack {run_id}", len(spec.methods) * len(x) * limit, "queries",
                  enabled=cfg.run.progress) as progress:  # fmt: skip
        follow = _follow(progress, spec.methods, len(x), limit) if progress.active else None
        results = run_methods(
            oracle, x.to(stage.device), y.to(stage.device), spec.methods, progress=follow,
            iterations=spec.iterations, max_queries=spec.query_limit(), gamma=spec.gamma,
            init_probes=spec.init_probes, max_probes=spec.max_probes,
            seed=spec.seed + run_seed, checkpoints=spec.budgets,
            fallback_pool=None if pool is None else (pool[0].to(stage.device), pool[1].to(stage.device)),
        )  # fmt: skip
    log.info("attack %s: %s in %.1fs", run_id, "+".join(spec.methods), time.perf_counter() - t0)

    out = paths.attack_metrics(kind, run_id)
    write_csv(out / "samples.csv", sample_rows(draw.samples, y.numpy(), results, spec.budgets))
    summary = {
        "kind": kind,
        "target": target,
        "backbone": backbone,
        "backbone_seed": backbone_seed,
        "regularizer": regularizer,
        "seed": seed,
        "test_acc": float(correct.mean()) if correct.size else float("nan"),
        **summarize(results, spec.budgets),
    }
    write_json(out / "summary.json", summary)
    return summary


def _follow(progress: Progress, methods: list[str], samples: int, limit: int):
    """One display for the methods, run one after another: queries spent, of those the methods
    can still spend (a sample that stops early leaves its budget unspent), samples done, mean Δ."""
    spent: dict[str, int] = {}

    def report(name: str, status) -> None:
        spent[name] = status.queries
        before = sum(q for m, q in spent.items() if m != name)
        later = len(methods) - methods.index(name) - 1
        progress.update(
            before + status.queries,
            before + status.expected + later * samples * limit,
            method=name,
            iteration=f"{status.iteration}/{status.iterations}",
            samples=f"{status.done}/{status.samples}",
            delta=status.mean_distance,
        )

    return report


def _oracle(cfg, model, pixels, stage) -> LabelOracle:
    """The model's label oracle on the stage's device, as fast as its labels allow."""
    spec = cfg.attack
    if stage.device.type == "cpu":  # forward passes only: the same labels on any thread count
        torch.set_num_threads(cfg.run.inference_threads or runtime.cpu_share())
    # One conv per conv+BatchNorm pair, channels-last: the oracle's forward passes are nearly
    # all of an attack's time (benchmarks/oracle_forward.py).
    model = fuse_batchnorm(model.to(stage.device), example_batch(pixels).to(stage.device))
    conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    if conv:
        model.to(memory_format=torch.channels_last)
    return LabelOracle(
        model, chunk_size=spec.chunk_size, device=stage.device, precision=spec.precision,
        channels_last=conv,
    )  # fmt: skip


def _predict(oracle: LabelOracle, pixels, chunk_size: int, num_workers: int):
    """Labels and predictions of the whole test split; a precision the device lacks is a
    ConfigError naming the key."""
    try:
        return predict_split(oracle, pixels, batch_size=chunk_size, num_workers=num_workers)
    except UnsupportedPrecision as e:
        raise ConfigError(
            f"attack.precision: {e}; allowed: fp32, bf16, fp16 (fp32 runs everywhere)"
        ) from e
