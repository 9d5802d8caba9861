"""The flow's plain parts: retry policy, output forwarding, GPU allotment, selection, errors,
and the params-file model (the workspace's params.yaml is the experiment)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.states import Failed

from flows.execute import retryable
from flows.launch import DevicePool, StageFailed, child_env, run_streaming
from flows.transfer import check_plan, select
from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.core.workspace import apply_params
from pipeline.plan import plan


def test_user_errors_are_not_retried_but_crashes_are():
    def failed(exc):
        return Failed(data=exc, message=str(exc))  # what the engine hands the condition

    assert not retryable(None, None, failed(ConfigError("bad")))
    assert not retryable(None, None, failed(StageFailed("x", 2, [])))
    assert retryable(None, None, failed(StageFailed("x", -9, [])))
    assert retryable(None, None, failed(RuntimeError("worker lost")))


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


def test_failed_stage_reports_its_own_error_line():
    code = "import sys; print('noise'); print('error: data/x is missing', file=sys.stderr); sys.exit(2)"
    with pytest.raises(StageFailed) as info:
        run_streaming([sys.executable, "-c", code], child_env(None), _Quiet(), "demo")
    assert info.value.exit_code == 2
    assert str(info.value) == "demo: exited with status 2: error: data/x is missing"


class _Quiet:
    def info(self, *a):
        pass


def test_plan_problems_are_short_and_come_first(workdir):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["prepare"]["outputs"]["cifar10"] = {"source": "cifar10", "root": "data/cifar10"}
    params["prepare"]["raw"] = ["cifar10"]
    for name in ("a", "b", "c", "d", "e"):
        params["pretrain"]["variants"][name] = []
    params["pretrain"]["run"]["variants"] = ["none", "rep_spectral", "a", "b", "c", "d", "e"]
    params["pretrain"]["train"]["gpus"] = 4
    Path("params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_config("params.yaml")
    with pytest.raises(ConfigError) as info:
        check_plan(plan(cfg), "auto", gpus=1)
    msg = str(info.value)
    assert "missing input data/cifar10 (read by prepare_raw@cifar10)" in msg
    assert "7 training stage(s) need up to 4 GPUs but 1 are visible" in msg
    assert "(7 in all)" in msg and len(msg) < 400


def test_params_file_is_applied_but_never_over_uncommitted_edits(workdir):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}  # fmt: skip

    def run(*argv):
        env_path = {**env, "PATH": "/usr/bin:/bin"}
        return subprocess.run(argv, check=True, capture_output=True, env=env_path)

    run("git", "init", "-q")
    Path(".dvc/tmp").mkdir(parents=True)
    run("git", "add", "params.yaml")
    run("git", "commit", "-qm", "p")
    other = yaml.safe_load(Path("params.yaml").read_text())
    other["attack"]["n_samples"] = 7
    Path("other.yaml").write_text(yaml.safe_dump(other))
    assert apply_params("other.yaml", ["attack.seed=3"])  # committed params.yaml: replaced
    applied = yaml.safe_load(Path("params.yaml").read_text())
    assert applied["attack"]["n_samples"] == 7 and applied["attack"]["seed"] == 3
    assert not apply_params("params.yaml", [])  # already the experiment: nothing to write
    Path("third.yaml").write_text("extends: other.yaml\nattack: {n_samples: 9}\n")
    assert apply_params("third.yaml", [])  # replacing what apply_params wrote loses nothing
    assert yaml.safe_load(Path("params.yaml").read_text())["attack"] == {
        **other["attack"],
        "n_samples": 9,
    }
    edited = Path("params.yaml").read_text() + "# my edit\n"
    Path("params.yaml").write_text(edited)
    with pytest.raises(ConfigError, match="uncommitted edits") as info:
        apply_params("other.yaml", [])
    assert Path("params.yaml").read_text() == edited
    # What to do, not "run with --params params.yaml" (the default, which could not help).
    assert "git commit params.yaml" in str(info.value) and "--params params.yaml" not in str(
        info.value
    )

    # After `dvc exp run -S attack.n_samples=11` (an uncommitted edit), --set goes on top of it.
    dvc_edit = yaml.safe_load(Path("params.yaml").read_text())
    dvc_edit["attack"]["n_samples"] = 11
    Path("params.yaml").write_text(yaml.safe_dump(dvc_edit))
    assert apply_params("params.yaml", ["attack.seed=5"])
    both = yaml.safe_load(Path("params.yaml").read_text())["attack"]
    assert both["n_samples"] == 11 and both["seed"] == 5
