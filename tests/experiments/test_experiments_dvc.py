"""``experiments/dvc.yaml`` and ``experiments/params.yaml`` agree with the code and the main DAG.

``experiments/`` is a DVC sub-project (``cd experiments && dvc repro``): its stages read the
main DAG's models as files, so the main DAG must have been reproduced first.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import load_config
from pipeline.experiments.__main__ import COMMANDS, main
from pipeline.experiments.config import load_experiments_config
from tests.conftest import REPO

DVC_FILE = REPO / "experiments" / "dvc.yaml"
PARAMS = REPO / "experiments" / "params.yaml"


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load(DVC_FILE.read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in stages.items()}


def _command(cmd: str) -> str:
    argv = shlex.split(cmd.split("&&", 1)[1])
    assert argv[:3] == ["python", "-m", "pipeline.experiments"], cmd
    return argv[3]


def _repo_path(dep: str) -> str:
    assert dep.startswith("../"), f"paths in experiments/dvc.yaml are relative to it: {dep}"
    return dep[3:]


def test_params_validate_and_match_the_main_dag():
    cfg = load_experiments_config(PARAMS)
    main_cfg = load_config(REPO / "params.yaml")
    assert set(cfg.diagnostics.backbones) <= set(main_cfg.backbone_names())
    assert set(cfg.diagnostics.backbones) <= set(main_cfg.finetune.run.backbones)
    target = main_cfg.finetune.targets[cfg.diagnostics.target]
    assert cfg.diagnostics.image_size == target.data.image_size
    assert cfg.diagnostics.finetune_regularizer in main_cfg.finetune.run.regularizers
    assert cfg.diagnostics.finetune_seed in main_cfg.finetune.run.seeds


def test_every_command_is_a_stage_and_outputs_match_the_params():
    cfg = load_experiments_config(PARAMS)
    stages = _stages()
    assert {_command(s["cmd"]) for s in stages.values()} == set(COMMANDS)
    outs = {name: [_repo_path(next(iter(o)) if isinstance(o, dict) else o) for o in s["outs"]]
            for name, s in stages.items()}  # fmt: skip
    assert outs["xor"] == [cfg.xor.out]
    assert outs["digits_mlp"] == [cfg.digits_mlp.out]
    assert outs["strength_sweep"] == [cfg.strength_sweep.out]
    assert outs["diagnostics"] == [f"{cfg.diagnostics.out}/${{item}}"]
    assert cfg.summary.out in outs["summary"]
    assert all(o.startswith("reports/papers") for paths in outs.values() for o in paths)


def _module_file(name: str) -> Path | None:
    base = REPO / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _pipeline_imports(path: Path) -> set[str]:
    """Every ``pipeline.*`` module named by an import statement anywhere in the file.

    Static, so it also sees imports inside functions (which a fresh interpreter would miss) and
    costs no interpreter start-up. ``from pkg import name`` counts ``pkg.name`` if it is a module.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "pipeline"}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "pipeline"
        ):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if _module_file(f"{node.module}.{a.name}")}  # fmt: skip
    return found


def _imported(command: str) -> list[str]:
    """Files of the pipeline modules a command loads: its module, the CLI, and their imports."""
    others = {f"pipeline.experiments.{c}" for c in COMMANDS if c != command}
    todo, seen = ["pipeline.experiments.__main__", f"pipeline.experiments.{command}"], set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        parents = [".".join(parts[:i]) for i in range(1, len(parts))]
        for module in [*parents, name]:
            if module in seen or module in others or _module_file(module) is None:
                continue
            seen.add(module)
            todo += sorted(_pipeline_imports(_module_file(module)))
    return sorted(str(_module_file(m).relative_to(REPO)) for m in seen)


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_code_deps_cover_every_imported_module(stage):
    spec = _stages()[stage]
    deps = [_repo_path(d) for d in spec["deps"]]
    uncovered = [
        f for f in _imported(_command(spec["cmd"]))
        if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)
    ]  # fmt: skip
    assert not uncovered, f"{stage} imports code its deps do not cover: {uncovered}"
    imported = _imported(_command(spec["cmd"]))
    code = [d for d in deps if d.startswith("pipeline")]
    unused = [d for d in code if not any(f == d or f.startswith(d + "/") for f in imported)]
    assert not unused, f"{stage} depends on code it never imports (needless re-runs): {unused}"


def test_dvc_resolves_the_sub_project_and_reads_the_main_dag_outputs():
    """``experiments/`` is its own DVC project: stages resolve there, inputs are main-DAG files."""
    pytest.importorskip("dvc")
    from dvc.repo import Repo

    cfg = load_experiments_config(PARAMS)
    with Repo(str(REPO / "experiments")) as repo:
        graph = repo.index.graph
        by_name = {s.name: s for s in graph.nodes}
        expected = {"xor", "digits_mlp", "strength_sweep", "summary"}
        expected |= {f"diagnostics@{b}" for b in cfg.diagnostics.backbones}
        assert set(by_name) == expected
        first = cfg.diagnostics.backbones[0]
        deps = {Path(d.fs_path).resolve() for d in by_name[f"diagnostics@{first}"].deps}
        assert (
            REPO
            / "artifacts"
            / "backbones"
            / first
            / f"seed{cfg.diagnostics.backbone_seed}"
            / "model.pt"
        ).resolve() in deps
        assert any("finetune" in p.parts for p in deps)
        upstream = {s.name for s in graph.successors(by_name["summary"])}
    assert expected - {"summary"} <= upstream


def test_cli_summary_without_inputs_and_a_bad_parameter(tmp_path, capsys):
    params = yaml.safe_load(PARAMS.read_text())
    params["xor"]["out"] = str(tmp_path / "xor")
    params["digits_mlp"]["out"] = str(tmp_path / "digits")
    params["strength_sweep"]["out"] = str(tmp_path / "sweep")
    params["diagnostics"]["out"] = str(tmp_path / "diag")
    params["summary"]["out"] = str(tmp_path / "summary.md")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    assert main(["summary", "--params", str(path)]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert "**not measured**" in text and "MNIST is replaced" in text
    assert main(["xor", "--params", str(path), "--set", "xor.lr=-1"]) == 2
    assert "xor.lr" in capsys.readouterr().err
