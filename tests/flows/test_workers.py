"""Stages on a pool of workers that share nothing but a DVC remote (and a checkpoint folder).

Every worker is a separate process in its own ``git clone`` of a tiny project, with its own DVC
cache; outputs travel only through a local-directory DVC remote, the ``dvc.lock`` entries through
Prefect (a test server). The flow runs in the project itself, as the orchestrator.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flows import transfer as flow_module
from flows.record import DvcRecord, MissingObject
from flows.worker import run_here
from tests.conftest import REPO
from tests.flows.test_one_record import DVC, dvc_status, make_project, sh, small_params

pytestmark = pytest.mark.slow
POOL = "t"
SERVED = "serves pool"


def pool_params(**pretrain_train) -> dict:
    params = small_params()
    params["run"]["device"] = "cpu"  # every model stage goes to the ``cpu`` queue
    params["pretrain"]["run"] = {"variants": ["none"], "seeds": [0]}
    params["pretrain"]["train"].update(pretrain_train)
    return params


def make_pool_project(root: Path, params: dict, remote: Path) -> Path:
    """make_project plus the flows package and a default DVC remote, committed."""
    make_project(root, params)
    shutil.copytree(REPO / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    sh([*DVC, "remote", "add", "-d", "store", str(remote)], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "flows and remote"], root)
    return root


def api_env(root: Path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PYTHONPATH": str(root), "PATH": path,
            "PREFECT_API_URL": PREFECT_API_URL.value()}  # fmt: skip


class Worker:
    """``python -m flows.worker`` in a fresh clone of the project, its output in a log file."""

    def __init__(self, name: str, project: Path, tmp: Path, checkpoint_dir: Path | None = None):
        self.name = name
        self.clone = tmp / name
        sh(["git", "clone", "-q", str(project), str(self.clone)], tmp)
        self.log = tmp / f"{name}.log"
        cmd = [sys.executable, "-m", "flows.worker", "--pool", POOL, "--queue", "cpu",
               "--limit", "1", "--name", name, "--poll", "1", "--beat", "1"]  # fmt: skip
        if checkpoint_dir is not None:
            cmd += ["--checkpoint-dir", str(checkpoint_dir)]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.clone, env=api_env(self.clone),
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_serving(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while SERVED not in self.text():
            assert self.proc.poll() is None, f"{self.name} exited:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"{self.name} never served:\n{self.text()[-3000:]}"
            time.sleep(0.5)
        time.sleep(2)  # its first poll

    def ran(self) -> set[str]:
        return set(re.findall(rf"ran (\S+) on worker {self.name}\b", self.text()))

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def fresh_clone_pulls_everything(project: Path, tmp: Path) -> None:
    """A third clone, given the orchestrator's dvc.lock and params.yaml, pulls a clean workspace."""
    clone = tmp / "fresh"
    sh(["git", "clone", "-q", str(project), str(clone)], tmp)
    for name in ("dvc.lock", "params.yaml"):
        shutil.copy(project / name, clone / name)
    sh([*DVC, "pull"], clone)
    assert dvc_status(clone) == {}
    assert (clone / "reports" / "transfer.md").is_file()


@pytest.fixture
def pool_project(tmp_path, monkeypatch):
    def build(params: dict) -> Path:
        (tmp_path / "remote").mkdir()
        root = make_pool_project(tmp_path / "p", params, tmp_path / "remote")
        monkeypatch.chdir(root)
        monkeypatch.syspath_prepend(str(root))
        return root

    return build


