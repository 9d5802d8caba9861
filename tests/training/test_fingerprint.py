"""A run's fingerprint is the content of everything it reads (issue: trust on resume).

Each change below must give another fingerprint, so a finished checkpoint of the old inputs is
never resumed: the prepared shards' contents with ``meta.json`` unchanged, a raw data file, and
one line of regularizer code. The end-to-end test is the reported repro: a new split seed for
the prepared data re-trains pretraining instead of resuming the old run.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from pipeline.__main__ import main
from pipeline.core.config import load_config
from pipeline.stages import pretrain
from pipeline.training import fingerprint
from tests.conftest import REPO, tiny_params


def _fp(cfg, variant: str = "none") -> str:
    return fingerprint.run_fingerprint(pretrain.STAGES[0], {"variant": variant, "seed": 0}, cfg)


def _prepare(workdir: Path) -> None:
    assert main(["prepare", "--dataset", "digits_0to4"]) == 0


def test_shard_contents_change_with_meta_unchanged(workdir):
    _prepare(workdir)
    cfg = load_config("params.yaml")
    before = _fp(cfg)
    shard = sorted((workdir / "artifacts/prepared/digits_0to4/train").glob("*.tar"))[0]
    meta = (shard.parent / "meta.json").read_bytes()
    # Rewrite the shard with one member's bytes flipped; meta.json stays byte-identical.
    members = []
    with tarfile.open(shard) as tar:
        for m in tar.getmembers():
            members.append((m, tar.extractfile(m).read()))
    m0, data0 = members[0]
    members[0] = (m0, bytes([data0[0] ^ 1]) + data0[1:])
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data))
    assert (shard.parent / "meta.json").read_bytes() == meta
    assert _fp(cfg) != before


def test_raw_file_change(workdir):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["pretrain"]["data"].update(source="image_folder", root="data/mine")
    Path("params.yaml").write_text(yaml.safe_dump(params))
    raw = workdir / "data/mine/train/a"
    raw.mkdir(parents=True)
    (raw / "x.png").write_bytes(b"one")
    cfg = load_config("params.yaml")
    before = _fp(cfg)
    (raw / "x.png").write_bytes(b"two")
    assert _fp(cfg) != before


def test_regularizer_code_change(workdir, tmp_path, monkeypatch):
    code = tmp_path / "code"
    shutil.copytree(
        REPO / "pipeline", code / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / ".dvcignore", code / ".dvcignore")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=code, check=True)
    monkeypatch.setattr(fingerprint, "CODE_ROOT", code)
    cfg = load_config("params.yaml")
    before = _fp(cfg)
    source = code / "pipeline/regularizers/rep_spectral.py"
    source.write_text(source.read_text() + "\n# a one-line edit\n")
    assert _fp(cfg) != before
    # Code the stage does not run (the report, the CLI's help) leaves its checkpoints valid.
    edited = _fp(cfg)
    for other in ("pipeline/report/tables.py", "pipeline/core/cli.py"):
        path = code / other
        path.write_text(path.read_text() + "\n# not run by pretrain\n")
    assert _fp(cfg) == edited
    # Byte-code is not read by the stage: DVC's ignore rules leave it out here too.
    cache = code / "pipeline/regularizers/__pycache__"
    cache.mkdir()
    after = _fp(cfg)
    (cache / "x.cpython-311.pyc").write_bytes(b"\0")
    assert _fp(cfg) == after


def test_fingerprint_hashes_the_dvc_yaml_deps_and_imports_no_stage_code():
    from pipeline.core.codedeps import module_files

    spec = pretrain.STAGES[0]
    cfg = load_config(REPO / "params.yaml")
    declared = spec.contract({"variant": "none", "seed": 0}, cfg.model_dump(mode="json"))
    assert declared.deps[: len(spec.code_deps)] == spec.code_deps
    assert "pipeline/regularizers" in spec.code_deps
    assert not [f for f in module_files(["pipeline.training.fingerprint"]) if "/stages/" in f]


@pytest.mark.slow
def test_new_prepared_data_retrains_instead_of_resuming(workdir, caplog):
    params = tiny_params()
    params["pretrain"]["train"]["epochs"] = 1
    params["pretrain"]["run"] = {"variants": ["none"], "seeds": [0]}
    params["pretrain"]["variants"] = {"none": []}
    params["finetune"]["run"]["backbones"] = ["none"]
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _prepare(workdir)
    assert main(["pretrain", "--variant", "none", "--seed", "0"]) == 0
    first = (workdir / "artifacts/backbones/none/seed0/model.pt").read_bytes()
    params["prepare"]["outputs"]["digits_0to4"]["options"]["split_seed"] = 2
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _prepare(workdir)
    caplog.clear()
    assert main(["pretrain", "--variant", "none", "--seed", "0"]) == 0
    assert "resumed" not in caplog.text
    assert (workdir / "artifacts/backbones/none/seed0/model.pt").read_bytes() != first
