"""Same launch under every tool: a ``train.gpus: N`` stage relaunches itself under torchrun.

``dvc repro`` and a person run ``python -m pipeline <stage>``; the stage itself starts N gloo
processes on ``run.device: cpu``, and stops with one line before any work when ``cuda``/``auto``
has fewer than N visible GPUs. A user error inside a child leaves the launcher with status 2 and
the child's own message.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from pipeline.core import launch
from pipeline.core.errors import ConfigError
from tests.conftest import REPO, tiny_params


def _params(tmp_path, **train) -> None:
    params = tiny_params()
    params.pop("ssl", None)
    params["report"]["primary"]["baselines"] = {}  # the SSL backbones it named are gone
    params["pretrain"]["data"]["limit_train"] = 64
    params["pretrain"]["train"].update(epochs=1, **train)
    params["pretrain"]["run"] = {"variants": ["none"], "seeds": [0]}
    params["finetune"]["run"]["backbones"] = ["none"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _cli(tmp_path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_cpu_stage_with_two_gpus_runs_as_two_gloo_processes(tmp_path):
    _params(tmp_path, gpus=2)
    assert _cli(tmp_path, "prepare", "--dataset", "digits_0to4").returncode == 0
    done = _cli(tmp_path, "pretrain", "--variant", "none", "--seed", "0", "--set", "run.device=cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "launching 2 processes" in done.stderr
    # Both ranks logged their process group; only rank 0 wrote the model.
    assert done.stderr.count("pretrain@none-0 finished") == 2
    assert (tmp_path / "artifacts/backbones/none/seed0/model.pt").is_file()


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_too_few_gpus_is_one_line_before_any_work(tmp_path, device):
    _params(tmp_path, gpus=2)
    done = _cli(
        tmp_path, "pretrain", "--variant", "none", "--seed", "0", "--set", f"run.device={device}"
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs 2 GPUs" in lines[0] and "0 are visible" in lines[0]
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.slow
def test_user_error_in_a_child_exits_2_with_its_message(tmp_path):
    _params(tmp_path, gpus=2)  # no prepared data: every child fails on the missing shards
    done = _cli(tmp_path, "pretrain", "--variant", "none", "--seed", "0", "--set", "run.device=cpu")
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: prepared shards not found at artifacts/prepared/digits_0to4")


def test_device_check_counts_visible_gpus():
    launch.check_devices(4, "cpu", visible=0)  # gloo: any count
    launch.check_devices(1, "cuda", visible=0)  # one process needs no check here
    launch.check_devices(2, "auto", visible=2)
    with pytest.raises(ConfigError, match="needs 4 GPUs .* 2 are visible"):
        launch.check_devices(4, "auto", visible=2)


def test_multi_node_torchrun_options():
    env = {"PIPELINE_NNODES": "2", "PIPELINE_RDZV_ENDPOINT": "h:29400", "PIPELINE_NODE_RANK": "1"}
    args = launch.torchrun_args(4, "pretrain@none-0", env)
    assert "--nnodes=2" in args and "--rdzv-endpoint=h:29400" in args and "--node-rank=1" in args
    assert "--rdzv-id=pipeline-pretrain_none-0" in args
    assert launch.torchrun_args(2, "x", {})[:1] == ["--standalone"]
    with pytest.raises(ConfigError, match="PIPELINE_RDZV_ENDPOINT"):
        launch.torchrun_args(2, "x", {"PIPELINE_NNODES": "2"})


def test_stage_start_removes_temporary_files_of_killed_runs(workdir):
    """Leftovers of a killed writer (dead PID) next to outputs and checkpoints go at start."""
    from pipeline.__main__ import main
    from pipeline.core.io import TEMP_MARK

    dead = 2**22 + 12345  # above the default pid_max: no such process
    leftovers = [
        workdir / f"artifacts/checkpoints/pretrain/none/seed0/.last.pt{TEMP_MARK}{dead}",
        workdir / f"artifacts/backbones/none/seed0/.model.pt{TEMP_MARK}{dead}",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half-written")
    assert (
        main(["pretrain", "--variant", "none", "--seed", "0"]) == 2
    )  # no prepared data: fails after the lock
    assert not any(p.exists() for p in leftovers)
