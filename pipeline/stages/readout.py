"""``readout``: discard the head, fit logistic regression on frozen features of the target."""

from __future__ import annotations

import numpy as np

from pipeline.core import paths
from pipeline.core.io import write_json
from pipeline.data.splits import Pixels, open_split, pixel_transform
from pipeline.models import save_model
from pipeline.models.inference import dataset_features
from pipeline.readout import fit_readout, install_readout
from pipeline.stages.shared import check_names, load_backbone_for, start
from pipeline.stages.spec import Arg, StageSpec

ARGS = (
    Arg("target", help="a name under finetune.targets"),
    Arg("backbone", help="a pretrain or ssl variant"),
    Arg("backbone_seed", type=int, help="the backbone's pretraining seed"),
)
_RUN = paths.readout_id("{target}", "{backbone}", "{backbone_seed}")
STAGES = (
    StageSpec(
        name="readout",
        command="readout",
        matrix={
            "target": "finetune.run.targets",
            "backbone": "finetune.run.backbones",
            "backbone_seed": "finetune.run.backbone_seeds",
        },
        gpus=1,
        params=("finetune.targets.{target}.data", "readout"),
        deps=(
            str(paths.backbone_model(paths.backbone_id("{backbone}", "{backbone_seed}"))),
            str(paths.prepared("{target}")),
        ),
        outs=(str(paths.readout_model(_RUN)),),
        metrics=(str(paths.stage_metrics("readout", _RUN) / "summary.json"),),
    ),
)


def run(cfg, target: str, backbone: str, backbone_seed: int) -> dict:
    check_names(cfg, target, backbone)
    data = cfg.finetune.targets[target].data
    train_raw = open_split(data, cfg.run, "train")
    test_raw = open_split(data, cfg.run, "test")
    model, meta, _ = load_backbone_for(train_raw.channels, backbone, backbone_seed)
    stage = start(cfg, 0)
    model.to(stage.device)
    # Frozen features with the deterministic test-time transform for both splits.
    transform = pixel_transform(data, train_raw.channels, train=False)
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
        "backbone_seed": backbone_seed,
        "test_acc": float(np.mean(clf.predict(test_x) == test_y)),
        "train_acc": float(np.mean(clf.predict(train_x) == train_y)),
        "converged": converged,
        "feature_dim": int(train_x.shape[1]),
    }
    run_id = paths.readout_id(target, backbone, backbone_seed)
    out_meta = {
        **meta,
        "image_size": data.image_size,
        "classes": list(train_raw.classes),
        "kind": "readout",
        "target": target,
        "backbone": backbone,
        "backbone_seed": backbone_seed,
    }
    save_model(model.cpu(), paths.readout_model(run_id), out_meta)
    write_json(paths.stage_metrics("readout", run_id) / "summary.json", summary)
    return summary
