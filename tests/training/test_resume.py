"""A run killed mid-training and started again ends exactly where an uninterrupted run ends (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO, tiny_params

pytestmark = pytest.mark.slow

ARGS = ["pretrain", "--variant", "rep_spectral", "--seed", "0"]
# PYTHONPATH: the child must run this checkout, not whichever copy the virtualenv installed.
ENV = {**os.environ, "PIPELINE_DEVICE": "cpu", "PYTHONPATH": str(REPO)}


def _setup(directory: Path) -> None:
    directory.mkdir()
    params = tiny_params()
    params["pretrain"]["train"].update(epochs=4, checkpoint_every=2, batch_size=16)
    params["pretrain"]["data"]["limit_train"] = 96  # 6 steps per epoch, 24 in all
    (directory / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(
        [sys.executable, "-m", "pipeline", "prepare", "--dataset", "digits_0to4"],
        cwd=directory,
        check=True,
        env=ENV,
        capture_output=True,
    )


def _run(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *ARGS],
        cwd=directory,
        capture_output=True,
        text=True,
        env=ENV,
    )


def _final(directory: Path) -> dict:
    return torch.load(
        directory / "artifacts/backbones/rep_spectral/seed0/model.pt", weights_only=True
    )["state_dict"]


def test_killed_run_resumes_to_the_same_result(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _setup(straight)
    _setup(killed)
    assert _run(straight).returncode == 0

    ckpt = killed / "artifacts/checkpoints/pretrain/rep_spectral/seed0/last.pt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *ARGS],
        cwd=killed,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    deadline = time.time() + 120
    # Wait until training is past epoch 1 (the regularizer's burn-in), then kill without warning.
    while time.time() < deadline:
        if ckpt.exists():
            try:
                state = torch.load(ckpt, weights_only=True)
            except Exception:
                state = None
            if state and state["global_step"] >= 8:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    state = torch.load(ckpt, weights_only=True)
    assert 8 <= state["global_step"] < 24 and not state["done"]

    resumed = _run(killed)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    a, b = _final(straight), _final(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    hist_a = (straight / "metrics/pretrain/rep_spectral/seed0/history.csv").read_text().splitlines()
    hist_b = (killed / "metrics/pretrain/rep_spectral/seed0/history.csv").read_text().splitlines()
    assert hist_a == hist_b  # the history holds no timings: byte-identical

    again = _run(killed)  # finished: a re-run resumes at the end and trains nothing
    assert again.returncode == 0 and "epoch 1/4" not in again.stderr
