"""What the Prefect UI shows of a flow run: a running stage's progress artifact, the DAG's edges,
a report whose figures render, and names that tell runs of the same parameters apart."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import pytest

from flows import publish
from flows import transfer as flow_module
from pipeline.core.config import load_config
from pipeline.plan import plan
from tests.flows.test_one_record import DVC, make_project, sh, small_params

pytestmark = pytest.mark.slow
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _task_runs(flow_run_id) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    with _client() as client:
        return client.read_task_runs(flow_run_filter=this_run)


def _artifacts(key: str) -> list:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with _client() as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )


# -- progress ---------------------------------------------------------------------------------


class _Record:
    """DVC's part, stubbed: the instance always runs its ``dvc.yaml`` command, nothing is
    recorded (this test is about what the task shows while the stage runs)."""

    def __init__(self, root):
        self.root = Path(root)

    def prepare(self, ident):
        inst = next(i for i in plan(load_config("params.yaml")) if i.id == ident)
        return f"python -m pipeline {inst.stage} " + " ".join(inst.cli_args)

    def commit(self, ident):
        pass


def test_a_running_stage_updates_its_progress_artifact(workdir, prefect_harness, monkeypatch):
    from prefect import artifacts

    from flows import progress as flow_progress
    from pipeline.stages import prepare

    prepare.run(load_config("params.yaml"), "digits_0to4")  # the pretraining data
    calls = {"create": 0, "update": 0}

    def counted(name, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(artifacts, "create_progress_artifact",
                        counted("create", artifacts.create_progress_artifact))  # fmt: skip
    monkeypatch.setattr(artifacts, "update_progress_artifact",
                        counted("update", artifacts.update_progress_artifact))  # fmt: skip
    monkeypatch.setattr(flow_progress, "ARTIFACT_EVERY_S", 0.0)
    monkeypatch.setenv("PIPELINE_PROGRESS_EVERY", "0")  # a line a training step
    monkeypatch.setattr(flow_module, "DvcRecord", _Record)
    state = flow_module.transfer(only=["pretrain@none-0"], save_experiment=False,
                                 return_state=True)  # fmt: skip
    assert state.is_completed(), state.message
    assert calls["create"] == 1 and calls["update"] >= 2

    (run,) = [r for r in _task_runs(state.state_details.flow_run_id) if r.name == "pretrain@none-0"]
    (shown,) = [a for a in _artifacts("progress-pretrain-none-0") if a.task_run_id == run.id]
    assert shown.type == "progress" and float(shown.data) == 100.0
    assert "steps" in shown.description and "epoch=2/2" in shown.description
    # The stage's output reached the log without the progress lines.
    assert Path("metrics/pretrain/none/seed0/summary.json").is_file()


# -- the DAG, the report, the names -------------------------------------------------------------


def _fake_stage(record, inst, devices, log, cpus=None, released=None):
    """Write the instance's outputs (a report with a figure for ``report``) and say it ran."""
    for product in inst.products:
        path = record.root / product
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"acc": 0.5}) if path.suffix == ".json" else "x\n")
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "part").write_text("x\n")
    if inst.stage == "report":
        (record.root / "reports/figures/acc.png").write_bytes(PNG)
        (record.root / "reports/transfer.md").write_text(
            "# Report\n\n![accuracy](figures/acc.png)\n\nsee [the table](results.csv) and "
            "[DVC](https://dvc.org)\n"
        )
    return "ran", "ran (a stand-in)"


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = make_project(tmp_path / "p", small_params())
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(flow_module, "execute_stage", _fake_stage)
    return root


def test_the_ui_draws_the_dag_renders_the_report_and_tells_runs_apart(project, prefect_harness):
    first = flow_module.transfer(return_state=True)
    second = flow_module.transfer(return_state=True)  # the same parameters again
    assert first.is_completed() and second.is_completed(), (first.message, second.message)

    # Every task run waits for exactly its upstream stages (the plan's edges): the graph's edges.
    upstream = {i.id: set(i.upstream) for i in plan(load_config("params.yaml"))}
    runs = _task_runs(first.state_details.flow_run_id)
    names = {r.id: r.name for r in runs}
    assert {r.name for r in runs} == set(upstream)
    for r in runs:
        waits = {names[x.id] for x in r.task_inputs.get("wait_for", [])}
        assert waits == upstream[r.name], r.name

    # The report artifact links nothing the UI cannot open; its figure is the file's bytes.
    (report,) = [a for a in _artifacts(publish.REPORT_KEY)
                 if a.flow_run_id == first.state_details.flow_run_id]  # fmt: skip
    targets = re.findall(r"\]\(([^)\s]+)", report.data)
    assert targets and all(t.startswith(("data:", "https://", "http://")) for t in targets)
    png = next(t for t in targets if t.startswith("data:image/png;base64,"))
    assert base64.b64decode(png.split(",", 1)[1]) == PNG
    assert "the table (`results.csv`)" in report.data

    # Two runs of the same parameters: two names, two DVC experiments, both kept.
    with _client() as client:
        label = [client.read_flow_run(s.state_details.flow_run_id).name for s in (first, second)]
    assert label[0] != label[1] and all(n.startswith("params.yaml · ") for n in label)
    listed = sh([*DVC, "exp", "list", "--name-only"], project).stdout.split()
    assert set(map(publish.experiment_name, label)) <= set(listed), (label, listed)
    shown = json.loads(sh([*DVC, "exp", "show", "--json"], project).stdout)
    saved = {rev["name"] for row in shown for exp in row.get("experiments") or []
             for rev in exp["revs"]}  # fmt: skip
    assert set(map(publish.experiment_name, label)) <= saved