def test_dag_runs_across_two_workers_through_the_remote(pool_project, tmp_path, prefect_harness):
    params = pool_params()
    params["run"]["device"] = "auto"  # no GPU worker: the pool runs on CPUs, nothing to set
    project = pool_project(params)
    workers = [Worker(name, project, tmp_path) for name in ("w1", "w2")]
    try:
        for worker in workers:
            worker.wait_serving()
        status = flow_module.transfer(save_experiment=False, pool=POOL, retries=0)
        assert set(status.values()) == {"ran"}, status
        what_the_ui_shows(workers)
    finally:
        for worker in workers:
            worker.stop()

    # Model stages ran on the workers, each on exactly one; prepare and report in the flow.
    ran_by = {ident: w.name for w in workers for ident in w.ran()}
    remote_ids = {i for i in status if not i.startswith(("prepare", "report"))}
    assert set(ran_by) == remote_ids, (ran_by, [w.text()[-2000:] for w in workers])
    assert sum(len(w.ran()) for w in workers) == len(remote_ids)
    assert set(ran_by.values()) == {"w1", "w2"}, ran_by

    # A stage consumed, through the remote, what the other worker produced. finetune and
    # readout both wait for the one pretrain and start together, so each worker takes one.
    crossed = [(up, ident) for ident in ran_by for up in _upstream(ident)
               if up in ran_by and ran_by[up] != ran_by[ident]]  # fmt: skip
    assert crossed, ran_by
    up, down = crossed[0]
    consumer = next(w for w in workers if w.name == ran_by[down])
    produced = DvcRecord(project).entry(up)["outs"][0]
    assert (consumer.clone / produced["path"]).is_file()

    # The orchestrator's record is complete and clean, every output is in the remote.
    assert dvc_status(project) == {}
    cloud = sh([*DVC, "status", "--cloud", "--json"], project).stdout.strip()
    assert cloud in ("", "{}"), cloud
    fresh_clone_pulls_everything(project, tmp_path)


