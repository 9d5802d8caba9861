"""``ssl``: self-supervised pretraining (SimCLR or Barlow Twins) of a backbone, one run per
(variant, pretraining seed).

The backbone joins the supervised ones under artifacts/backbones/<variant>/seed<N>, so finetune,
readout and attack treat it the same way. Monitored by kNN accuracy on the SSL data's test
split; the final summary adds a logistic-regression readout on frozen features.
"""

from __future__ import annotations

import numpy as np

from pipeline.core import paths
from pipeline.core.errors import ConfigError
from pipeline.core.io import write_json
from pipeline.data.loaders import SeededTransform
from pipeline.data.splits import Pixels, example_batch, normalization, open_split, pixel_transform
from pipeline.models import build_model, save_model
from pipeline.models.inference import dataset_features
from pipeline.readout import fit_readout, knn_accuracy
from pipeline.regularizers import build_regularizers
from pipeline.stages.shared import start
from pipeline.stages.spec import Arg, Plot, StageSpec
from pipeline.stages.supervised import spectra
from pipeline.training.checkpoint import CheckpointStore
from pipeline.training.fingerprint import run_fingerprint
from pipeline.training.loop import FitContext, fit
from pipeline.training.ssl import SSLModule, view_transform

ARGS = (
    Arg("variant", help="a name under ssl.variants"),
    Arg("seed", type=int, help="the pretraining seed (a value of ssl.run.seeds)"),
)
_RUN = paths.backbone_id("{variant}", "{seed}")
STAGES = (
    StageSpec(
        name="ssl",
        command="ssl",
        matrix={"variant": "ssl.run.variants", "seed": "ssl.run.seeds"},
        gpus="{ssl.train.gpus}",
        params=(
            "ssl.data",
            "ssl.model",
            "ssl.train",
            "ssl.simclr",
            "ssl.barlow_twins",
            "ssl.augment",
            "ssl.knn_k",
            "ssl.variants.{variant}",
        ),
        deps=("{ssl.data.root}",),
        private=(str(paths.checkpoints("ssl", _RUN)),),
        # history.json (every column per epoch) is read by the report: declared, so it is cached,
        # pushed and pulled like every other output.
        outs=(
            str(paths.backbone_model(_RUN)),
            str(paths.stage_metrics("ssl", _RUN) / "history.json"),
        ),
        metrics=(str(paths.stage_metrics("ssl", _RUN) / "summary.json"),),
        plots=(Plot(str(paths.stage_metrics("ssl", _RUN) / "history.csv"), "epoch", "knn_acc"),),
    ),
)


def run(cfg, variant: str, seed: int) -> dict:
    spec = cfg.ssl
    chosen = _variant(spec, variant)
    train_spec = spec.train.model_copy(update={"seed": seed})
    run_id = paths.backbone_id(variant, seed)
    train_raw = open_split(spec.data, cfg.run, "train")
    test_raw = open_split(spec.data, cfg.run, "test")
    stage = start(cfg, seed)
    channels = train_raw.channels
    mean, std = normalization(spec.data, channels)
    model = build_model(
        spec.model, channels, train_raw.num_classes, spec.data.image_size, mean=mean, std=std
    )
    module = SSLModule(model, chosen.method, spec, distributed=stage.dist.enabled)
    views = view_transform(chosen.method, spec.data.image_size, channels, spec.augment)
    train_set = SeededTransform(train_raw, views, seed=seed)
    plain = pixel_transform(spec.data, channels, train=False)
    train_eval, test_eval = Pixels(train_raw, plain), Pixels(test_raw, plain)
    example = example_batch(test_eval)

    workers = cfg.run.num_workers
    shard = {"num_workers": workers, "rank": stage.dist.rank, "world": stage.dist.world}

    def evaluate(m) -> dict:  # every rank, on its share
        tx, ty = dataset_features(m, train_eval, stage.device, **shard)
        vx, vy = dataset_features(m, test_eval, stage.device, **shard)
        return {"knn_acc": knn_accuracy(tx, ty, vx, vy, k=spec.knn_k)}

    run_fp = run_fingerprint(STAGES[0], {"variant": variant, "seed": seed}, cfg)
    metrics_dir = paths.stage_metrics("ssl", run_id)
    history = fit(
        module,
        FitContext(
            spec=train_spec,
            train_set=train_set,
            checkpoints=CheckpointStore(paths.checkpoints("ssl", run_id, run_fp), run_fp),
            metrics_dir=metrics_dir,
            device=stage.device,
            dist=stage.dist,
            regularizers=build_regularizers(chosen.regularizers),
            evaluate=evaluate,
            diagnose=lambda m: spectra(m, example),
            num_workers=cfg.run.num_workers,
            progress=cfg.run.progress,
            desc=f"ssl[{run_id}]",
            example_inputs=example,
        ),
    )
    if not stage.dist.is_main:
        return {}
    summary = _summary(model, variant, seed, chosen, spec, (train_eval, test_eval), stage.device,
                       workers, history, example)  # fmt: skip
    save_model(model, paths.backbone_model(run_id), _meta(spec, train_raw, variant, seed, chosen))
    write_json(metrics_dir / "summary.json", summary)
    return summary


def _variant(spec, variant: str):
    """The SSL variant named ``variant``; ConfigError naming the allowed ones if none is."""
    if spec is None or variant not in spec.variants:
        allowed = ", ".join(spec.variants) if spec else "(no ssl section)"
        raise ConfigError(f"--variant {variant!r} is not in ssl.variants; allowed: {allowed}")
    return spec.variants[variant]


def _summary(model, variant, seed, chosen, spec, evals, device, workers, history, example) -> dict:
    """The run's summary: kNN and logistic-regression readout accuracy on frozen features."""
    train_eval, test_eval = evals
    tx, ty = dataset_features(model, train_eval, device, num_workers=workers)
    vx, vy = dataset_features(model, test_eval, device, num_workers=workers)
    clf, converged = fit_readout(tx, ty)
    return {
        "variant": variant,
        "seed": seed,
        "method": chosen.method,
        "regularizers": [r.name for r in chosen.regularizers],
        "knn_acc": knn_accuracy(tx, ty, vx, vy, k=spec.knn_k),
        "readout_acc": float(np.mean(clf.predict(vx) == vy)),
        "readout_converged": converged,
        "final_loss": history[-1]["task_loss"] if history else None,
        "epochs": len(history),
        **spectra(model, example),
    }


def _meta(spec, train_raw, variant: str, seed: int, chosen) -> dict:
    """What :func:`pipeline.models.save_model` stores beside the weights."""
    return {
        "model": spec.model.model_dump(),
        "in_chans": train_raw.channels,
        "image_size": spec.data.image_size,
        "classes": list(train_raw.classes),
        "kind": "ssl",
        "variant": variant,
        "seed": seed,
        "method": chosen.method,
    }
