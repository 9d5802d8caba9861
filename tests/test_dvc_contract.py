"""``dvc.yaml`` is generated from the declarations and says what each stage reads and writes.

DVC itself resolves the matrix stages here, so interpolation mistakes are caught too. Code
dependencies are derived from the source (:mod:`pipeline.core.codedeps`); a second, independent
check imports each stage in a fresh interpreter and requires every ``pipeline`` module it loads
to be covered, so a code change re-runs the stages it can affect.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core import codedeps
from pipeline.core.config import load_config
from pipeline.dvcyaml import render
from pipeline.stages.registry import COMMANDS, stage_module, stage_specs
from pipeline.stages.spec import contract
from tests.conftest import REPO

pytest.importorskip("dvc")


def _resolved_stages():
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        # The paper-reproduction pipeline (experiments/dvc.yaml) has its own CLI and checks.
        stages = [
            s
            for s in repo.index.stages
            if getattr(s, "cmd", None) and Path(s.dvcfile.path).resolve() == REPO / "dvc.yaml"
        ]
        out = []
        for s in stages:
            params, deps = [], []
            for d in s.deps:
                if hasattr(d, "params"):
                    params += list(d.params)
                else:
                    deps.append(d.def_path)
            kinds = {"outs": [], "persist": [], "metrics": [], "plots": []}  # persist: none
            for o in s.outs:
                kind = (
                    "metrics"
                    if o.metric
                    else "plots"
                    if o.plot
                    else "persist"
                    if o.persist
                    else "outs"
                )
                kinds[kind].append(o.def_path)
            out.append((s.name, s.cmd, params, deps, kinds))
        return out


RESOLVED = _resolved_stages()


def _stage_and_item(cmd: str):
    """The stage command and its item, read back from the command DVC resolved."""
    argv = shlex.split(cmd)
    assert argv[:3] == ["python", "-m", "pipeline"], cmd
    command, rest = argv[3], argv[4:]
    module = stage_module(command)
    types = {a.name: a.type for a in module.ARGS}
    item = {a.name: None for a in module.ARGS}
    for key, value in zip(rest[::2], rest[1::2], strict=True):
        item[key.removeprefix("--")] = types[key.removeprefix("--")](value)
    return command, item


def test_every_stage_kind_is_in_the_dag():
    kinds = {_stage_and_item(cmd)[0] for _, cmd, *_ in RESOLVED}
    ssl = load_config(REPO / "params.yaml").ssl
    expected = set(COMMANDS) - ({"ssl"} if not (ssl and ssl.run.variants) else set())
    assert kinds == expected


@pytest.mark.parametrize(
    ("name", "cmd", "params", "deps", "outs"), RESOLVED, ids=[r[0] for r in RESOLVED]
)
def test_dvc_stage_matches_contract(name, cmd, params, deps, outs):
    """What DVC resolved from the generated dvc.yaml is what the declarations say."""
    dump = load_config(REPO / "params.yaml").model_dump(mode="json")
    command, item = _stage_and_item(cmd)
    spec = next(s for s in stage_module(command).STAGES if s.name == name.split("@")[0])
    declared = contract(spec, item, dump)
    assert sorted(params) == sorted(declared.params), name
    assert sorted(deps) == sorted(declared.deps), name
    assert sorted(outs["outs"]) == sorted(declared.outs), name
    assert outs["persist"] == [], name  # checkpoints are private, so DVC's run-cache works
    assert sorted(outs["metrics"]) == sorted(declared.metrics), name
    assert sorted(outs["plots"]) == sorted(declared.plots), name


def test_dvc_yaml_is_generated_from_the_declarations():
    assert (REPO / "dvc.yaml").read_text() == render(), "run `python -m pipeline dvc-yaml`"


# One interpreter imports the heavy libraries once, then forks a child per stage that imports
# the stage module and the config schema the CLI loads for it, and reports the ``pipeline``
# modules it then holds (import time only: imports inside functions are not seen here).
_MEASURE = r"""
import importlib, json, os, sys
for lib in ("torch", "torchvision", "timm", "numpy", "scipy", "sklearn", "webdataset",
            "pydantic", "yaml", "PIL", "matplotlib", "threadpoolctl"):
    try:
        importlib.import_module(lib)
    except ImportError:
        pass
assert not any(n.split(".")[0] == "pipeline" for n in sys.modules)
found = {}
for stage in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        importlib.import_module("pipeline.core.config")
        importlib.import_module(f"pipeline.stages.{stage}")
        files = [m.__file__ for n, m in list(sys.modules.items())
                 if n.split(".")[0] == "pipeline" and getattr(m, "__file__", None)]
        os.write(w, json.dumps(files).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as pipe:
        found[stage] = json.loads(pipe.read())
    os.waitpid(pid, 0)
print(json.dumps(found))
"""
STAGE_COMMANDS = sorted({_stage_and_item(r[1])[0] for r in RESOLVED})


@pytest.fixture(scope="module")
def imported_at_start():
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, *STAGE_COMMANDS],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        stage: sorted(str(Path(f).resolve().relative_to(REPO)) for f in files)
        for stage, files in json.loads(out.stdout).items()
    }


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", STAGE_COMMANDS)
def test_code_deps_cover_every_imported_module(stage, imported_at_start):
    deps = next(d for _, cmd, _, d, _ in RESOLVED if _stage_and_item(cmd)[0] == stage)
    uncovered = [
        f
        for f in imported_at_start[stage]
        if not _covered(f, deps) and not codedeps.is_exempt(REPO / f)
    ]
    assert not uncovered, f"{stage} imports code its dvc.yaml deps do not cover: {uncovered}"


def test_code_deps_leave_out_the_runner():
    """The CLI entry, its parsing and help, the run lock, the launcher, the stage registry,
    the progress display and the dependency derivation itself are no stage's dependency."""
    runner = [
        "pipeline/__main__.py",
        "pipeline/core/cli.py",
        "pipeline/core/progress.py",
        "pipeline/core/runlock.py",
        "pipeline/core/launch.py",
        "pipeline/core/workspace.py",
        "pipeline/core/codedeps.py",
        "pipeline/stages/registry.py",
    ]
    marked = [
        str(f.relative_to(REPO))
        for f in sorted((REPO / "pipeline").rglob("*.py"))
        if codedeps.is_exempt(f)
    ]
    assert set(marked) <= set(runner)
    for spec in stage_specs():
        hit = [f for f in runner if _covered(f, spec.code_deps)]
        assert not hit, f"{spec.name} depends on runner code: {hit}"
        # and on the config schema the runner validates before run() (defaults shape results)
        assert _covered("pipeline/core/config.py", spec.code_deps)


def test_code_deps_are_sorted_and_each_stage_covers_its_own_module():
    for spec in stage_specs():
        deps = spec.code_deps
        assert deps == sorted(deps) and len(set(deps)) == len(deps)
        assert _covered(f"pipeline/stages/{spec.command}.py", deps)
        assert all((REPO / d).exists() for d in deps)


def test_only_training_stages_depend_on_regularizers_and_only_report_on_report_code():
    by_name = {spec.name: spec.code_deps for spec in stage_specs()}
    reg = "pipeline/regularizers/rep_spectral.py"
    assert {n for n, d in by_name.items() if _covered(reg, d)} == {"pretrain", "ssl", "finetune"}
    tables = "pipeline/report/tables.py"
    assert {n for n, d in by_name.items() if _covered(tables, d)} == {"report"}
