"""A process imports only what it runs: checked in fresh interpreters (``sys.modules``).

The control plane (the schema, the plan, ``dvc.yaml``, the report, the flow) imports no torch.

Heavy optional libraries cost a stage 1-4 s each at start-up, more than most stages of the
default DAG compute: torchvision (only augmentations and SSL views use it), timm (only the
timm architectures), scikit-learn (the readout), webdataset (writing shards), lightly (SSL),
matplotlib and scipy (the report).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.__main__ import main
from tests.conftest import REPO

HEAVY = ("torch", "torchvision", "timm", "sklearn", "webdataset", "lightly", "matplotlib", "scipy")
# What each stage module may import when it is loaded (its command parsed, nothing run yet).
AT_IMPORT = {
    "prepare": {"torch"},
    "pretrain": {"torch"},
    "finetune": {"torch"},
    "readout": {"torch"},
    "attack": {"torch"},
    "ssl": {"torch"},
    "report": {"matplotlib", "scipy"},  # no torch: it computes with none
}


def _fresh(code: str, cwd=REPO) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_each_stage_module_imports_only_its_libraries():
    # One interpreter, stages in turn: each stage's new heavy modules are checked right after
    # it is imported (a library an earlier stage loaded was checked against that stage).
    code = (
        "import importlib, json, sys\n"
        f"heavy = {HEAVY!r}\n"
        "importlib.import_module('pipeline.__main__')\n"
        "seen, new = set(), {}\n"
        f"for stage in {list(AT_IMPORT)!r}:\n"
        "    importlib.import_module(f'pipeline.stages.{stage}')\n"
        "    now = {m for m in heavy if m in sys.modules}\n"
        "    new[stage], seen = sorted(now - seen), now\n"
        "print(json.dumps(new))\n"
    )
    new = _fresh(code)
    extra = {stage: set(new[stage]) - allowed for stage, allowed in AT_IMPORT.items()}
    assert not any(extra.values()), f"stage modules import more than they need: {extra}"
    assert "torch" in new["prepare"]  # the check sees imports at all


# Modules that plan, declare, check parameters or report; ``pipeline.core`` and
# ``pipeline.report`` are taken whole.
CONTROL_PLANE = (
    "pipeline.__main__",
    "pipeline.plan",
    "pipeline.dvcyaml",
    "pipeline.stages.registry",
    "pipeline.stages.report",
    "flows.transfer",
)


def test_control_plane_imports_no_torch():
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import pipeline.core, pipeline.report\n"
        "names = [m.name for p in (pipeline.core, pipeline.report)\n"
        "         for m in pkgutil.iter_modules(p.__path__, p.__name__ + '.')]\n"
        f"names += {list(CONTROL_PLANE)!r}\n"
        "torch_after = None\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "    if 'torch' in sys.modules and torch_after is None:\n"
        "        torch_after = name\n"
        "print(json.dumps({'names': names, 'torch_after': torch_after}))\n"
    )
    result = _fresh(code)
    assert {"pipeline.core.config", "pipeline.report.stats"} <= set(result["names"])
    assert result["torch_after"] is None, f"importing {result['torch_after']} imports torch"


@pytest.mark.slow
def test_default_pretrain_process_imports_torch_only(workdir):
    """The default small_resnet on digits: a whole pretrain run loads no optional library."""
    assert main(["prepare", "--dataset", "digits_0to4"]) == 0  # in this process: not checked
    code = (
        "import json, runpy, sys\n"
        "sys.argv = ['pipeline', 'pretrain', '--variant', 'none', '--seed', '0']\n"
        "try:\n"
        "    runpy.run_module('pipeline', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    assert _fresh(code, cwd=workdir) == ["torch"]
    assert (workdir / "artifacts/backbones/none/seed0/model.pt").is_file()
