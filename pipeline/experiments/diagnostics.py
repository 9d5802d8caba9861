"""Representation and weight diagnostics of the main DAG's backbones (LR paper, nuclear-norm paper).

For each backbone ``artifacts/backbones/<name>/seed<N>/model.pt`` (pretrained on the source
classes; ``diagnostics.backbone_seed`` picks the pretraining run) and
the transfer target's prepared shards:

* variance-ratio curve and effective dimension of the backbone's representation of the target
  test set (LR paper Fig. 2);
* accuracy of a linear classifier on PCA-compressed representations vs k (LR paper Table 5);
* accuracy of the finetuned model
  ``artifacts/finetune/<target>/<name>/backbone_seed<N>/<reg>/seed<k>/model.pt``
  under Gaussian pixel noise (LR paper Table 4) — skipped, and said so, when it does not exist;
* effective rank and effective sparsity of every weight layer (nuclear-norm paper).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipeline.analysis import (
    extract_features,
    noise_diagnostics,
    representation_diagnostics,
    weight_rows,
)
from pipeline.core import paths
from pipeline.core.errors import DatasetError
from pipeline.core.io import write_csv, write_json
from pipeline.data import load_tensors, open_shards, to_pixel_tensor
from pipeline.experiments.config import DiagnosticsSettings, ExperimentsConfig
from pipeline.experiments.util import cpu_seconds
from pipeline.models import load_model

log = logging.getLogger(__name__)


def backbone_path(s: DiagnosticsSettings, backbone: str) -> Path:
    return (
        Path(s.artifacts) / "backbones" / paths.backbone_id(backbone, s.backbone_seed) / "model.pt"
    )


def finetune_path(s: DiagnosticsSettings, backbone: str) -> Path:
    run = paths.finetune_id(
        s.target, backbone, s.backbone_seed, s.finetune_regularizer, s.finetune_seed
    )
    return Path(s.artifacts) / "finetune" / run / "model.pt"


def load_target(s: DiagnosticsSettings) -> dict[str, torch.Tensor]:
    """The target's prepared train/test shards as [0, 1] pixel tensors at the DAG's resolution."""
    transform = to_pixel_tensor(False, s.image_size, s.channels, "none")
    out = {}
    for split in ("train", "test"):
        shard_dir = Path(s.artifacts) / "prepared" / s.target / split
        if not shard_dir.is_dir():
            raise DatasetError(
                f"prepared shards not found: {shard_dir} (run the main DAG: dvc repro prepare)"
            )
        out[f"x_{split}"], out[f"y_{split}"] = load_tensors(
            open_shards(shard_dir, in_memory=True), transform
        )
    return out


def diagnose(model, finetuned, data: dict, s: DiagnosticsSettings) -> dict:
    """All diagnostics of one backbone (and its finetuned model, if given)."""
    train_f = extract_features(model.representation, data["x_train"])
    test_f = extract_features(model.representation, data["x_test"])
    out = representation_diagnostics(
        train_f, data["y_train"], test_f, data["y_test"], s.ks, s.thresholds
    )
    out["weights"] = weight_rows(model)
    if finetuned is None:
        out["noise_accuracy"] = None
    else:
        out["noise_accuracy"] = noise_diagnostics(
            finetuned, data["x_test"], data["y_test"], s.noise_ps, seed=s.noise_seed
        )
    return out


def run_backbone(s: DiagnosticsSettings, backbone: str, data: dict, since: float = 0.0) -> dict:
    """Diagnose one backbone and write ``<out>/<backbone>/{metrics.json, weights.csv}``.

    ``cpu_seconds`` in the metrics is this process's CPU time since ``since`` (so several
    backbones diagnosed in one process do not count the shared start-up twice).
    """
    model, _ = load_model(backbone_path(s, backbone))
    ft_path = finetune_path(s, backbone)
    finetuned = load_model(ft_path)[0] if ft_path.is_file() else None
    if finetuned is None:
        log.warning("diagnostics: %s not found; noise accuracy skipped for %s", ft_path, backbone)
    result = {
        "backbone": backbone,
        "target": s.target,
        "backbone_model": str(backbone_path(s, backbone)),
        "finetuned_model": str(ft_path) if finetuned is not None else None,
        "train_size": int(data["x_train"].shape[0]),
        "test_size": int(data["x_test"].shape[0]),
        **diagnose(model, finetuned, data, s),
    }
    result["cpu_seconds"] = round(cpu_seconds() - since, 1)
    out = Path(s.out) / backbone
    write_json(out / "metrics.json", result)
    write_csv(
        out / "weights.csv",
        [{**r, "shape": "x".join(map(str, r["shape"]))} for r in result["weights"]],
    )
    return result


def run(cfg: ExperimentsConfig, backbone: str | None = None) -> dict:
    """Diagnose one backbone (``--backbone``) or every backbone listed in the params."""
    s = cfg.diagnostics
    names = [backbone] if backbone else list(s.backbones)
    data = load_target(s)
    results, since = {}, 0.0
    for name in names:
        results[name] = run_backbone(s, name, data, since)
        since = cpu_seconds()
    return results
