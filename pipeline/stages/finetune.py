"""``finetune``: a pretrained backbone, a fresh head, trained on a target dataset.

One run per (target, backbone, backbone seed, finetune regularizer, seed): finetuning seeds
are nested inside each pretraining run of the backbone. The optimizer is built after the
head is replaced (inside ``fit``), so the new head is the one trained.
"""

from __future__ import annotations

from pipeline.core import paths
from pipeline.core.io import write_json
from pipeline.models import save_model
from pipeline.stages.shared import check_names, load_backbone_for, start
from pipeline.stages.spec import Arg, Plot, StageSpec
from pipeline.stages.supervised import open_train_test, train_supervised

ARGS = (
    Arg("target", help="a name under finetune.targets"),
    Arg("backbone", help="a pretrain or ssl variant"),
    Arg("backbone_seed", type=int, help="the backbone's pretraining seed"),
    Arg("regularizer", help="a name under finetune.regularizers"),
    Arg("seed", type=int),
)
_RUN = paths.finetune_id("{target}", "{backbone}", "{backbone_seed}", "{regularizer}", "{seed}")
STAGES = (
    StageSpec(
        name="finetune",
        command="finetune",
        matrix={
            "target": "finetune.run.targets",
            "backbone": "finetune.run.backbones",
            "backbone_seed": "finetune.run.backbone_seeds",
            "regularizer": "finetune.run.regularizers",
            "seed": "finetune.run.seeds",
        },
        gpus="{finetune.targets.{target}.train.gpus}",
        params=("finetune.targets.{target}", "finetune.regularizers.{regularizer}"),
        deps=(
            str(paths.backbone_model(paths.backbone_id("{backbone}", "{backbone_seed}"))),
            str(paths.prepared("{target}")),
        ),
        private=(str(paths.checkpoints("finetune", _RUN)),),
        # history.json (every column per epoch) is read by the report: declared, so it is cached,
        # pushed and pulled like every other output.
        outs=(
            str(paths.finetune_model(_RUN)),
            str(paths.stage_metrics("finetune", _RUN) / "history.json"),
        ),
        metrics=(str(paths.stage_metrics("finetune", _RUN) / "summary.json"),),
        plots=(
            Plot(str(paths.stage_metrics("finetune", _RUN) / "history.csv"), "epoch", "test_acc"),
        ),
    ),
)


def run(cfg, target: str, backbone: str, backbone_seed: int, regularizer: str, seed: int) -> dict:
    check_names(cfg, target, backbone, regularizer)
    tspec = cfg.finetune.targets[target]
    train_spec = tspec.train.model_copy(update={"seed": seed})
    train_raw, test_raw = open_train_test(tspec.data, cfg.run)
    model, meta, _ = load_backbone_for(train_raw.channels, backbone, backbone_seed)
    stage = start(cfg, seed)
    model.replace_head(train_raw.num_classes)
    regs = cfg.finetune.regularizers[regularizer]
    run_id = paths.finetune_id(target, backbone, backbone_seed, regularizer, seed)
    item = {
        "target": target,
        "backbone": backbone,
        "backbone_seed": backbone_seed,
        "regularizer": regularizer,
        "seed": seed,
    }
    summary = train_supervised(
        model=model,
        train_raw=train_raw,
        test_raw=test_raw,
        data_spec=tspec.data,
        train_spec=train_spec,
        regularizer_configs=regs,
        cfg=cfg,
        stage=stage,
        stage_spec=STAGES[0],
        item=item,
        run_id=run_id,
    )
    if stage.dist.is_main:
        out_meta = {
            **meta,
            "image_size": tspec.data.image_size,
            "classes": list(train_raw.classes),
            "kind": "finetune",
            "target": target,
            "backbone": backbone,
            "backbone_seed": backbone_seed,
            "regularizer": regularizer,
            "seed": seed,
        }
        save_model(model, paths.finetune_model(run_id), out_meta)
        write_json(paths.stage_metrics("finetune", run_id) / "summary.json", {**item, **summary})
    return summary
