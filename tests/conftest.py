"""Shared fixtures: a tiny experiment (digits at 8 px, a two-stage ResNet) in a temp directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(min(2, os.cpu_count() or 1))


def tiny_params() -> dict:
    """The default params.yaml shrunk to seconds: same structure, tiny sizes."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["run"]["progress"] = False
    for out in params["prepare"]["outputs"].values():
        out["options"]["image_size"] = 8
    pre = params["pretrain"]
    pre["data"]["image_size"] = 8
    pre["model"] = {"arch": "small_resnet", "widths": [4, 4, 8, 8], "blocks": [1, 1, 1, 1]}
    pre["train"].update(epochs=2, batch_size=32, checkpoint_every=5)
    for regs in pre["variants"].values():
        for r in regs:
            r["burn_in"] = 1
    for target in params["finetune"]["targets"].values():
        target["data"]["image_size"] = 8
        target["train"].update(epochs=2, batch_size=32, checkpoint_every=5)
    # Every supervised variant kind the code has (the default runs fewer), one pretraining run
    # each; pairing tests add seeds.
    pre["run"] = {"variants": ["none", "rep_spectral", "rep_spectral_bn", "lr"], "seeds": [0]}
    params["finetune"]["run"].update(backbones=["none", "rep_spectral"], backbone_seeds=[0])
    # both attacks (the default runs the declared primary only), so both stay exercised
    params["attack"].update(n_samples=4, iterations=2, max_probes=200, methods=["tangent", "hsja"])
    if "ssl" in params:
        params["ssl"]["data"]["image_size"] = 8
        params["ssl"]["model"] = pre["model"]
        params["ssl"]["train"].update(epochs=1, batch_size=32, checkpoint_every=5)
        params["ssl"]["run"] = {"variants": params["ssl"]["run"]["variants"][:1], "seeds": [0]}
    return params


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A temp working directory holding a tiny params.yaml; stages write relative to it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    return tmp_path


@pytest.fixture(scope="module")
def prepared_tree(tmp_path_factory):
    """A work directory with both digit datasets prepared (tiny params), shared by a module."""
    from pipeline.__main__ import main

    root = tmp_path_factory.mktemp("prepared")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["prepare", "--dataset", "digits_0to4"]) == 0
        assert main(["prepare", "--dataset", "digits_5to9"]) == 0
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def work(prepared_tree, tmp_path, monkeypatch):
    """A private copy of ``prepared_tree``, the current directory for the test."""
    root = tmp_path / "w"
    shutil.copytree(prepared_tree, root)
    monkeypatch.chdir(root)
    return root
