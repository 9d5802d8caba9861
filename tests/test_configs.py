"""The experiment parameter files in configs/ and the stage plan built from a parameter file.

Every file validates against the schema and carries the papers' settings for the experiment it
runs (epochs, learning rates, seeds, GPUs: ``TARGETS`` and the tests below); ``plan`` lists the stage instances without training, and on the default params.yaml it
names exactly the stages and edges DVC resolves from dvc.yaml.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.__main__ import main as cli_main
from pipeline.core.config import load_config, read_params, validate
from pipeline.plan import plan, plan_main
from tests.conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
TARGETS = {  # file: (target, epochs, lr_backbone, lr_head, finetuning seeds per pretraining seed)
    "transfer-cifar10.yaml": ("cifar10", 50, 0.002, 0.01, 1),
    "transfer-stanford-dogs.yaml": ("stanford_dogs", 50, 0.001, 0.005, 1),
    "transfer-flowers102.yaml": ("flowers102", 1000, 0.001, 0.005, 1),
    "transfer-mit-indoor.yaml": ("mit_indoor", 100, 0.002, 0.01, 1),
}
PRETRAIN_SEEDS = [0, 1, 2, 3, 4]  # imagenet-resnet50.yaml: the unit of replication


def test_there_is_a_config_for_every_experiment_row():
    names = {p.name for p in CONFIGS}
    assert {"imagenet-resnet50.yaml", "new-target-example.yaml", *TARGETS} <= names
    assert {"ssl-simclr-cifar10.yaml", "ssl-barlow-twins-cifar10.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_validates_and_plans_without_training(path, capsys):
    cfg = validate(read_params(path), source=str(path))
    instances = plan(cfg)
    assert instances[-1].id == "report"
    assert plan_main(["--params", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{len(instances)} stage instances" in out
    for inst in instances:
        assert inst.id in out
    # Every raw dataset is read from data/<name>, every DAG target from its prepared shards.
    for name in cfg.prepare.raw:
        assert cfg.prepare.outputs[name].root == f"data/{name}"
    for target in cfg.finetune.run.targets:
        assert cfg.finetune.targets[target].data.root == f"artifacts/prepared/{target}"


def test_imagenet_pretraining_matches_the_paper():
    cfg = load_config(REPO / "configs/imagenet-resnet50.yaml")
    pre = cfg.pretrain
    assert (pre.data.source, pre.data.root, pre.model.arch) == (
        "shards",
        "artifacts/prepared/imagenet",
        "resnet50",
    )
    # Streamed from shards that prepare writes once, mixed, from the raw class folders.
    assert pre.data.stream and cfg.prepare.raw == ["imagenet"]
    raw = cfg.prepare.outputs["imagenet"]
    assert (raw.source, raw.root, raw.splits) == ("imagenet", "data/imagenet", ["train", "val"])
    assert raw.shuffle_seed is not None
    t = pre.train
    assert (t.epochs, t.batch_size, t.gpus) == (120, 512, 4)
    assert (t.optimizer.lr_backbone, t.optimizer.momentum, t.optimizer.weight_decay) == (
        0.02,
        0.9,
        1e-4,
    )
    assert (t.schedule.kind, t.schedule.step_size, t.schedule.gamma) == ("step", 30, 0.1)
    (rs,) = pre.variants["rep_spectral"]
    assert (rs.name, rs.strength, rs.burn_in, rs.refresh_every) == ("rep_spectral", 1e-3, 80, 160)
    assert pre.run.variants == ["none", "rep_spectral"] and pre.run.seeds == PRETRAIN_SEEDS
    gpus = {i.id: i.gpus for i in plan(cfg)}
    assert {k: v for k, v in gpus.items() if k.startswith("pretrain@")} == {
        f"pretrain@{v}-{s}": 4 for v in ("none", "rep_spectral") for s in PRETRAIN_SEEDS
    }


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_transfer_configs_match_the_paper_and_share_the_backbones(name):
    target, epochs, lr_b, lr_h, seeds = TARGETS[name]
    cfg = load_config(REPO / "configs" / name)
    # The file holds only its target: pretraining comes from imagenet-resnet50.yaml (extends),
    # so DVC and the flow reuse the same two backbones.
    text = (REPO / "configs" / name).read_text()
    assert "extends: transfer-base.yaml" in text and "pretrain:" not in text
    t = cfg.finetune.targets[target]
    assert (t.data.image_size, t.train.batch_size, t.train.epochs) == (224, 64, epochs)
    assert (t.train.optimizer.lr_backbone, t.train.optimizer.lr_head) == (lr_b, lr_h)
    assert t.train.schedule.kind == "cosine" and t.train.schedule.t_max is None
    run = cfg.finetune.run
    assert run.regularizers == ["none", "rep_spectral", "ll_spectral", "bss"]
    assert run.backbones == ["none", "rep_spectral"] and len(run.seeds) == seeds
    # Every pretraining run of each backbone is finetuned: the seeds the report pairs over.
    assert run.backbone_seeds == cfg.pretrain.run.seeds == PRETRAIN_SEEDS
    assert (cfg.attack.n_samples, cfg.attack.iterations) == (500, 40)
    assert cfg.prepare.raw == ["imagenet", target]  # the shared backbones' shards first
    n_finetune = 2 * len(PRETRAIN_SEEDS) * 4 * seeds
    assert sum(i.stage == "finetune" for i in plan(cfg)) == n_finetune


@pytest.mark.parametrize(
    ("name", "method", "batch"),
    [
        ("ssl-simclr-cifar10.yaml", "simclr", 512),
        ("ssl-barlow-twins-cifar10.yaml", "barlow_twins", 1024),
    ],
)
def test_ssl_configs_match_the_public_code(name, method, batch):
    cfg = load_config(REPO / "configs" / name)
    ssl = cfg.ssl
    assert ssl.model.arch == "resnet18_small" and ssl.data.root == "artifacts/prepared/cifar10"
    assert (ssl.train.batch_size, ssl.train.epochs, ssl.train.optimizer.lr_backbone) == (
        batch,
        1000,
        0.01,
    )
    assert {v.method for v in ssl.variants.values()} == {method}
    strengths = sorted(r.strength for v in ssl.variants.values() for r in v.regularizers)
    assert strengths == [0.001, 0.01]
    assert {r.burn_in for v in ssl.variants.values() for r in v.regularizers} == {900}
    stages = {i.stage for i in plan(cfg)}
    assert "ssl" in stages and "finetune" not in stages and "readout" in stages


def test_new_target_template_is_one_file_on_the_shared_base():
    cfg = load_config(REPO / "configs/new-target-example.yaml")
    out = cfg.prepare.outputs["my_dataset"]
    assert (out.source, out.root, cfg.prepare.raw) == (
        "image_folder",
        "data/my_dataset",
        ["imagenet", "my_dataset"],
    )
    assert cfg.pretrain == load_config(REPO / "configs/imagenet-resnet50.yaml").pretrain
    assert cfg.finetune.run.targets == ["my_dataset"]
    ids = [i.id for i in plan(cfg)]
    assert "prepare_raw@my_dataset" in ids and "finetune@my_dataset-rep_spectral-4-none-0" in ids


def test_stage_dry_run_prints_the_contract_without_training(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["finetune", "--params", str(REPO / "configs/transfer-cifar10.yaml"), "--dry-run",
            "--target", "cifar10", "--backbone", "rep_spectral", "--backbone_seed", "4",
            "--regularizer", "bss", "--seed", "0"]  # fmt: skip
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "artifacts/backbones/rep_spectral/seed4/model.pt" in out
    assert "artifacts/finetune/cifar10/rep_spectral/backbone_seed4/bss/seed0/model.pt" in out
    assert not (tmp_path / "artifacts").exists()


def test_plan_cli_is_dispatched_and_rejects_a_bad_override(capsys):
    cmd = [sys.executable, "-m", "pipeline", "plan", "--params", "configs/transfer-cifar10.yaml"]
    ok = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "finetune@cifar10-rep_spectral-4-bss-0" in ok.stdout
    assert "missing input data/cifar10" in ok.stdout
    bad = [
        "plan",
        "--params",
        str(REPO / "configs/transfer-cifar10.yaml"),
        "--set",
        "finetune.run.seeds=[x]",
    ]
    assert cli_main(bad) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "finetune.run.seeds" in err and "\n" not in err.strip()


def _dvc_dag(root) -> dict[str, set[str]]:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        # The transfer DAG of the top-level dvc.yaml (other dvc.yaml files may build on it).
        top = Path(root) / "dvc.yaml"
        stages = [
            s for s in repo.index.stages if getattr(s, "cmd", None) and Path(s.dvcfile.path) == top
        ]
        edges: dict[str, set[str]] = {s.name: set() for s in stages}
        for a, b in repo.index.graph.edges:
            if a in stages and b in stages:  # not data.dvc, not another dvc.yaml
                edges[a.name].add(b.name)
    return edges


def test_plan_of_the_default_params_is_the_dag_dvc_resolves():
    pytest.importorskip("dvc")
    ours = {i.id: set(i.upstream) for i in plan(load_config(REPO / "params.yaml"))}
    assert ours == _dvc_dag(REPO)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_each_config_as_params_yaml_gives_dvc_the_same_dag(path, tmp_path):
    """``cp configs/X.yaml params.yaml && dvc exp run`` runs what the flow and plan run."""
    pytest.importorskip("dvc")
    from dvc.repo import Repo

    Repo.init(str(tmp_path), no_scm=True)
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    # What `python -m pipeline use-params` writes: the file with its extends chain composed.
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(read_params(path), sort_keys=False))
    ours = {i.id: set(i.upstream) for i in plan(load_config(path))}
    assert ours == _dvc_dag(tmp_path)