def test_a_taken_experiment_name_gets_a_suffix_never_force(project):
    from tests.flows.test_transfer_flow import _Quiet

    class Log(_Quiet):
        def warning(self, *a):
            raise AssertionError(a)

    for inst in plan(load_config("params.yaml")):
        _fake_stage(flow_module.DvcRecord(project), inst, None, None)
    saved = [publish.save_experiment_as(Log(), "flow-same") for _ in range(2)]
    assert saved == ["flow-same", "flow-same-2"]
    listed = sh([*DVC, "exp", "list", "--name-only"], project).stdout.split()
    assert {"flow-same", "flow-same-2"} <= set(listed)


def test_report_figures_are_embedded_byte_for_byte(tmp_path, monkeypatch):
    """On a real report (the report stage on synthetic metrics, tests/report)."""
    from pipeline.stages import report
    from tests.report.test_report_stage import _cfg, build_tree

    monkeypatch.chdir(tmp_path)
    build_tree(Path("metrics"))
    report.run(_cfg())
    text = Path("reports/transfer.md").read_text()
    relative = re.findall(r"\]\((figures/[^)\s]+)\)", text)
    assert relative, "the report links no figure"
    embedded = publish.embed_links(text, Path("reports"))
    targets = re.findall(r"\]\(([^)\s]+)", embedded)
    assert len(targets) == len(re.findall(r"\]\(", text))
    assert all(t.startswith("data:image/png;base64,") for t in targets)
    for rel, uri in zip(relative, targets, strict=True):
        assert base64.b64decode(uri.split(",", 1)[1]) == Path("reports", rel).read_bytes()


def test_an_experiment_name_is_a_git_ref_component():
    label = "params.yaml finetune.run.seeds=[0,1] · 2025-05-01 03:56:12Z · 6c7eead"
    name = publish.experiment_name(label)
    assert name == "flow-params.yaml-finetune.run.seeds-0-1-2025-05-01-03-56-12Z-6c7eead"
    done = sh(["git", "check-ref-format", f"refs/exps/{name}"], Path.cwd(), check=False)
    assert done.returncode == 0
    assert publish.experiment_name("a..b.lock") == "flow-a.b"


# -- one error, once --------------------------------------------------------------------------


def test_a_stage_user_error_is_one_line_without_a_traceback(tmp_path, prefect_harness):
    import os
    import shutil
    import subprocess

    from prefect.settings import PREFECT_API_URL

    from tests.conftest import REPO

    root = make_project(tmp_path / "p", small_params())
    shutil.copytree(REPO / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(root), "PREFECT_API_URL": PREFECT_API_URL.value()}
    # The plan accepts a class the digits do not have; the prepare stage refuses it (exit 2).
    bad = "prepare.outputs.digits_0to4.options.classes=[0,99]"
    cmd = [sys.executable, "-m", "flows.transfer", "--no-experiment", "--only", "prepare",
           "--set", bad]  # fmt: skip
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out[-3000:]
    assert "Traceback" not in out and "NoneType: None" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: 1 stage instance(s) did not complete: prepare@digits_0to4: digits classes must "
        "be digits 0..9; got 99"
    ], out[-3000:]
    assert out.count("Retry") == 0  # a user error is not retried
    assert out.rstrip().endswith(errors[0])


def test_crashes_are_retried_as_often_as_asked_user_errors_never(prefect_harness, monkeypatch):
    from prefect import flow

    from flows.launch import StageFailed
    from pipeline.plan import StageInstance

    calls: list[int] = []

    def crash(record, inst, devices, log, cpus=None, released=None):
        calls.append(1)
        raise StageFailed(inst.id, int(inst.item["code"]), ["error: x"])

    monkeypatch.setattr(flow_module, "execute_stage", crash)

    @flow
    def attempts(code: int, retries: int) -> int:
        calls.clear()
        inst = StageInstance(id="s", stage="s", item={"code": code})
        options = flow_module.retry_options(retries, 0)
        future = flow_module.run_stage.with_options(**options).submit(".", inst)
        future.wait()
        assert future.state.is_failed() and "error: x" in future.state.message
        return len(calls)

    assert attempts(-9, 2) == 3  # a crash: the first run and two retries
    assert attempts(-9, 0) == 1
    assert attempts(2, 2) == 1  # a user error: never retried
