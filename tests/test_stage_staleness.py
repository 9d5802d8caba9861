"""A stage is stale only when code it runs changes, as ``dvc status`` itself reports it.

A copy of the repository (its tracked files as they are in the working tree, ``git init``-ed,
DVC as committed) gets a placeholder for every stage output and ``dvc commit``, so ``dvc.lock``
records every dependency as it is. After that, a stage that ``dvc status`` reports is one whose
*dependencies* changed. One finetuning seed instead of three keeps it quick; every stage kind is
still there. Stages downstream of a stale one run again once it has (their inputs change then).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None, reason="needs git"),
]


def _dvc(root: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _placeholder_outputs(root: Path) -> list[str]:
    """A file (or a folder holding one) at every output of every stage of dvc.yaml."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = [s for s in repo.index.stages if s.dvcfile.path.endswith("dvc.yaml")]
        names = [s.name for s in stages]
        for stage in stages:
            for out in stage.outs:
                path = root / out.def_path
                if path.suffix:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(f"placeholder for {stage.name}\n")
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "placeholder").write_text(f"{stage.name}\n")
    return names


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():  # a file deleted in the working tree is gone here too
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["finetune"]["run"]["seeds"] = params["finetune"]["run"]["seeds"][:1]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    names = _placeholder_outputs(root)
    _dvc(root, "commit", "--force", "--quiet", "dvc.yaml")
    assert _stale(root) == set()
    return root, names


def _stale(root: Path) -> set[str]:
    """Stages ``dvc status`` reports; each must be reported for changed dependencies only."""
    status = json.loads(_dvc(root, "status", "--json", "dvc.yaml") or "{}")
    for name, changes in status.items():
        kinds = {k for change in changes for k in (change if isinstance(change, dict) else [])}
        assert kinds == {"changed deps"}, (name, changes)
    return set(status)


@contextmanager
def _edited(root: Path, path: str, old: str, new: str):
    file = root / path
    text = file.read_text()
    assert old in text, f"{path} no longer holds {old!r}: pick another edit"
    file.write_text(text.replace(old, new, 1))
    try:
        yield
    finally:
        file.write_text(text)


def test_editing_report_code_makes_only_report_stale(committed):
    root, _ = committed
    with _edited(root, "pipeline/report/tables.py", '"""', '"""Edited. '):
        assert _stale(root) == {"report"}
    assert _stale(root) == set()


def test_editing_a_regularizer_makes_training_stale_and_not_prepare(committed):
    root, names = committed
    training = {n for n in names if n.split("@")[0] in ("pretrain", "ssl", "finetune")}
    assert any(n.startswith("pretrain@") for n in training)
    with _edited(root, "pipeline/regularizers/bss.py", "def bss_penalty(", "def  bss_penalty("):
        stale = _stale(root)
    assert stale == training
    assert not any(n.startswith("prepare") for n in stale)
    # What follows the retrained models (readout, attacks, report) depends on them.
    from pipeline.core.config import load_config
    from pipeline.plan import plan

    instances = plan(load_config(root / "params.yaml"))
    downstream, grew = set(stale), True
    while grew:
        more = {i.id for i in instances if set(i.upstream) & downstream} - downstream
        downstream |= more
        grew = bool(more)
    assert {n for n in names if n.split("@")[0] in ("readout", "attack_readout", "report")} <= (
        downstream
    )
    assert {n for n in names if n.startswith("attack_finetune@")} <= downstream


def test_editing_cli_help_run_lock_or_registry_makes_nothing_stale(committed):
    root, _ = committed
    edits = [
        ("pipeline/core/cli.py", "override a parameter", "override one parameter"),
        ("pipeline/stages/registry.py", "a pretrained backbone", "a pre-trained backbone"),
        ("pipeline/__main__.py", "usage: python -m pipeline", "usage:  python -m pipeline"),
        ("pipeline/core/runlock.py", '"""One process', '"""Exactly one process'),
    ]
    with (
        _edited(root, *edits[0]),
        _edited(root, *edits[1]),
        _edited(root, *edits[2]),
        _edited(root, *edits[3]),
    ):
        assert _stale(root) == set()
