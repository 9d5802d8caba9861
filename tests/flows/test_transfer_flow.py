"""The Prefect flow: runs the tiny DAG end to end, skips what is up to date, re-runs one branch.

The tiny experiment has two targets; the second trains under ``torchrun`` on two CPU processes
(``train.gpus: 2``), so the multi-process launch and rank-0-only writes are exercised too.
"""

from __future__ import annotations

import copy
import logging
import sys

import pytest
import yaml
from prefect.states import Failed

from flows.launch import (
    DevicePool,
    StageFailed,
    child_env,
    run_streaming,
    stage_command,
    torchrun_args,
)
from flows.state import stamp_path
from flows.transfer import _retryable, execute_stage, select, transfer
from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.plan import plan
from tests.conftest import tiny_params

SECOND = "digits_5to9_b"


def two_target_params() -> dict:
    """tiny_params() cut to one backbone, plus a second target trained on 2 processes."""
    params = tiny_params()
    params.pop("ssl", None)
    params["pretrain"]["run"] = ["none"]
    params["pretrain"]["data"]["limit_train"] = 128
    params["pretrain"]["train"]["epochs"] = 1
    params["prepare"]["outputs"][SECOND] = copy.deepcopy(
        params["prepare"]["outputs"]["digits_5to9"]
    )
    params["prepare"]["embedded"].append(SECOND)
    first = params["finetune"]["targets"]["digits_5to9"]
    first["data"].update(limit_train=64, limit_test=48)
    first["train"]["epochs"] = 1
    second = copy.deepcopy(first)
    second["data"]["root"] = f"artifacts/prepared/{SECOND}"
    second["train"]["gpus"] = 2
    params["finetune"]["targets"][SECOND] = second
    params["finetune"]["run"].update(targets=["digits_5to9", SECOND], backbones=["none"])
    return params


@pytest.fixture
def flow_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(two_target_params(), sort_keys=False))
    return tmp_path


@pytest.mark.slow
def test_flow_runs_then_skips_then_reruns_only_the_changed_branch(flow_dir, prefect_harness):
    first = transfer(params="params.yaml", retries=0)
    assert set(first.values()) == {"ran"}, first
    assert len(first) == 13  # 3 prepare, pretrain, 2 finetune, 2 readout, 4 attack, report
    assert (flow_dir / "reports" / "transfer.md").is_file()
    assert (flow_dir / f"artifacts/finetune/{SECOND}/none/none/seed0/model.pt").is_file()
    assert stamp_path("report", "report").is_file()

    second = transfer(params="params.yaml", retries=0)
    assert set(second.values()) == {"skipped"}, second

    changed = transfer(
        params="params.yaml",
        overrides=["finetune.targets.digits_5to9.train.optimizer.lr_head=0.02"],
        retries=0,
    )
    ran = {i for i, s in changed.items() if s == "ran"}
    # Only that target's finetune branch and the report; its readout reads no train params.
    assert ran == {
        "finetune@digits_5to9-none-none-0",
        "attack_finetune@digits_5to9-none-none-0",
        "report",
    }, changed
    assert set(changed.values()) == {"ran", "skipped"}

    # A user error in one stage: it is not retried, its downstream stages do not run, the
    # independent ones are still checked, and the flow run fails naming them.
    too_big = "finetune.targets.digits_5to9.train.batch_size=4096"
    with pytest.raises(RuntimeError) as info:
        transfer(params="params.yaml", overrides=[too_big], retries=1, retry_delay_seconds=0)
    message = str(info.value)
    assert "finetune@digits_5to9-none-none-0 (failed)" in message
    assert "attack_finetune@digits_5to9-none-none-0 (upstream failed)" in message
    assert "report (upstream failed)" in message and SECOND not in message


