"""``dvc.yaml`` declares exactly what each stage reads and writes (its ``contract``).

DVC itself resolves the matrix stages here, so interpolation mistakes are caught too; a second
check imports each stage in a fresh interpreter and requires every ``pipeline`` module it
loads to be covered by a code dependency, so a code change re-runs the stages it can affect.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.stages.registry import COMMANDS, stage_module
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


def _imported_files(stage: str) -> list[str]:
    code = (
        "import sys, json, importlib; importlib.import_module('pipeline.__main__');"
        f"importlib.import_module('pipeline.stages.{stage}');"
        "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items()"
        " if n.split('.')[0] == 'pipeline' and getattr(m, '__file__', None))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return [str(Path(f).resolve().relative_to(REPO)) for f in json.loads(out.stdout)]


@pytest.mark.parametrize("stage", sorted({_stage_and_item(r[1])[0] for r in RESOLVED}))
def test_code_deps_cover_every_imported_module(stage):
    deps = next(d for _, cmd, _, d, _ in RESOLVED if _stage_and_item(cmd)[0] == stage)
    uncovered = [
        f
        for f in _imported_files(stage)
        if f != "pipeline/__init__.py"
        and not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)
        and not f.startswith("pipeline/stages/__init__")
    ]
    assert not uncovered, f"{stage} imports code its dvc.yaml deps do not cover: {uncovered}"
