"""``readout``: discard the head, fit logistic regression on frozen features of the target."""

from __future__ import annotations

import time

import numpy as np

from pipeline import paths
from pipeline.io import write_json
from pipeline.models import save_model
from pipeline.models.inference import dataset_features
from pipeline.readout import fit_readout, install_readout
from pipeline.stages.common import Pixels, open_split, pixel_transform, start
from pipeline.stages.contract import BASE_CODE, MODEL_CODE, Contract
from pipeline.stages.finetune import check_names, load_backbone_for

CODE = [
    *BASE_CODE,
    *MODEL_CODE,
    "pipeline/stages/readout.py",
    "pipeline/stages/finetune.py",
    "pipeline/stages/supervised.py",
    "pipeline/readout.py",
    "pipeline/models",
    "pipeline/data",
    "pipeline/regularizers",
]


def contract(cfg, target: str, backbone: str) -> Contract:
    run_id = paths.readout_id(target, backbone)
    return Contract(
        params=[f"finetune.targets.{target}.data", "readout"],
        deps=[*CODE, str(paths.backbone_model(backbone)), str(paths.prepared(target))],
        outs=[str(paths.readout_model(run_id))],
        metrics=[str(paths.stage_metrics("readout", run_id) / "summary.json")],
    )


def run(cfg, target: str, backbone: str) -> dict:
    check_names(cfg, target, backbone)
    data = cfg.finetune.targets[target].data
    train_raw = open_split(data, cfg.run, "train")
    test_raw = open_split(data, cfg.run, "test")
    model, meta, _ = load_backbone_for(train_raw.channels, backbone)
    stage = start(cfg, 0)
    model.to(stage.device)
    # Frozen features with the deterministic test-time transform for both splits.
    transform = pixel_transform(data, train_raw.channels, train=False)
    t0 = time.perf_counter()
    loading = {"batch_size": cfg.readout.batch_size, "num_workers": cfg.run.num_workers}
    train_x, train_y = dataset_features(
        model, Pixels(train_raw, transform), stage.device, **loading
    )
    test_x, test_y = dataset_features(model, Pixels(test_raw, transform), stage.device, **loading)
    clf, converged = fit_readout(train_x, train_y, C=cfg.readout.C, max_iter=cfg.readout.max_iter)
    install_readout(model, clf, train_raw.num_classes)
    summary = {
        "target": target,
        "backbone": backbone,
        "test_acc": float(np.mean(clf.predict(test_x) == test_y)),
        "train_acc": float(np.mean(clf.predict(train_x) == train_y)),
        "converged": converged,
        "feature_dim": int(train_x.shape[1]),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    run_id = paths.readout_id(target, backbone)
    out_meta = {
        **meta,
        "image_size": data.image_size,
        "classes": list(train_raw.classes),
        "kind": "readout",
        "target": target,
        "backbone": backbone,
    }
    save_model(model.cpu(), paths.readout_model(run_id), out_meta)
    write_json(paths.stage_metrics("readout", run_id) / "summary.json", summary)
    return summary