def test_skip_follows_params_deps_and_outputs(workdir):
    """The plain function behind the task: prepare is cheap enough to run three times."""
    log = logging.getLogger("test")
    args = ("params.yaml", [], "prepare", {"dataset": "digits_5to9"}, "prepare@digits_5to9")
    assert execute_stage(*args, inline=True, log=log)["status"] == "ran"
    assert execute_stage(*args, inline=True, log=log)["status"] == "skipped"
    # An output changed behind the flow's back: the stage runs again.
    meta = workdir / "artifacts/prepared/digits_5to9/train/meta.json"
    meta.write_text(meta.read_text() + " ")
    assert execute_stage(*args, inline=True, log=log)["status"] == "ran"
    # A parameter the stage declares (prepare.maxcount) changed: runs; one it does not: skips.
    changed = ("params.yaml", ["prepare.maxcount=100"], *args[2:])
    assert execute_stage(*changed, inline=True, log=log)["status"] == "ran"
    other = ("params.yaml", ["prepare.maxcount=100", "attack.iterations=3"], *args[2:])
    assert execute_stage(*other, inline=True, log=log)["status"] == "skipped"


def test_training_stage_command_uses_torchrun_only_for_several_gpus(monkeypatch):
    for var in ("PIPELINE_NNODES", "PIPELINE_RDZV_ENDPOINT", "PIPELINE_NODE_RANK"):
        monkeypatch.delenv(var, raising=False)
    one = stage_command("pretrain", ["--variant", "none"], "p.yaml", ["a.b=1"], nproc=1)
    assert one[1:] == ["-m", "pipeline", "pretrain", "--params", "p.yaml", "--set", "a.b=1",
                       "--variant", "none"]  # fmt: skip
    four = stage_command("pretrain", ["--variant", "none"], "p.yaml", [], nproc=4, ident="x")
    assert four[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    env = {
        "PIPELINE_NNODES": "2",
        "PIPELINE_RDZV_ENDPOINT": "head:29400",
        "PIPELINE_NODE_RANK": "1",
    }
    multi = torchrun_args(8, "pretrain@rep_spectral", env)
    assert "--standalone" not in multi
    assert {
        "--nnodes=2",
        "--rdzv-endpoint=head:29400",
        "--node-rank=1",
        "--nproc_per_node=8",
    } <= set(multi)
    assert "--rdzv-id=pipeline-pretrain_rep_spectral" in multi
    with pytest.raises(ValueError, match="PIPELINE_RDZV_ENDPOINT"):
        torchrun_args(8, "x", {"PIPELINE_NNODES": "2"})


def test_user_errors_are_not_retried_but_crashes_are():
    def failed(exc):
        return Failed(data=exc, message=str(exc))  # what the engine hands the condition

    assert not _retryable(None, None, failed(ConfigError("bad")))
    assert not _retryable(None, None, failed(StageFailed("x", 2, [])))
    assert _retryable(None, None, failed(StageFailed("x", -9, [])))
    assert _retryable(None, None, failed(RuntimeError("worker lost")))


def test_subprocess_output_is_forwarded_line_by_line():
    class Collect:
        lines: list[str] = []

        def info(self, fmt, *args):
            self.lines.append(fmt % args)

    log = Collect()
    code = "import sys; print('first'); print('50%\\r100%'); sys.exit(3)"
    with pytest.raises(StageFailed) as info:
        run_streaming([sys.executable, "-c", code], child_env(None), log, "demo")
    assert log.lines == ["[demo] first", "[demo] 100%"]
    assert info.value.exit_code == 3 and "100%" in str(info.value)


def test_device_pool_never_hands_out_a_gpu_twice():
    pool = DevicePool(4)
    a, b = pool.acquire(3), pool.acquire(2)
    assert a == [0, 1, 2] and b is None
    pool.release(a)
    assert pool.acquire(4) == [0, 1, 2, 3]


def test_only_selects_by_glob_or_stage(workdir):
    instances = plan(load_config("params.yaml"))
    assert {i.stage for i in select(instances, ["finetune"])} == {"finetune"}
    assert [i.id for i in select(instances, ["prepare@digits_0*"])] == ["prepare@digits_0to4"]
    assert select(instances, None) == instances


def test_failed_subprocess_reports_its_output(workdir):
    log = logging.getLogger("test")
    with pytest.raises(StageFailed) as info:
        execute_stage("params.yaml", [], "pretrain", {"variant": "none"}, "pretrain@none", log=log)
    assert info.value.exit_code == 2  # the prepared shards are missing: a user error
    assert "prepared shards not found" in str(info.value)
