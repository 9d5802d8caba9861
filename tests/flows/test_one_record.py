"""DVC is the one record: the flow and ``dvc repro`` agree on what is up to date, both ways.

A tiny DVC project (git + DVC, a copy of the ``pipeline`` package, the generated ``dvc.yaml``)
runs a DAG of 9 instances: prepare x2, two pretrain variants at one pretraining seed
(independent training stages, so the flow runs them at once), finetune, readout, two attacks
and the report.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows import execute
from flows import transfer as flow_module
from pipeline.dvcyaml import render
from tests.conftest import REPO, tiny_params

pytestmark = pytest.mark.slow
DVC = [sys.executable, "-m", "dvc"]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def small_params() -> dict:
    params = tiny_params()
    params["ssl"]["run"] = {"variants": [], "seeds": [0]}  # dvc.yaml's ssl matrix reads these
    params["pretrain"]["run"] = {"variants": ["none", "rep_spectral"], "seeds": [0]}
    params["pretrain"]["data"]["limit_train"] = 96
    params["pretrain"]["train"]["epochs"] = 2
    target = params["finetune"]["targets"]["digits_5to9"]
    target["data"].update(limit_train=64, limit_test=48)
    target["train"]["epochs"] = 1
    params["finetune"]["run"].update(backbones=["none"], backbone_seeds=[0], seeds=[0])
    return params


def sh(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, **GIT_ENV, "PYTHONPATH": str(cwd), "PATH": path}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-3000:]}")
    return done


def make_project(root: Path, params: dict) -> Path:
    """git + DVC project with this checkout's code and generated dvc.yaml, committed."""
    shutil.copytree(
        REPO / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / ".dvcignore", root / ".dvcignore")
    (root / "dvc.yaml").write_text(render())
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / ".gitignore").write_text("/artifacts/\n/metrics/\n/reports/\n__pycache__/\n")
    sh(["git", "init", "-q"], root)
    sh([*DVC, "init", "-q"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "init"], root)
    return root


def dvc_status(root: Path) -> dict:
    return json.loads(sh([*DVC, "status", "--json"], root).stdout or "{}")


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = make_project(tmp_path / "p", small_params())
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    return root


def test_flow_and_dvc_repro_keep_one_record(project, prefect_harness, monkeypatch):
    # Record when each stage process runs, to show independent training stages overlap.
    spans: dict[str, tuple[float, float]] = {}
    real = execute.run_streaming

    def timed(cmd, env, log, ident, cwd=None, **kw):
        t0 = time.monotonic()
        real(cmd, env, log, ident, cwd=cwd, **kw)
        spans[ident] = (t0, time.monotonic())

    monkeypatch.setattr(execute, "run_streaming", timed)
    status = flow_module.transfer(save_experiment=False)
    assert set(status.values()) == {"ran"} and len(status) == 9
    (a0, a1), (b0, b1) = spans["pretrain@none-0"], spans["pretrain@rep_spectral-0"]
    assert a0 < b1 and b0 < a1, f"training stages did not overlap: {spans}"

    # The flow's work is DVC's record: nothing stale, and dvc repro runs nothing.
    assert dvc_status(project) == {}
    repro = sh([*DVC, "repro"], project)
    assert "Running stage" not in repro.stdout

    # One parameter change: the flow's dry run names exactly the stale set DVC names.
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["attack"]["n_samples"] = 3
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc_stale = set(dvc_status(project))
    flow_stale = {
        i for i, verdict, _ in flow_module.dry_run("params.yaml", []) if verdict.startswith("stale")
    }
    assert flow_stale == dvc_stale == {"attack_finetune@digits_5to9-none-0-none-0",
                                       "attack_readout@digits_5to9-none-0"}  # fmt: skip

    # dvc repro runs them; the flow then skips every stage.
    sh([*DVC, "repro"], project)
    status = flow_module.transfer(save_experiment=False)
    assert set(status.values()) == {"up to date"}

    # Back to the earlier value: DVC's run-cache restores the attacks instead of re-running.
    params["attack"]["n_samples"] = 4
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = flow_module.transfer(save_experiment=False)
    # The attacks and the report that reads them are restored; the rest never changed.
    restored = {i for i, s in status.items() if s == "restored"}
    assert restored == {
        "attack_readout@digits_5to9-none-0",
        "attack_finetune@digits_5to9-none-0-none-0",
        "report",
    }
    assert {s for i, s in status.items() if i not in restored} == {"up to date"}
    assert dvc_status(project) == {}

    pushed_and_pulled_clean(project)


def pushed_and_pulled_clean(project: Path) -> None:
    """Everything a stage writes that another reads is DVC's: pushed, a fresh clone pulls a
    workspace that DVC finds clean (an undeclared file would show as a changed dependency)."""
    remote = project.parent / "remote"
    sh([*DVC, "remote", "add", "-d", "store", str(remote)], project)
    sh([*DVC, "push"], project)
    clone = project.parent / "fresh"
    sh(["git", "clone", "-q", str(project), str(clone)], project.parent)
    for name in ("dvc.lock", "params.yaml", ".dvc/config"):
        shutil.copy(project / name, clone / name)
    sh([*DVC, "pull"], clone)
    assert dvc_status(clone) == {}
    report = (clone / "reports" / "transfer.md").read_text()
    assert report == (project / "reports" / "transfer.md").read_text()


