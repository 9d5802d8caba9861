"""Bad input exits with status 2 and one line, before any work, leaving existing outputs alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.__main__ import main


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1
    return err[-1]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["pretrain", "--variant", "ghost", "--seed", "0"], "allowed: none, rep_spectral"),
        (
            ["pretrain", "--variant", "none", "--seed", "0", "--set", "pretrain.model.arch=vgg16"],
            "resnet50",
        ),
        (
            ["pretrain", "--variant", "none", "--seed", "0", "--set", "pretrain.train.lr=1"],
            "unknown key 'pretrain.train.lr'",
        ),
        (
            [
                "finetune",
                "--target",
                "mars",
                "--backbone",
                "none",
                "--backbone_seed",
                "0",
                "--regularizer",
                "none",
                "--seed",
                "0",
            ],
            "finetune.targets",
        ),
        (
            [
                "finetune",
                "--target",
                "digits_5to9",
                "--backbone",
                "none",
                "--backbone_seed",
                "0",
                "--regularizer",
                "dropout",
                "--seed",
                "0",
            ],
            "allowed: none, rep_spectral, ll_spectral, bss",
        ),
        (
            [
                "attack",
                "--kind",
                "sideways",
                "--target",
                "digits_5to9",
                "--backbone",
                "none",
                "--backbone_seed",
                "0",
            ],
            "allowed: finetune, readout",
        ),
        (
            ["prepare", "--dataset", "digits_0to4", "--params", "missing.yaml"],
            "parameter file not found",
        ),
    ],
)
def test_bad_parameters_exit_2_with_one_line(workdir, capsys, argv, fragment):
    assert main(argv) == 2
    line = _error(capsys)
    assert line.startswith("error: ") and fragment in line, line


def test_missing_dataset_says_where_and_what_layout(workdir, capsys):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["prepare"]["outputs"]["cifar10"] = {"source": "cifar10"}
    params["prepare"]["raw"] = ["cifar10"]
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert main(["prepare", "--dataset", "cifar10"]) == 2
    line = _error(capsys)
    assert "data/cifar10" in line and "data_batch" in line, line
    assert not Path("artifacts/prepared/cifar10").exists()


def test_pretrain_before_prepare_names_the_missing_shards(workdir, capsys):
    assert main(["pretrain", "--variant", "none", "--seed", "0"]) == 2
    line = _error(capsys)
    assert "artifacts/prepared/digits_0to4/train" in line and "prepare" in line, line


def test_bad_run_leaves_existing_outputs_untouched(workdir, capsys):
    assert main(["prepare", "--dataset", "digits_0to4"]) == 0
    meta = Path("artifacts/prepared/digits_0to4/train/meta.json")
    before = meta.read_bytes()
    assert main(["prepare", "--dataset", "digits_0to4", "--set", "prepare.maxcount=0"]) == 2
    assert meta.read_bytes() == before
