"""Diagnostics stage functions on tiny models with known answers, and the stage end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.analysis import noise_diagnostics, representation_diagnostics, weight_rows
from pipeline.core.config import ModelSpec
from pipeline.data import ArrayDataset, write_shards
from pipeline.experiments.config import DiagnosticsSettings
from pipeline.experiments.diagnostics import load_target, run_backbone
from pipeline.models import SplitModel, build_model, save_model


def test_rank_one_features_have_effective_dimension_one():
    g = torch.Generator().manual_seed(0)
    direction = torch.tensor([3.0, 4.0, 0.0])
    scale = torch.rand(40, 1, generator=g) + 0.1
    labels = (scale[:, 0] > 0.6).long()
    feats = scale * direction  # every row on one line: rank 1
    out = representation_diagnostics(feats[:30], labels[:30], feats[30:], labels[30:], ks=[1, 3])
    assert out["feature_dim"] == 3
    np.testing.assert_allclose(out["variance_ratio"], [1.0, 1.0, 1.0], atol=1e-12)
    assert out["effective_dimension"] == {"0.9": 1, "0.99": 1}
    # The label is a threshold on the one coordinate: one PCA direction is enough.
    assert out["compression_accuracy"]["1"] >= 0.9


def test_weight_rows_known_effective_rank_and_sparsity():
    module = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        module[0].weight.copy_(torch.eye(4))  # rank 4, 4 non-zeros: both ratios = 2
        module[1].weight.zero_()
        module[1].weight[0, 0] = 5.0  # one non-zero entry: both ratios = 1
    rows = weight_rows(module)
    assert [r["layer"] for r in rows] == ["0", "1"]
    assert rows[0]["shape"] == [4, 4]
    assert rows[0]["effective_rank"] == pytest.approx(2.0)
    assert rows[0]["effective_sparsity"] == pytest.approx(2.0)
    assert rows[1]["effective_rank"] == pytest.approx(1.0)
    assert rows[1]["sigma_max_flat"] == pytest.approx(5.0)
    json.dumps(rows)  # JSON-ready


def test_noise_diagnostics_includes_clean_accuracy_and_is_seeded():
    # A "model" that predicts the brightest half: class 1 iff mean pixel > 0.5.
    class Bright(nn.Module):
        def forward(self, x):
            m = x.flatten(1).mean(1, keepdim=True)
            return torch.cat([0.5 - m, m - 0.5], dim=1)

    x = torch.cat([torch.full((10, 1, 4, 4), 0.1), torch.full((10, 1, 4, 4), 0.9)])
    y = torch.tensor([0] * 10 + [1] * 10)
    acc = noise_diagnostics(Bright(), x, y, ps=[0.4, 1.0], seed=0)
    assert list(acc) == ["0.0", "0.4", "1.0"]
    assert acc["0.0"] == 1.0
    assert acc == noise_diagnostics(Bright(), x, y, ps=[0.4, 1.0], seed=0)


def _tiny_artifacts(root, with_finetune: bool) -> DiagnosticsSettings:
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 20)):
        images = rng.integers(0, 255, size=(n, 8, 8), dtype=np.uint8)
        ds = ArrayDataset("tiny", images, [i % 2 for i in range(n)], ["a", "b"])
        write_shards(ds, root / "prepared" / "tiny" / split, source="tiny")
    spec = ModelSpec(arch="mlp", hidden=[6])
    meta = {"model": spec.model_dump(), "in_chans": 1, "image_size": 8, "classes": ["a", "b"]}
    torch.manual_seed(0)
    model: SplitModel = build_model(spec, 1, 3, 8)
    save_model(model, root / "backbones" / "b0" / "seed0" / "model.pt", meta)
    if with_finetune:
        model.replace_head(2)
        save_model(
            model,
            root / "finetune" / "tiny" / "b0" / "backbone_seed0" / "none" / "seed0" / "model.pt",
            meta,
        )
    return DiagnosticsSettings(
        out=str(root / "out"), backbones=["b0"], target="tiny", artifacts=str(root),
        image_size=8, ks=[1, 2, 50], noise_ps=[0.5],
    )  # fmt: skip


@pytest.mark.parametrize("with_finetune", [True, False])
def test_stage_writes_metrics_and_skips_noise_without_a_finetuned_model(tmp_path, with_finetune):
    s = _tiny_artifacts(tmp_path, with_finetune)
    data = load_target(s)
    assert data["x_train"].shape == (30, 1, 8, 8) and float(data["x_train"].max()) <= 1.0
    result = run_backbone(s, "b0", data)
    written = json.loads((tmp_path / "out" / "b0" / "metrics.json").read_text())
    assert written["backbone"] == "b0" and written["feature_dim"] == 6
    assert len(written["variance_ratio"]) == 6 and written["variance_ratio"][-1] == 1.0
    assert set(written["compression_accuracy"]) == {"1", "2", "6"}  # k capped at d = 6
    assert [w["layer"] for w in written["weights"]] == ["backbone.net.1", "head"]
    assert (tmp_path / "out" / "b0" / "weights.csv").is_file()
    if with_finetune:
        assert set(result["noise_accuracy"]) == {"0.0", "0.5"}
    else:
        assert written["noise_accuracy"] is None and written["finetuned_model"] is None
