"""``pretrain``: supervised pretraining of a backbone, one run per (variant, pretraining seed).

The seed fixes initialisation and data order for every variant alike: it is the unit of
replication, and the report pairs variants by it.
"""

from __future__ import annotations

from pipeline.core import paths
from pipeline.core.errors import ConfigError
from pipeline.core.io import write_json
from pipeline.data.splits import normalization
from pipeline.models import build_model, save_model
from pipeline.stages.shared import start
from pipeline.stages.spec import Arg, Plot, StageSpec
from pipeline.stages.supervised import open_train_test, train_supervised

ARGS = (
    Arg("variant", help="a name under pretrain.variants"),
    Arg("seed", type=int, help="the pretraining seed (a value of pretrain.run.seeds)"),
)
_RUN = paths.backbone_id("{variant}", "{seed}")
STAGES = (
    StageSpec(
        name="pretrain",
        command="pretrain",
        matrix={"variant": "pretrain.run.variants", "seed": "pretrain.run.seeds"},
        gpus="{pretrain.train.gpus}",
        params=("pretrain.data", "pretrain.model", "pretrain.train", "pretrain.variants.{variant}"),
        deps=("{pretrain.data.root}",),
        private=(str(paths.checkpoints("pretrain", _RUN)),),
        # history.json (every column per epoch) is read by the report: declared, so it is cached,
        # pushed and pulled like every other output.
        outs=(
            str(paths.backbone_model(_RUN)),
            str(paths.stage_metrics("pretrain", _RUN) / "history.json"),
        ),
        metrics=(str(paths.stage_metrics("pretrain", _RUN) / "summary.json"),),
        plots=(
            Plot(str(paths.stage_metrics("pretrain", _RUN) / "history.csv"), "epoch", "test_acc"),
        ),
    ),
)


def run(cfg, variant: str, seed: int) -> dict:
    spec = cfg.pretrain
    if variant not in spec.variants:
        raise ConfigError(
            f"--variant {variant!r} is not in pretrain.variants; allowed: {', '.join(spec.variants)}"
        )
    train_raw, test_raw = open_train_test(spec.data, cfg.run)
    stage = start(cfg, seed)
    channels = train_raw.channels
    mean, std = normalization(spec.data, channels)
    model = build_model(
        spec.model, channels, train_raw.num_classes, spec.data.image_size, mean=mean, std=std
    )
    regs = spec.variants[variant]
    item = {"variant": variant, "seed": seed}
    run_id = paths.backbone_id(variant, seed)
    summary = train_supervised(
        model=model,
        train_raw=train_raw,
        test_raw=test_raw,
        data_spec=spec.data,
        train_spec=spec.train.model_copy(update={"seed": seed}),
        regularizer_configs=regs,
        cfg=cfg,
        stage=stage,
        stage_spec=STAGES[0],
        item=item,
        run_id=run_id,
    )
    if stage.dist.is_main:
        meta = {
            "model": spec.model.model_dump(),
            "in_chans": channels,
            "image_size": spec.data.image_size,
            "classes": list(train_raw.classes),
            "kind": "pretrain",
            "variant": variant,
            "seed": seed,
        }
        save_model(model, paths.backbone_model(run_id), meta)
        write_json(paths.stage_metrics("pretrain", run_id) / "summary.json", {**item, **summary})
    return summary