def what_the_ui_shows(workers: list[Worker]) -> None:
    """The Work Pools page lists the pool and its workers; each stage's run starts Queued, never
    Late, under its stage's task run; a UI "Retry" of one is refused, and nothing runs again."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.states import AwaitingRetry

    from flows.protocol import FLOW_NAME, QUEUED, WORK_POOL_TYPE

    with get_client(sync_client=True) as client:
        assert client.read_work_pool(POOL).type == WORK_POOL_TYPE
        listed = {w.name for w in client.read_workers_for_work_pool(POOL)}
        assert {w.name for w in workers} <= listed, listed
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])))
        assert runs
        for run in runs:
            names = [st.name for st in client.read_flow_run_states(run.id)]
            assert names[0] == QUEUED and "Late" not in names, names
            assert run.parent_task_run_id is not None and run.work_pool_name == POOL

        retried = runs[0]
        ran = [w.text().count(f"ran {retried.name} on worker") for w in workers]
        client.set_flow_run_state(retried.id, AwaitingRetry(), force=True)  # the UI's "Retry"
        deadline = time.monotonic() + 90
        while (run := client.read_flow_run(retried.id)).run_count < 2 or not run.state.is_final():
            assert time.monotonic() < deadline, run.state
            time.sleep(0.5)
    assert run.state.is_failed() and "not retried from the UI" in run.state.message, run.state
    assert [w.text().count(f"ran {retried.name} on worker") for w in workers] == ran


def _upstream(ident: str) -> list[str]:
    from pipeline.core.config import load_config
    from pipeline.plan import plan

    return {i.id: i.upstream for i in plan(load_config("params.yaml"))}[ident]


def test_killed_worker_stage_resumes_on_the_other_from_shared_checkpoint(
    pool_project, tmp_path, prefect_harness
):
    params = pool_params(epochs=6, checkpoint_every=2)
    params["pretrain"]["data"]["limit_train"] = 320
    project = pool_project(params)
    shared = tmp_path / "shared-checkpoints"
    w1 = Worker("w1", project, tmp_path, shared)
    w2 = None
    cmd = [sys.executable, "-m", "flows.transfer", "--no-experiment", "--pool", POOL,
           "--only", "prepare", "--only", "pretrain", "--retries", "2", "--lost-after", "15"]  # fmt: skip
    log = tmp_path / "flow.log"
    try:
        w1.wait_serving()
        with open(log, "w") as out:
            flow = subprocess.Popen(cmd, cwd=project, env=api_env(project), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        # Kill w1 once pretraining has written a checkpoint into the shared folder.
        deadline = time.monotonic() + 200
        while not list(shared.glob("pretrain/none/seed0/*/last.pt")):
            assert flow.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, w1.text()[-3000:]
            time.sleep(0.1)
        w1.kill()
        (checkpoint,) = shared.glob("pretrain/none/seed0/*/last.pt")
        state = torch.load(checkpoint, weights_only=True, map_location="cpu")
        assert not state.get("done"), "pretraining finished before the kill; make it longer"
        # The second worker joins later, as a replacement would; it never saw w1's workspace.
        w2 = Worker("w2", project, tmp_path, shared)
        assert flow.wait(timeout=220) == 0, log.read_text()[-3000:]
    finally:
        for worker in (w1, w2):
            if worker is not None:
                worker.stop()
        if flow.poll() is None:
            os.killpg(flow.pid, signal.SIGKILL)
    assert "pretrain@none-0" not in w1.ran()
    assert w2.ran() == {"pretrain@none-0"}, w2.text()[-3000:]
    assert "resumed from" in w2.text(), w2.text()[-3000:]
    stale = set(dvc_status(project))  # the stages outside --only are stale, of course
    assert stale and not {s for s in stale if s.startswith(("prepare", "pretrain"))}, stale

    # Same weights as one uninterrupted run (dvc repro in another clone, local checkpoints).
    ref = tmp_path / "reference"
    sh(["git", "clone", "-q", str(project), str(ref)], tmp_path)
    shutil.copy(project / "params.yaml", ref / "params.yaml")
    sh([*DVC, "repro", "pretrain@none-0"], ref)
    model = "artifacts/backbones/none/seed0/model.pt"
    got = torch.load(project / model, weights_only=True)["state_dict"]
    want = torch.load(ref / model, weights_only=True)["state_dict"]
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_worker_refuses_a_stage_whose_input_it_cannot_pull(tmp_path, monkeypatch):
    (tmp_path / "remote").mkdir()
    project = make_pool_project(tmp_path / "p", pool_params(), tmp_path / "remote")
    sh([*DVC, "repro", "prepare@digits_0to4"], project)  # recorded, never pushed
    entry = DvcRecord(project).entry("prepare@digits_0to4")
    clone = tmp_path / "w"
    sh(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    monkeypatch.chdir(clone)
    commit = sh(["git", "rev-parse", "HEAD"], clone).stdout.strip()
    log = _Log()
    with pytest.raises(MissingObject) as info:
        run_here(clone, "pretrain@none-0", {"prepare@digits_0to4": entry},
                 (project / "params.yaml").read_text(), commit, None, log)  # fmt: skip
    message = str(info.value)
    folder = next(o for o in entry["outs"] if o["path"] == "artifacts/prepared/digits_0to4")
    assert "\n" not in message
    assert "artifacts/prepared/digits_0to4" in message and folder["md5"] in message
    assert "store" in message
    assert not (clone / "artifacts" / "backbones").exists()  # the stage never started
    assert not any("pretrain" in line for line in log.lines if "python" in line)


def test_shared_checkpoints_are_keyed_by_the_run_fingerprint(monkeypatch, tmp_path):
    from pipeline.core import paths

    monkeypatch.delenv(paths.CHECKPOINT_DIR_ENV, raising=False)
    run_id = paths.backbone_id("none", 0)
    assert paths.checkpoints("pretrain", run_id, "ab" * 16) == Path(
        "artifacts/checkpoints/pretrain/none/seed0"
    )
    monkeypatch.setenv(paths.CHECKPOINT_DIR_ENV, str(tmp_path))
    one = paths.checkpoints("pretrain", run_id, "a" * 64)
    other = paths.checkpoints("pretrain", run_id, "b" * 64)
    assert one == tmp_path / "pretrain" / "none" / "seed0" / ("a" * 16)
    assert one != other and one.parent == other.parent


class _Log:
    def __init__(self):
        self.lines: list[str] = []

    def info(self, fmt, *args):
        self.lines.append(fmt % args)

    error = warning = info
