"""Nothing lost, nothing silently wrong: each fault exits 2 with one line naming the key or file,
and leaves everything outside the workspace, and everything already written, as it was.

Fault classes: names that would become paths outside the workspace; a dry run that would write
``params.yaml``; rules checked for values a command does not read; tracebacks instead of one
line; a temporary Prefect server left running after its flow died.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.__main__ import main
from pipeline.core.errors import ConfigError
from tests.conftest import REPO

PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PIPELINE_DEVICE": "cpu"}
OUTSIDE = "outside"  # a sibling of the workspace, holding a file nothing may touch


def default_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["run"]["progress"] = False
    return params


def snapshot(root: Path, skip: str | None = None) -> dict[str, str]:
    """Every folder and file under ``root`` (a file by a digest of its bytes), but ``skip``."""
    return {
        str(p.relative_to(root)): (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        )
        for p in sorted(root.rglob("*"))
        if not (skip and skip in f"/{p.relative_to(root)}/")
    }


# DVC's own scratch folder (its lock, as `dvc status` writes it): not the project's files.
DVC_TMP = "/.dvc/tmp/"


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """``tmp_path/ws`` (the workspace, current directory) with earlier outputs, next to
    ``tmp_path/outside``; the whole of ``tmp_path`` is compared before and after."""
    root = tmp_path / "ws"
    (tmp_path / OUTSIDE).mkdir()
    (tmp_path / OUTSIDE / "keep.txt").write_text("precious\n")
    old = root / "artifacts/backbones/none/seed0/model.pt"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"an earlier model")
    (root / "metrics/pretrain/none/seed0").mkdir(parents=True)
    (root / "metrics/pretrain/none/seed0/summary.json").write_text('{"test_acc": 0.9}\n')
    (root / "params.yaml").write_text(yaml.safe_dump(default_params(), sort_keys=False))
    monkeypatch.chdir(root)
    return root


def write_params(name: str, edit) -> str:
    params = default_params()
    edit(params)
    Path(name).write_text(yaml.safe_dump(params, sort_keys=False))
    return name


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def assert_refused(argv: list[str], fragments: list[str], capsys, tmp_path) -> str:
    """Exit 2, one stderr line holding every fragment, not one byte or folder changed."""
    before = snapshot(tmp_path)
    assert main(argv) == 2
    line = one_error_line(capsys)
    for fragment in fragments:
        assert fragment in line, line
    assert snapshot(tmp_path) == before
    return line


# -- 1. names are identifiers, and nothing is created outside the workspace ---------------------


def _add_variant(name):
    def edit(p):
        p["pretrain"]["variants"][name] = []

    return edit


def _abs_outside(p):
    p["pretrain"]["variants"][str(Path.cwd().parent / OUTSIDE)] = []


def _ssl_variant(p):
    p["ssl"]["variants"]["a/b"] = {"method": "simclr"}


def _target(p):
    p["finetune"]["targets"]["../t"] = p["finetune"]["targets"]["digits_5to9"]


def _regularizer(p):
    p["finetune"]["regularizers"]["x/../../y"] = []


def _dataset(p):
    p["prepare"]["outputs"]["/abs"] = {"source": "digits"}


def _split(p):
    p["prepare"]["outputs"]["digits_0to4"]["splits"] = ["train", "../../../outside"]


NAME_CASES = [
    # (params edit or None, argv, fragments)
    (_abs_outside, ["pretrain", "--variant", "@OUTSIDE", "--seed", "0"], ["pretrain.variants"]),
    (_add_variant("../../../outside"), ["pretrain", "--variant", "../../../outside", "--seed", "0"],
     ["pretrain.variants", "'../../../outside'"]),
    (None, ["pretrain", "--variant", "../../../../../outside/x", "--seed", "0"], ["--variant"]),
    (None, ["pretrain", "--variant", "@OUTSIDE", "--seed", "0"], ["--variant"]),
    (_add_variant(".."), ["plan"], ["pretrain.variants", "'..'"]),
    (_add_variant(".hidden"), ["plan"], ["pretrain.variants", "'.hidden'"]),
    (_add_variant("a..b"), ["plan"], ["pretrain.variants", "'a..b'"]),
    (_ssl_variant, ["ssl", "--variant", "a/b", "--seed", "0"], ["ssl.variants", "'a/b'"]),
    (_target, ["plan"], ["finetune.targets", "'../t'"]),
    (_regularizer, ["plan"], ["finetune.regularizers", "'x/../../y'"]),
    (_dataset, ["prepare", "--dataset", "/abs"], ["prepare.outputs", "'/abs'"]),
    (_split, ["prepare", "--dataset", "digits_0to4"], ["prepare.outputs.digits_0to4.splits"]),
    (None, ["finetune", "--target", "../x", "--backbone", "none", "--backbone_seed", "0",
            "--regularizer", "none", "--seed", "0"], ["--target"]),
    (None, ["attack", "--kind", "../../k", "--target", "digits_5to9", "--backbone", "none",
            "--backbone_seed", "0"], ["--kind"]),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "argv", "fragments"), NAME_CASES)
def test_names_that_would_be_paths_outside_are_refused(ws, tmp_path, capsys, edit, argv, fragments):
    argv = [str(tmp_path / OUTSIDE) if a == "@OUTSIDE" else a for a in argv]
    if edit is not None:
        argv += ["--params", write_params("f.yaml", edit)]
    assert_refused(argv, ["not a valid name", *fragments], capsys, tmp_path)


def test_every_path_a_stage_creates_is_checked_before_anything_exists(ws, tmp_path, monkeypatch):
    from pipeline.__main__ import _check_writes_inside
    from pipeline.core import paths
    from pipeline.stages.spec import StageSpec

    spec = StageSpec(name="s", command="s", matrix={"x": "k"}, outs=("../../escape/{x}.pt",))
    with pytest.raises(ConfigError, match="output '../../escape/a.pt' lies outside"):
        _check_writes_inside(spec, {"x": "a"}, {}, "s@a")
    with pytest.raises(ConfigError, match="run folder"):
        _check_writes_inside(None, {}, {}, "../../../../lock")
    inside = StageSpec(name="s", command="s", private=("/shared/ckpt/s",), outs=("a/{x}",))
    with pytest.raises(ConfigError, match="checkpoint folder '/shared/ckpt/s'"):
        _check_writes_inside(inside, {"x": "a"}, {}, "s@a")
    monkeypatch.setenv(paths.CHECKPOINT_DIR_ENV, "/shared/ckpt")
    _check_writes_inside(inside, {"x": "a"}, {}, "s@a")  # checkpoints may live there
    assert paths.check_inside("artifacts/x/../y", "output") == Path("artifacts/x/../y")
    assert snapshot(tmp_path)["ws/artifacts/backbones/none/seed0/model.pt"]  # untouched


# -- 3. rules apply to what a command runs; the plan checks every instance of the DAG ----------

EPOCHS_5 = ["--set", "pretrain.train.epochs=5"]  # rep_spectral's burn_in is 6
ATTACK = ["attack", "--kind", "readout", "--target", "digits_5to9", "--backbone", "none",
          "--backbone_seed", "0"]  # fmt: skip
FINETUNE = ["finetune", "--target", "digits_5to9", "--backbone", "none", "--backbone_seed", "0",
            "--seed", "0"]  # fmt: skip
ZERO_WIDTH = ["--set", "ssl.model.widths=[0,16,32,64]"]


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["pretrain", "--variant", "rep_spectral", "--seed", "0", *EPOCHS_5],
         ["--set pretrain.train.epochs=5", "pretrain.variants.rep_spectral.0.burn_in"]),
        (["plan", *EPOCHS_5], ["pretrain.variants.rep_spectral_bn.0.burn_in"]),  # one the DAG runs
        ([*ATTACK, "--set", "attack.budgets=[200,2000]", "--set", "attack.max_queries=60"],
         ["--set attack.max_queries=60", "attack.max_queries", "2000"]),
        (["plan", "--set", "attack.max_queries=60"], ["attack.max_queries"]),
        ([*FINETUNE, "--regularizer", "rep_spectral",
          "--set", "finetune.targets.digits_5to9.train.epochs=3"],
         ["finetune.regularizers.rep_spectral.0.burn_in"]),
        (["ssl", "--variant", "simclr", "--seed", "0", *ZERO_WIDTH], ["ssl.model.widths"]),
        (["plan", *ZERO_WIDTH], ["ssl.model.widths"]),
    ],
)  # fmt: skip
def test_rules_for_what_runs_are_errors_naming_the_key(ws, tmp_path, capsys, argv, fragments):
    assert_refused(argv, fragments, capsys, tmp_path)


@pytest.mark.parametrize(
    "argv",
    [
        ["pretrain", "--variant", "none", "--seed", "0", *EPOCHS_5],
        ["pretrain", "--variant", "none", "--seed", "0", *ZERO_WIDTH],
        [
            "plan",
            *EPOCHS_5,
            "--set",
            "pretrain.run.variants=[none, lr]",
            "--set",
            "finetune.run.backbones=[none, lr, simclr]",
        ],
        [
            *FINETUNE,
            "--regularizer",
            "none",
            "--set",
            "finetune.targets.digits_5to9.train.epochs=3",
        ],
        [*ATTACK, "--set", "attack.max_queries=32000"],  # above every budget: fine
    ],
)
def test_values_a_command_does_not_read_do_not_stop_it(ws, capsys, argv):
    assert main([*argv, "--dry-run"]) == 0, capsys.readouterr().err


# -- 4. one line, never a traceback ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["pretrain", "--variant", "none", "--seed", str(10**20)], ["--seed", "0..2**31-1"]),
        ([*FINETUNE[:-2], "--seed", "-1", "--regularizer", "none"], ["--seed"]),
        ([*ATTACK[:-1], "4294967296"], ["--backbone_seed"]),
        (["pretrain", "--variant", "none", "--seed", "0", "--set", "pretrain.model.widths=[0,8,8,8]"],
         ["--set pretrain.model.widths", "pretrain.model.widths"]),
        (["pretrain", "--variant", "none", "--seed", "0", "--set", "pretrain.model.blocks=[1,0,1,1]"],
         ["pretrain.model.blocks"]),
        (["pretrain", "--variant", "none", "--seed", "0",
          "--set", "pretrain.model={arch: mlp, hidden: [0]}"], ["pretrain.model.hidden"]),
        (["plan", "--set", "foo.bar=1"], ["error: --set foo.bar=1: unknown key 'foo'"]),
        (["plan", "--set", "attack.seed=100000000000000000000"], ["attack.seed"]),
        (["prepare", "--dataset", "digits_0to4", "--set",
          "prepare.outputs.digits_0to4.shuffle_seed=-5"], ["shuffle_seed"]),
    ],
)  # fmt: skip
def test_bad_values_are_one_line_not_a_traceback(ws, tmp_path, capsys, argv, fragments):
    assert_refused(argv, fragments, capsys, tmp_path)


def test_yaml_errors_give_file_line_and_column(ws, tmp_path, capsys):
    Path("bad.yaml").write_text("run:\n  device: cpu\n threads: 2\n")
    line = assert_refused(["plan", "--params", "bad.yaml"], ["bad.yaml:3:2"], capsys, tmp_path)
    assert "not valid YAML" in line
    Path("binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    assert_refused(["plan", "--params", "binary.yaml"], ["binary.yaml"], capsys, tmp_path)


def test_a_closed_pipe_ends_plan_quietly(ws):
    """``plan | head -c 10``: the reader is gone before the plan is written."""
    read, write = os.pipe()
    proc = subprocess.Popen(
        [PY, "-m", "pipeline", "plan"], stdout=write, stderr=subprocess.PIPE, env=ENV
    )
    os.close(write)
    os.close(read)  # before the child can write: its write fails for certain
    _, err = proc.communicate(timeout=120)
    assert err.decode() == "" and proc.returncode == 141


# -- 2 and 4. the flow's dry run reads, never writes; a corrupt dvc.lock is one line ------------


def test_an_unreadable_workspace_params_yaml_is_not_a_traceback(ws):
    from pipeline.core.workspace import composed_params

    Path("params.yaml").write_text("run: [unclosed\n")
    Path("other.yaml").write_text(yaml.safe_dump(default_params(), sort_keys=False))
    assert yaml.safe_load(composed_params("other.yaml", [])) == default_params()


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory) -> Path:
    """A DVC project (no git) with this checkout's code whose prepare@digits_0to4 is recorded."""
    from pipeline.dvcyaml import render

    root = tmp_path_factory.mktemp("dvc") / "p"
    root.mkdir()
    shutil.copytree(REPO / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__py*"))
    shutil.copy(REPO / ".dvcignore", root / ".dvcignore")
    (root / "dvc.yaml").write_text(render())
    (root / "params.yaml").write_text(yaml.safe_dump(default_params(), sort_keys=False))
    path = os.pathsep.join([str(Path(PY).parent), os.environ.get("PATH", "")])
    env = {**ENV, "PYTHONPATH": str(root), "PATH": path}
    for cmd in (["init", "--no-scm", "-q"], ["repro", "-q", "prepare@digits_0to4"]):
        subprocess.run([PY, "-m", "dvc", *cmd], cwd=root, env=env, check=True)
    return root


@pytest.fixture
def project(dvc_project, tmp_path, monkeypatch) -> Path:
    root = tmp_path / "p"
    shutil.copytree(dvc_project, root, symlinks=True)
    monkeypatch.chdir(root)
    return root


def _dry_stale(params: str, overrides: list[str]) -> set[str]:
    from flows.transfer import dry_run

    return {i for i, verdict, _ in dry_run(params, overrides) if verdict.startswith("stale")}


@pytest.mark.slow
def test_dry_run_answers_for_another_file_without_writing_params(project):
    other = yaml.safe_load(Path("params.yaml").read_text())
    other["prepare"]["maxcount"] = 500  # read by both prepare stages
    Path("other.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    params, lock = Path("params.yaml").read_bytes(), Path("dvc.lock").read_bytes()
    assert "prepare@digits_0to4" not in _dry_stale("params.yaml", [])
    # DVC saw the other file's value: the recorded prepare is stale under it
    assert "prepare@digits_0to4" in _dry_stale("other.yaml", [])
    assert "prepare@digits_0to4" in _dry_stale("params.yaml", ["prepare.maxcount=7"])
    assert Path("params.yaml").read_bytes() == params and Path("dvc.lock").read_bytes() == lock


@pytest.mark.slow
def _as_from_a_shell() -> None:
    """The child starts with the signals a shell's command gets: none blocked, none ignored.
    A test runner's own state (a signal blocked or ignored by whatever started it, inherited
    across exec) must not decide whether the signal under test arrives."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_mid_dry_run_leaves_params_yaml_byte_identical(project, tmp_path, sig):
    other = yaml.safe_load(Path("params.yaml").read_text())
    other["attack"]["n_samples"] = 3
    Path("other.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    before = snapshot(tmp_path)
    env = {**ENV, "PYTHONPATH": str(REPO), "PIPELINE_TEST_PAUSE": "dry-run"}
    proc = subprocess.Popen(
        [PY, "-m", "flows.transfer", "--dry-run", "--params", "other.yaml"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        preexec_fn=_as_from_a_shell,
    )  # fmt: skip
    try:
        assert proc.stderr.readline().strip() == "paused at dry-run"
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert snapshot(tmp_path) == before  # params.yaml byte-identical, nothing else written


@pytest.mark.slow
@pytest.mark.parametrize(
    "text", ["stages:\n  x: [unclosed\n  - : :\n", "just a string\n", "stages:\n  prepare@a: 5\n"]
)
def test_a_corrupt_dvc_lock_is_one_line(project, tmp_path, capsys, text):
    from flows.transfer import main as flow_main

    Path("dvc.lock").write_text(text)
    before = snapshot(tmp_path, DVC_TMP)
    assert flow_main(["--dry-run"]) == 2
    line = one_error_line(capsys)
    assert "dvc.lock" in line and str(project) not in line, line
    assert snapshot(tmp_path, DVC_TMP) == before


# -- 5. the temporary Prefect server dies with its flow ------------------------------------------

SERVER_SCRIPT = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
from flows.launch import temporary_prefect_server
with temporary_prefect_server(logging.getLogger("t")) as url:
    print("up", url, flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_temporary_server_dies_with_a_killed_flow(tmp_path):
    env = {k: v for k, v in ENV.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
    proc = subprocess.Popen([PY, "-c", SERVER_SCRIPT], stdout=subprocess.PIPE, env=env, text=True)
    server = None
    try:
        for line in proc.stdout:
            if "pid " in line:
                server = int(line.split("pid ")[1].split(")")[0])
            if line.startswith("up "):
                break
        assert server is not None and _alive(server)
        proc.kill()  # SIGKILL: no handler, no atexit, nothing of the flow runs
        proc.wait()
        deadline = time.monotonic() + 30
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(server), "the temporary Prefect server outlived its flow"
    finally:
        proc.kill()
        if server is not None and _alive(server):
            os.kill(server, signal.SIGKILL)


def test_no_temporary_server_when_a_server_is_configured():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.launch import temporary_prefect_server

    configured = temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"})
    with configured, temporary_prefect_server() as url:
        assert url is None


# -- outputs are replaced, never half-deleted; hand edits are never overwritten ------------------


def test_a_shard_rewrite_never_deletes_a_file_the_user_put_in_its_folder(ws, tmp_path, capsys):
    out = ws / "myshards"
    assert main(["shard", "digits", "--out", str(out), "--option", "image_size=8"]) == 0
    capsys.readouterr()
    (out / "notes.txt").write_text("mine\n")
    line = assert_refused(["shard", "digits", "--out", str(out), "--option", "image_size=8"],
                          [str(out), "notes.txt"], capsys, tmp_path)  # fmt: skip
    assert "not part of its shard set" in line


def test_a_shard_meta_without_its_list_of_shards_is_not_replaced(ws, tmp_path, capsys):
    out = ws / "other"
    out.mkdir()
    (out / "meta.json").write_text('{"something": "else"}\n')
    assert_refused(["shard", "digits", "--out", str(out)], [str(out / "meta.json")], capsys,
                   tmp_path)  # fmt: skip


def test_use_params_outside_git_never_overwrites_the_params_file(ws, tmp_path, capsys):
    edited = Path("params.yaml").read_text() + "# a hand edit\n"
    Path("params.yaml").write_text(edited)
    write_params("other.yaml", lambda p: p["attack"].update(n_samples=3))
    line = assert_refused(["use-params", "other.yaml"], ["params.yaml", "not in a git repository"],
                          capsys, tmp_path)  # fmt: skip
    assert "move it aside" in line and Path("params.yaml").read_text() == edited
