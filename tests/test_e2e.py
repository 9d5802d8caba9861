"""The whole transfer DAG through the CLI on tiny data: every stage, every output, sane numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.__main__ import main

pytestmark = pytest.mark.slow


def _json(path: str) -> dict:
    return json.loads(Path(path).read_text())


def test_cli_runs_every_stage_on_tiny_data(workdir):
    assert main(["prepare", "--dataset", "digits_0to4"]) == 0
    assert main(["prepare", "--dataset", "digits_5to9"]) == 0
    for variant in ("none", "rep_spectral"):
        assert main(["pretrain", "--variant", variant, "--seed", "0"]) == 0
    assert main(["ssl", "--variant", "simclr", "--seed", "0"]) == 0
    ft = ["--target", "digits_5to9", "--regularizer", "none", "--seed", "0"]
    for backbone in ("none", "rep_spectral", "simclr"):
        b = ["--backbone", backbone, "--backbone_seed", "0"]
        assert main(["finetune", *ft, *b]) == 0
        assert main(["readout", "--target", "digits_5to9", *b]) == 0
        assert main(["attack", "--kind", "finetune", *ft, *b]) == 0
        assert main(["attack", "--kind", "readout", "--target", "digits_5to9", *b]) == 0
    assert main(["report"]) == 0

    pre = _json("metrics/pretrain/rep_spectral/seed0/summary.json")
    assert 0.0 <= pre["test_acc"] <= 1.0 and pre["epochs"] == 2 and pre["seed"] == 0
    assert pre["sum_sigma_max_sq"] > 0 and pre["layers"] > 0
    history = _json("metrics/pretrain/rep_spectral/seed0/history.json")
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[0]["penalty"] == 0.0 and history[1]["penalty"] > 0.0  # burn-in of one epoch
    ssl = _json("metrics/ssl/simclr/seed0/summary.json")
    assert 0.0 <= ssl["knn_acc"] <= 1.0 and ssl["method"] == "simclr" and ssl["seed"] == 0
    ro = _json("metrics/readout/digits_5to9/none/backbone_seed0/summary.json")
    assert ro["backbone_seed"] == 0
    assert ro["test_acc"] > 0.3  # 5 classes: chance is 0.2; logistic regression on features
    att = _json("metrics/attack/finetune/digits_5to9/none/backbone_seed0/none/seed0/summary.json")
    assert att["backbone_seed"] == 0 and att["seed"] == 0
    assert att["n_samples"] >= 1 and att["success_rate"] == 1.0 and att["mean_distance"] > 0
    rows = (
        Path("metrics/attack/readout/digits_5to9/simclr/backbone_seed0/samples.csv")
        .read_text()
        .splitlines()
    )
    assert rows[0].startswith("index,label,method,distance,queries,success,d_")
    assert len(rows) == att["n_samples"] * (len(att["methods"]) + 1) + 1
    report = Path("reports/transfer.md").read_text()
    assert "| digits_5to9 | rep_spectral | none |" in report
    assert Path("reports/figures/finetune_digits_5to9.png").stat().st_size > 1000
    for name in ("none", "rep_spectral", "simclr"):
        assert Path(f"artifacts/backbones/{name}/seed0/model.pt").is_file()


def test_cli_subprocess_exit_codes(workdir):
    ok = subprocess.run(
        [sys.executable, "-m", "pipeline", "prepare", "--dataset", "digits_5to9"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "pretrain",
            "--variant",
            "none",
            "--seed",
            "0",
            "--set",
            "pretrain.train.epochs=-3",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "pretrain.train.epochs" in bad.stderr and "Traceback" not in bad.stderr
