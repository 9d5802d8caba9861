"""``finetune``: a pretrained backbone, a fresh head, trained on a target dataset.

One run per (target, backbone, finetune regularizer, seed). The optimizer is built after the
head is replaced (inside ``fit``), so the new head is the one trained.
"""

from __future__ import annotations

from pipeline import paths
from pipeline.errors import ConfigError
from pipeline.io import write_json
from pipeline.models import load_model, save_model
from pipeline.stages.common import data_signature, start
from pipeline.stages.contract import BASE_CODE, MODEL_CODE, Contract
from pipeline.stages.supervised import open_train_test, train_supervised
from pipeline.training.checkpoint import CheckpointStore, file_digest, fingerprint

CODE = [
    *BASE_CODE,
    *MODEL_CODE,
    "pipeline/stages/finetune.py",
    "pipeline/stages/supervised.py",
    "pipeline/models",
    "pipeline/regularizers",
    "pipeline/data",
]


def contract(cfg, target: str, backbone: str, regularizer: str, seed: int) -> Contract:
    run_id = paths.finetune_id(target, backbone, regularizer, seed)
    metrics = paths.stage_metrics("finetune", run_id)
    return Contract(
        params=[f"finetune.targets.{target}", f"finetune.regularizers.{regularizer}"],
        deps=[*CODE, str(paths.backbone_model(backbone)), str(paths.prepared(target))],
        outs=[str(paths.finetune_model(run_id))],
        persist=[str(paths.checkpoints("finetune", run_id))],
        metrics=[str(metrics / "summary.json")],
        plots=[str(metrics / "history.csv")],
    )


def check_names(cfg, target: str, backbone: str, regularizer: str | None = None) -> None:
    ft = cfg.finetune
    if target not in ft.targets:
        raise ConfigError(
            f"--target {target!r} is not in finetune.targets; allowed: {', '.join(ft.targets)}"
        )
    cfg.backbone_kind(backbone)  # raises with the allowed names
    if regularizer is not None and regularizer not in ft.regularizers:
        raise ConfigError(
            f"--regularizer {regularizer!r} is not in finetune.regularizers; "
            f"allowed: {', '.join(ft.regularizers)}"
        )


def load_backbone_for(target_channels: int, backbone: str):
    path = paths.backbone_model(backbone)
    model, meta = load_model(path)
    if meta["in_chans"] != target_channels:
        raise ConfigError(
            f"backbone {backbone!r} takes {meta['in_chans']}-channel images but the target has "
            f"{target_channels}; pretrain on data with the same channels"
        )
    return model, meta, path


def run(cfg, target: str, backbone: str, regularizer: str, seed: int) -> dict:
    check_names(cfg, target, backbone, regularizer)
    tspec = cfg.finetune.targets[target]
    train_spec = tspec.train.model_copy(update={"seed": seed})
    train_raw, test_raw = open_train_test(tspec.data, cfg.run)
    model, meta, backbone_path = load_backbone_for(train_raw.channels, backbone)
    stage = start(cfg, seed)
    model.replace_head(train_raw.num_classes)
    regs = cfg.finetune.regularizers[regularizer]
    run_id = paths.finetune_id(target, backbone, regularizer, seed)
    run_fp = fingerprint(
        "finetune",
        tspec.model_dump(),
        seed,
        [r.model_dump() for r in regs],
        file_digest(backbone_path),
        data_signature(tspec.data, cfg.run),
    )
    metrics_dir = paths.stage_metrics("finetune", run_id)
    summary = train_supervised(
        model=model,
        train_raw=train_raw,
        test_raw=test_raw,
        data_spec=tspec.data,
        train_spec=train_spec,
        regularizer_configs=regs,
        run_cfg=cfg.run,
        stage=stage,
        checkpoints=CheckpointStore(paths.checkpoints("finetune", run_id), run_fp),
        metrics_dir=metrics_dir,
        desc=f"finetune[{run_id}]",
    )
    if stage.dist.is_main:
        out_meta = {
            **meta,
            "image_size": tspec.data.image_size,
            "classes": list(train_raw.classes),
            "kind": "finetune",
            "target": target,
            "backbone": backbone,
            "regularizer": regularizer,
            "seed": seed,
        }
        save_model(model, paths.finetune_model(run_id), out_meta)
        write_json(
            metrics_dir / "summary.json",
            {
                "target": target,
                "backbone": backbone,
                "regularizer": regularizer,
                "seed": seed,
                **summary,
            },
        )
    return summary
