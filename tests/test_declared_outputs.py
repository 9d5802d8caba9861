"""Every file a stage writes is declared: each instance of a small DAG runs in a sandbox, and the
files it created or changed are compared with its ``outs``, ``metrics``, ``plots``, private
folders (checkpoints) and its run folder (the lock). A file written and not declared is one DVC
neither caches nor restores, so a fresh clone's ``dvc pull`` would lack it and a downstream
reader would silently differ; a declared output that is not written breaks ``dvc commit``."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import yaml

from pipeline.__main__ import main
from pipeline.core import paths
from pipeline.core.config import load_config
from pipeline.plan import plan
from pipeline.stages.spec import fill
from tests.conftest import tiny_params

pytestmark = pytest.mark.slow


def _params() -> dict:
    """One variant per training stage kind, and a regularized one: every stage runs once."""
    params = tiny_params()
    params["pretrain"]["run"] = {"variants": ["none", "rep_spectral"], "seeds": [0]}
    params["finetune"]["run"].update(backbones=["none", "simclr"], backbone_seeds=[0])
    params["attack"]["methods"] = ["tangent"]
    return params


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (relative path: mtime and size), ``params.yaml`` aside."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            if rel != "params.yaml":
                st = path.stat()
                found[rel] = (st.st_mtime_ns, st.st_size)
    return found


def _private(inst, dump: dict) -> list[str]:
    """The private folders (checkpoints) the instance's DVC stage declares."""
    module = importlib.import_module(f"pipeline.stages.{inst.stage}")
    (spec,) = [s for s in module.STAGES if s.name == inst.id.split("@")[0]]
    return [fill(t, inst.item, dump) for t in spec.private]


def _covered(path: str, declared: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in declared)


def test_every_file_a_stage_writes_is_declared_and_every_declared_output_is_written(workdir):
    Path("params.yaml").write_text(yaml.safe_dump(_params(), sort_keys=False))
    cfg = load_config("params.yaml", [])
    dump = cfg.model_dump(mode="json")
    instances = plan(cfg)
    stages = {i.stage for i in instances}
    assert {"prepare", "pretrain", "ssl", "finetune", "readout", "attack", "report"} <= stages
    for inst in instances:  # the plan lists upstream instances first
        before = _files(workdir)
        assert main([inst.stage, *inst.cli_args]) == 0, inst.id
        after = _files(workdir)
        written = sorted(p for p, stamp in after.items() if before.get(p) != stamp)
        removed = sorted(set(before) - set(after))
        declared = [*inst.products, *_private(inst, dump), paths.run_dir(inst.id).as_posix()]
        undeclared = [p for p in written + removed if not _covered(p, declared)]
        assert not undeclared, f"{inst.id} wrote undeclared files: {undeclared}"
        missing = [p for p in inst.products if not Path(p).exists()]
        assert not missing, f"{inst.id} did not write declared outputs: {missing}"
