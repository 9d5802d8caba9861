"""Supervised training of a SplitModel on a DataSpec: the part shared by pretrain and finetune."""

from __future__ import annotations

import logging

from pipeline.core import paths
from pipeline.core.errors import ConfigError
from pipeline.data.loaders import SeededTransform
from pipeline.data.splits import Pixels, example_batch, open_split, pixel_transform
from pipeline.models.inference import evaluate_accuracy
from pipeline.regularizers import build_regularizers, spectral_summary
from pipeline.stages.shared import StageRun
from pipeline.stages.spec import StageSpec
from pipeline.training.checkpoint import CheckpointStore
from pipeline.training.fingerprint import run_fingerprint
from pipeline.training.loop import FitContext, SupervisedModule, fit

log = logging.getLogger(__name__)


def open_train_test(data_spec, run_cfg):
    """Raw train/test datasets; opened before any work so a missing dataset fails early."""
    train_raw = open_split(data_spec, run_cfg, "train")
    test_raw = open_split(data_spec, run_cfg, "test")
    return train_raw, test_raw


def spectra(model, example) -> dict[str, float]:
    """The backbone's exact spectrum, plain and as BatchNorm folds it (``folded_*``).

    A backbone whose convolutions do not all feed a BatchNorm (an MLP has none) logs the plain
    spectrum only.
    """
    out = spectral_summary(model, example)
    try:
        folded = spectral_summary(model, example, fold_bn=True)
    except ConfigError:
        return out
    return {**out, **{f"folded_{k}": v for k, v in folded.items() if k != "layers"}}


def train_supervised(
    *,
    model,
    train_raw,
    test_raw,
    data_spec,
    train_spec,
    regularizer_configs,
    cfg,
    stage: StageRun,
    stage_spec: StageSpec,
    item: dict,
    run_id: str,
) -> dict:
    """Train (resuming if possible), then return the final summary metrics.

    ``item`` is the run's matrix entry of ``stage_spec`` (it keys the resume fingerprint);
    checkpoints and metrics go to the stage's folders for ``run_id``.
    """
    run_cfg = cfg.run
    checkpoints = _checkpoint_store(stage_spec, item, cfg, run_id)
    metrics_dir = paths.stage_metrics(stage_spec.name, run_id)
    channels = train_raw.channels
    train_set = SeededTransform(
        train_raw, pixel_transform(data_spec, channels, train=True), seed=train_spec.seed
    )
    test_set = Pixels(test_raw, pixel_transform(data_spec, channels, train=False))
    regularizers = build_regularizers(regularizer_configs)
    device = stage.device
    evaluate = _evaluator(test_set, stage, run_cfg.num_workers)
    example = example_batch(test_set)
    history = fit(
        SupervisedModule(model),
        FitContext(
            spec=train_spec,
            train_set=train_set,
            checkpoints=checkpoints,
            metrics_dir=metrics_dir,
            device=device,
            dist=stage.dist,
            regularizers=regularizers,
            evaluate=evaluate,
            diagnose=lambda m: spectra(m, example),
            num_workers=run_cfg.num_workers,
            progress=run_cfg.progress,
            desc=f"{stage_spec.name}[{run_id}]",
            example_inputs=example,
        ),
    )
    final = evaluate(model)
    return {
        "test_acc": final["test_acc"],
        "test_loss": final["test_loss"],
        "train_acc": history[-1].get("train_acc") if history else None,
        "epochs": len(history),
        "regularizers": [r.name for r in regularizers],
        **spectra(model, example),
    }


def _checkpoint_store(stage_spec: StageSpec, item: dict, cfg, run_id: str) -> CheckpointStore:
    """The run's checkpoints, in a folder keyed by its fingerprint (parameters, code, data)."""
    fingerprint = run_fingerprint(stage_spec, item, cfg)
    return CheckpointStore(paths.checkpoints(stage_spec.name, run_id, fingerprint), fingerprint)


def _evaluator(test_set, stage: StageRun, num_workers: int):
    """Test accuracy and loss of a model, each rank on its share of the test set."""

    def evaluate(m) -> dict:
        return evaluate_accuracy(
            m,
            test_set,
            stage.device,
            num_workers=num_workers,
            rank=stage.dist.rank,
            world=stage.dist.world,
        )

    return evaluate
