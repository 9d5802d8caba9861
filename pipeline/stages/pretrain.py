"""``pretrain``: supervised pretraining of a backbone, one run per pretraining variant."""

from __future__ import annotations

from pipeline.core import paths
from pipeline.core.errors import ConfigError
from pipeline.core.io import write_json
from pipeline.data.splits import normalization
from pipeline.models import build_model, save_model
from pipeline.stages.shared import start
from pipeline.stages.spec import TRAINING_CODE, Arg, Plot, StageSpec
from pipeline.stages.supervised import open_train_test, train_supervised

ARGS = (Arg("variant", help="a name under pretrain.variants"),)
STAGES = (
    StageSpec(
        name="pretrain",
        command="pretrain",
        matrix={"variant": "pretrain.run"},
        gpus="{pretrain.train.gpus}",
        params=("pretrain.data", "pretrain.model", "pretrain.train", "pretrain.variants.{variant}"),
        code=TRAINING_CODE,
        deps=("{pretrain.data.root}",),
        private=(str(paths.checkpoints("pretrain", "{variant}")),),
        outs=(str(paths.backbone_model("{variant}")),),
        metrics=(str(paths.stage_metrics("pretrain", "{variant}") / "summary.json"),),
        plots=(
            Plot(
                str(paths.stage_metrics("pretrain", "{variant}") / "history.csv"),
                "epoch",
                "test_acc",
            ),
        ),
    ),
)


def run(cfg, variant: str) -> dict:
    spec = cfg.pretrain
    if variant not in spec.variants:
        raise ConfigError(
            f"--variant {variant!r} is not in pretrain.variants; allowed: {', '.join(spec.variants)}"
        )
    train_raw, test_raw = open_train_test(spec.data, cfg.run)
    stage = start(cfg, spec.train.seed)
    channels = train_raw.channels
    mean, std = normalization(spec.data, channels)
    model = build_model(
        spec.model, channels, train_raw.num_classes, spec.data.image_size, mean=mean, std=std
    )
    regs = spec.variants[variant]
    item = {"variant": variant}
    summary = train_supervised(
        model=model,
        train_raw=train_raw,
        test_raw=test_raw,
        data_spec=spec.data,
        train_spec=spec.train,
        regularizer_configs=regs,
        cfg=cfg,
        stage=stage,
        stage_spec=STAGES[0],
        item=item,
        run_id=variant,
    )
    if stage.dist.is_main:
        meta = {
            "model": spec.model.model_dump(),
            "in_chans": channels,
            "image_size": spec.data.image_size,
            "classes": list(train_raw.classes),
            "kind": "pretrain",
            "variant": variant,
        }
        save_model(model, paths.backbone_model(variant), meta)
        write_json(paths.stage_metrics("pretrain", variant) / "summary.json", {**item, **summary})
    return summary