def test_killed_flow_completes_on_rerun(project, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PYTHONPATH": str(project), "PREFECT_API_URL": PREFECT_API_URL.value()}
    cmd = [sys.executable, "-m", "flows.transfer", "--no-experiment", "--retries", "0"]
    shutil.copytree(REPO / "flows", project / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.Popen(cmd, cwd=project, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    # Kill it once the pretraining has started (its checkpoint folder appears).
    deadline = time.monotonic() + 240
    while not list(project.glob("artifacts/checkpoints/pretrain/*")):
        assert time.monotonic() < deadline and proc.poll() is None, "flow never reached pretrain"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert dvc_status(project) != {}
    # The rerun also records itself as a DVC experiment (no --no-experiment this time).
    rerun = [c for c in cmd if c != "--no-experiment"]
    done = subprocess.run(rerun, cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert dvc_status(project) == {}
    shown = json.loads(sh([*DVC, "exp", "show", "--json"], project).stdout)
    metrics = {
        rev["name"]: rev["data"]["metrics"]
        for row in shown
        for exp in row.get("experiments") or []
        for rev in exp["revs"]
    }
    (name,) = metrics  # named after the run: parameters, UTC time, commit
    assert name.startswith("flow-params.yaml-")
    key = "metrics/attack/readout/digits_5to9/none/backbone_seed0/summary.json"
    assert metrics[name][key]["data"]["mean_distance"] > 0


def test_two_dvc_experiments_show_their_mean_distance(tmp_path):
    params = small_params()
    params["pretrain"]["run"] = {"variants": ["none"], "seeds": [0]}
    root = make_project(tmp_path / "p", params)
    for n in (3, 4):
        sh([*DVC, "exp", "run", "-q", "-S", f"attack.n_samples={n}", "-n", f"n{n}"], root)
    shown = json.loads(sh([*DVC, "exp", "show", "--json"], root).stdout)
    found = {}
    for row in shown:
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                metrics = rev["data"]["metrics"]
                key = "metrics/attack/readout/digits_5to9/none/backbone_seed0/summary.json"
                found[rev["name"]] = metrics[key]["data"]["mean_distance"]
    assert set(found) == {"n3", "n4"}
    assert all(isinstance(v, float) and v > 0 for v in found.values())


def test_a_stage_declared_in_one_place_reaches_cli_plan_and_dvc_yaml(monkeypatch, capsys):
    import importlib.machinery
    import types

    from pipeline.__main__ import main
    from pipeline.core.config import load_config
    from pipeline.plan import plan
    from pipeline.stages import registry
    from pipeline.stages.spec import Arg, StageSpec

    toy = types.ModuleType("pipeline.stages.toy", "``toy``: a stage declared in one place.")
    toy.__spec__ = importlib.machinery.ModuleSpec("pipeline.stages.toy", None)
    toy.ARGS = (Arg("variant"), Arg("seed", type=int))
    toy.STAGES = (
        StageSpec(
            name="toy", command="toy",
            matrix={"variant": "pretrain.run.variants", "seed": "pretrain.run.seeds"},
            deps=("artifacts/backbones/{variant}/seed{seed}/model.pt",),
            metrics=("metrics/toy/{variant}/seed{seed}.json",),
        ),
    )  # fmt: skip
    seen = []
    toy.run = lambda cfg, variant, seed: seen.append((variant, seed)) or {}
    monkeypatch.setitem(sys.modules, "pipeline.stages.toy", toy)
    monkeypatch.setitem(registry.COMMANDS, "toy", "a toy")

    argv = ["toy", "--variant", "none", "--seed", "1", "--params", str(REPO / "params.yaml")]
    assert main(argv) == 0
    assert seen == [("none", 1)]
    instances = {i.id: i for i in plan(load_config(REPO / "params.yaml"))}
    assert instances["toy@none-1"].upstream == ["pretrain@none-1"]
    text = render()
    cmd = "cmd: python -m pipeline toy --variant ${item.variant} --seed ${item.seed}"
    assert "  toy:\n" in text and cmd in text


def test_ui_shows_failures_their_message_and_what_never_ran(project, prefect_harness, monkeypatch):
    """A child's user error is the task's failure message and is not retried; what depends on
    it shows as *Upstream failed*; up-to-date stages show as *Up to date*."""
    from prefect.client.orchestration import get_client

    from flows.launch import StageFailed

    real = execute.run_streaming
    calls: list[str] = []

    def failing(cmd, env, log, ident, cwd=None, **kw):
        calls.append(ident)
        if ident.startswith("finetune@"):
            raise StageFailed(ident, 2, ["noise", "error: a user error in the child"])
        real(cmd, env, log, ident, cwd=cwd, **kw)

    monkeypatch.setattr(execute, "run_streaming", failing)
    only = ["prepare", "pretrain@none-0", "finetune", "attack_finetune"]
    with pytest.raises(RuntimeError, match="did not complete"):
        flow_module.transfer(only=only, save_experiment=False, retries=2, retry_delay_seconds=0)
    assert calls.count("finetune@digits_5to9-none-0-none-0") == 1  # a user error is not retried
    state = flow_module.transfer(only=only, save_experiment=False, retries=0, return_state=True)
    assert state.is_failed()

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    this_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        latest = {run.name: run.state for run in client.read_task_runs(flow_run_filter=this_run)}
    assert latest["prepare@digits_0to4"].name == "Up to date"
    assert latest["pretrain@none-0"].name == "Up to date"
    failed = latest["finetune@digits_5to9-none-0-none-0"]
    assert failed.is_failed() and "error: a user error in the child" in failed.message
    assert latest["attack_finetune@digits_5to9-none-0-none-0"].name == "Upstream failed"
