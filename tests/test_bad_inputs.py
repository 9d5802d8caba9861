"""Corrupt, foreign or planted inputs: exit 2, one line naming the file or key, nothing changed.

Every loading path (model file, training checkpoint, CIFAR batch) also gets a planted pickle
whose ``__reduce__`` would create a marker file: it must never run.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.__main__ import main
from pipeline.core.config import load_config
from pipeline.core.errors import ArtifactError, ConfigError, DatasetError, RunLockedError
from pipeline.core.io import atomic_write_text
from pipeline.core.runlock import hold_run_lock, stale_temp_files
from pipeline.models.torch_files import from_plain, load_torch_file, to_plain
from pipeline.plan import plan
from pipeline.training.checkpoint import CheckpointStore
from tests.conftest import REPO, tiny_params

ENV = {**os.environ, "PIPELINE_DEVICE": "cpu", "PYTHONPATH": str(REPO)}
SEED0 = ("--backbone_seed", "0")  # the one pretraining seed of tiny_params


class Payload:
    """Unpickling this calls ``os.system`` to create a marker file (if anything unpickles it)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` and a digest of its bytes: 'nothing written or removed'.

    ``artifacts/runs/`` holds the stage instances' lock files, which are not outputs.
    """
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not str(p.relative_to(root)).startswith("artifacts/runs/")
    }


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def _tiny_model_file(path: Path, **changes) -> None:
    """A real pipeline model file, optionally with parts replaced (to make it foreign)."""
    from pipeline.core.config import ModelSpec
    from pipeline.models import build_model, save_model

    spec = ModelSpec(arch="mlp", hidden=[6])
    model = build_model(spec, 1, 5, 8)
    meta = {"model": spec.model_dump(), "in_chans": 1, "image_size": 8, "classes": list("abcde")}
    save_model(model, path, meta)
    if changes:
        payload = torch.load(path, weights_only=True)
        for key, value in changes.items():
            payload[key] = value(payload[key]) if callable(value) else value
        torch.save(payload, path)


def _plant_model(path: Path, kind: str, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "payload":
        torch.save({"format": 1, "meta": Payload(marker), "state_dict": {}}, path)
    elif kind == "raw_pickle":
        path.write_bytes(pickle.dumps(Payload(marker)))
    elif kind == "truncated":
        _tiny_model_file(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    elif kind == "foreign_dict":
        torch.save({"weights": torch.ones(3)}, path)
    elif kind == "foreign_tensor":
        torch.save(torch.ones(3), path)
    elif kind == "wrong_format":
        _tiny_model_file(path, format=99)
    elif kind == "bad_meta":
        _tiny_model_file(path, meta=lambda m: {**m, "model": {"arch": "vgg"}})
    elif kind == "shape_mismatch":
        _tiny_model_file(
            path,
            state_dict=lambda s: {
                k: (torch.zeros(3, 3) if "net.1.weight" in k else v) for k, v in s.items()
            },
        )
    else:
        raise AssertionError(kind)


MODEL_KINDS = [
    ("payload", "references code"),
    ("raw_pickle", "not a torch file"),
    ("truncated", "truncated or not a torch file"),
    ("empty", "truncated or not a torch file"),
    ("garbage", "not a torch file"),
    ("foreign_dict", "not a pipeline model"),
    ("foreign_tensor", "not a pipeline model"),
    ("wrong_format", "format 99"),
    ("bad_meta", "do not fit"),
    ("shape_mismatch", "do not fit"),
]


@pytest.mark.parametrize(("kind", "fragment"), MODEL_KINDS)
def test_bad_backbone_model_file(work, capsys, kind, fragment):
    model = work / "artifacts/backbones/none/seed0/model.pt"
    marker = work / "PWNED"
    _plant_model(model, kind, marker)
    before = _snapshot(work)
    assert main(["readout", "--target", "digits_5to9", "--backbone", "none", *SEED0]) == 2
    line = _one_error_line(capsys)
    assert "artifacts/backbones/none/seed0/model.pt" in line and fragment in line, line
    assert not marker.exists()
    assert _snapshot(work) == before


def test_planted_model_runs_no_code_from_the_command_line(work):
    """The same payload through a real process: one stderr line, exit 2, no marker."""
    marker = work / "PWNED"
    _plant_model(work / "artifacts/backbones/none/seed0/model.pt", "payload", marker)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "readout",
            "--target",
            "digits_5to9",
            "--backbone",
            "none",
            "--backbone_seed",
            "0",
        ],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert proc.returncode == 2, proc.stderr
    errors = proc.stderr.splitlines()
    assert len(errors) == 1 and "model.pt" in errors[0] and "posix.system" in errors[0], proc.stderr
    assert not marker.exists()


CHECKPOINT_KINDS = ["payload", "raw_pickle", "truncated", "empty", "garbage", "no_fingerprint"]


@pytest.mark.parametrize("kind", CHECKPOINT_KINDS)
def test_bad_checkpoint_is_an_error_not_a_silent_restart(work, capsys, kind):
    ckpt = work / "artifacts/checkpoints/pretrain/none/seed0/last.pt"
    marker = work / "PWNED"
    if kind == "no_fingerprint":
        ckpt.parent.mkdir(parents=True)
        torch.save({"module": {}, "epoch": 3}, ckpt)
    else:
        _plant_model(ckpt, kind, marker)
    before = _snapshot(work)
    assert main(["pretrain", "--variant", "none", "--seed", "0"]) == 2
    line = _one_error_line(capsys)
    assert "artifacts/checkpoints/pretrain/none/seed0/last.pt" in line and "delete it" in line, line
    assert not marker.exists()
    assert _snapshot(work) == before


def test_checkpoint_of_another_run_is_discarded_and_named(tmp_path, caplog):
    store = CheckpointStore(tmp_path, "aaaa")
    store.save({"epoch": 2, "rng": {"numpy": np.random.get_state()}})
    assert CheckpointStore(tmp_path, "aaaa").load()["epoch"] == 2
    with caplog.at_level("WARNING"):
        assert CheckpointStore(tmp_path, "bbbb").load() is None
    assert str(store.path) in caplog.text and "another run" in caplog.text
    assert not store.path.exists()


def test_checkpoint_round_trips_rng_states_exactly(tmp_path):
    """numpy / Python / torch RNG states survive a data-only (weights_only) checkpoint."""
    import random

    from pipeline.runtime import device as runtime

    runtime.seed_everything(123)
    np.random.rand(3)
    state = runtime.rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    store = CheckpointStore(tmp_path, "fp")
    store.save({"rng": state})
    # the raw file loads with weights_only=True (no numpy classes inside)
    raw = torch.load(store.path, weights_only=True)
    assert raw["fingerprint"] == "fp"
    runtime.seed_everything(999)
    runtime.set_rng_state(store.load()["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_plain_conversion_refuses_what_it_cannot_store():
    with pytest.raises(TypeError, match="Payload"):
        to_plain({"x": Payload(Path("/nonexistent"))})
    arr = np.arange(6, dtype=np.float16).reshape(2, 3)
    back = from_plain(to_plain({"a": arr, "s": np.int64(7)}))
    assert back["a"].dtype == np.float16 and (back["a"] == arr).all() and back["s"] == 7


# --- CIFAR-10 pickles -----------------------------------------------------------------------


def _fake_cifar(folder: Path) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in {**{f"data_batch_{i}": 2 for i in range(1, 6)}, "test_batch": 3}.items():
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(x) for x in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"{i}.png".encode() for i in range(n)],
        }
        # numpy arrays pickle as numpy's _reconstruct, as in the release
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))


def _cifar_work(work: Path) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["prepare"]["outputs"]["cifar10"] = {"source": "cifar10", "splits": ["train", "test"]}
    params["prepare"]["raw"] = ["cifar10"]
    Path("params.yaml").write_text(yaml.safe_dump(params))
    _fake_cifar(work / "data/cifar10/cifar-10-batches-py")


def test_cifar_batches_load_through_the_restricted_unpickler(work):
    from pipeline.data import open_source

    _cifar_work(work)
    assert main(["prepare", "--dataset", "cifar10"]) == 0
    test = open_source("cifar10", work / "data/cifar10", "test")
    assert len(test) == 3 and test[0][0].size == (32, 32)


@pytest.mark.parametrize("batch", ["data_batch_3", "test_batch"])
def test_planted_cifar_batch_runs_no_code(work, capsys, batch):
    _cifar_work(work)
    marker = work / "PWNED"
    path = work / "data/cifar10/cifar-10-batches-py" / batch
    path.write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": []}, protocol=4))
    before = _snapshot(work)
    assert main(["prepare", "--dataset", "cifar10"]) == 2
    line = _one_error_line(capsys)
    assert str(Path("data/cifar10/cifar-10-batches-py") / batch) in line, line
    assert "refused global posix.system" in line, line
    assert not marker.exists()
    assert _snapshot(work) == before


def test_cifar_batch_that_is_not_a_dict_names_the_file(work, capsys):
    _cifar_work(work)
    (work / "data/cifar10/cifar-10-batches-py/test_batch").write_bytes(pickle.dumps([1, 2]))
    assert main(["prepare", "--dataset", "cifar10"]) == 2
    line = _one_error_line(capsys)
    assert "test_batch" in line and "expected a dict" in line, line


# --- prepare is atomic per dataset ----------------------------------------------------------


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_prepare_failing_in_the_last_split_keeps_the_old_dataset(work, capsys):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["prepare"]["outputs"]["mine"] = {"source": "image_folder", "splits": ["train", "test"]}
    params["prepare"]["raw"] = ["mine"]
    Path("params.yaml").write_text(yaml.safe_dump(params))
    for split in ("train", "test"):
        for c in ("ant", "bee"):
            for j in range(2):
                _image(work / "data/mine" / split / c / f"{j}.png", seed=j)
    assert main(["prepare", "--dataset", "mine"]) == 0
    prepared, metrics = work / "artifacts/prepared/mine", work / "metrics/prepare/mine.json"
    old = _snapshot(prepared)
    old_metrics = metrics.read_bytes()
    # New data: more train images (the train split would change) and a corrupt test image.
    _image(work / "data/mine/train/ant/9.png", seed=9)
    (work / "data/mine/test/bee/1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    capsys.readouterr()
    assert main(["prepare", "--dataset", "mine"]) == 2
    line = _one_error_line(capsys)
    assert "data/mine/test/bee/1.png" in line, line
    assert _snapshot(prepared) == old
    assert metrics.read_bytes() == old_metrics
    leftovers = [p.name for p in prepared.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    # Repaired data replaces the whole dataset at once.
    _image(work / "data/mine/test/bee/1.png", seed=1)
    assert main(["prepare", "--dataset", "mine"]) == 0
    assert yaml.safe_load(old_metrics)["train"]["samples"] == 4
    assert yaml.safe_load(metrics.read_text())["train"]["samples"] == 5


def test_prepare_refuses_to_replace_a_folder_it_did_not_write(work, capsys):
    (work / "artifacts/prepared/digits_0to4/notes.txt").write_text("mine")
    before = _snapshot(work)
    assert main(["prepare", "--dataset", "digits_0to4"]) == 2
    assert "not one" in _one_error_line(capsys)
    assert _snapshot(work) == before


# --- damaged shards -------------------------------------------------------------------------


def _shard(work: Path) -> Path:
    return work / "artifacts/prepared/digits_5to9/train/shard-000000.tar"


def _member_offset(tar_path: Path, suffix: str, index: int = 1) -> int:
    with tarfile.open(tar_path) as tar:
        return [m.offset for m in tar.getmembers() if m.name.endswith(suffix)][index]


def _damage(path: Path, offset: int, data: bytes = b"\xff" * 8) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


def _drop_member(path: Path, name_suffix: str) -> None:
    """Rewrite the tar without the first member ending in ``name_suffix``."""
    out = io.BytesIO()
    with tarfile.open(path) as src, tarfile.open(fileobj=out, mode="w") as dst:
        dropped = False
        for m in src.getmembers():
            if not dropped and m.name.endswith(name_suffix):
                dropped = True
                continue
            dst.addfile(m, src.extractfile(m))
    path.write_bytes(out.getvalue())


SHARD_DAMAGE = {
    "first_header": (lambda p: _damage(p, 0), "bad checksum"),
    "png_header": (lambda p: _damage(p, _member_offset(p, ".png")), "lacks .png or .cls"),
    "later_header": (lambda p: _damage(p, _member_offset(p, ".cls", 5)), "damaged or truncated"),
    "missing_png": (lambda p: _drop_member(p, ".png"), "lacks .png or .cls"),
    "missing_cls": (lambda p: _drop_member(p, ".cls"), "lacks .png or .cls"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:700]), "shard-000000.tar"),
    "not_a_tar": (lambda p: p.write_bytes(b"hello" * 300), "shard-000000.tar"),
    "deleted": (lambda p: p.unlink(), "is missing"),
    "bad_meta": (lambda p: (p.parent / "meta.json").write_text("{"), "malformed"),
}


@pytest.mark.parametrize("damage", sorted(SHARD_DAMAGE))
def test_damaged_shard_names_the_file(work, capsys, damage):
    action, fragment = SHARD_DAMAGE[damage]
    action(_shard(work))
    before = _snapshot(work)
    assert main(["readout", "--target", "digits_5to9", "--backbone", "none", *SEED0]) == 2
    line = _one_error_line(capsys)
    assert "artifacts/prepared/digits_5to9/train" in line and fragment in line, line
    assert _snapshot(work) == before


def test_undecodable_png_in_a_shard_names_the_sample(tmp_path):
    from pipeline.data import open_source, write_shards
    from pipeline.data.shards import open_shards

    write_shards(open_source("digits", None, "test", image_size=8), tmp_path / "s", maxcount=1000)
    tar_path = tmp_path / "s/shard-000000.tar"
    # overwrite the PNG signature of the first image (headers stay valid)
    with tarfile.open(tar_path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".png"))
    _damage(tar_path, member.offset_data, b"NOTAPNG!")
    data = open_shards(tmp_path / "s", in_memory=True)
    with pytest.raises(DatasetError, match=r"cannot decode image in shard .*shard-000000.tar"):
        data[0]


# --- parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["pretrain.train.epochs=1"], ["--set pretrain.train.epochs=1:", "burn_in", "0..0"]),
        (
            ["pretrain.variants.rep_spectral=[{name: rep_spectral, burn_in: 2}]"],
            ["pretrain.variants.rep_spectral.0.burn_in", "pretrain.train.epochs (2)"],
        ),
        (
            ["ssl.train.epochs=1", "ssl.run.variants=[simclr_rep_spectral]"],
            ["ssl.variants", "burn_in"],
        ),
        (
            [
                "finetune.targets.digits_5to9.train.epochs=1",
                "finetune.run.regularizers=[none, rep_spectral]",  # none: the report's baseline
            ],
            ["finetune.regularizers.rep_spectral.0.burn_in", "finetune.targets.digits_5to9"],
        ),
        (
            ["pretrain.run.variants=[none]"],
            ["--set pretrain.run.variants=[none]:", "'rep_spectral' is not made by"],
        ),
        (["finetune.run.backbones=[ghost]"], ["allowed: none, rep_spectral"]),
        (["pretrain.train.epochs=true"], ["pretrain.train.epochs", "not a boolean"]),
        (["pretrain.train.batch_size=false"], ["batch_size", "not a boolean"]),
        (["pretrain.model.widths=[4, true, 8, 8]"], ["pretrain.model.widths", "not a boolean"]),
        (["pretrain.train.optimizer.lr_head=true"], ["lr_head", "not a boolean"]),
        (["pretrain.variants.none=[{name: bss, burn_in: true}]"], ["burn_in", "valid integer"]),
        (["pretrain.train.epochs=x"], ["--set pretrain.train.epochs=x:", "integer"]),
    ],
)
def test_cross_key_and_type_checks(overrides, fragments):
    params = tiny_params()
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bad-inputs-{os.getpid()}.yaml"
    path.write_text(yaml.safe_dump(params))
    try:
        with pytest.raises(ConfigError) as info:
            plan(load_config(path, overrides))  # cross-key rules: for what the DAG runs
    finally:
        path.unlink()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_error_in_the_file_is_labelled_by_the_file(work, capsys):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["pretrain"]["train"]["epochs"] = True
    Path("params.yaml").write_text(yaml.safe_dump(params))
    argv = ["pretrain", "--variant", "none", "--seed", "0", "--set", "pretrain.train.batch_size=8"]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: params.yaml: pretrain.train.epochs"), line


def test_burn_in_outside_the_run_list_is_allowed():
    """Only variants that run are checked: a listed-but-idle variant may have any burn-in."""
    params = tiny_params()
    params["pretrain"]["variants"]["idle"] = [{"name": "bss", "burn_in": 50}]
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"ok-inputs-{os.getpid()}.yaml"
    path.write_text(yaml.safe_dump(params))
    try:
        assert "idle" in load_config(path).pretrain.variants
    finally:
        path.unlink()


# --- command lines --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["digits"], "the following arguments are required: --out"),
        (
            ["digits", "--out", "o", "--maxcount", "x"],
            "argument --maxcount: invalid int value: 'x'",
        ),
        (["digits", "--out", "o", "--colour", "red"], "unrecognized arguments: --colour red"),
        ([], "the following arguments are required: source, --out"),
    ],
)
def test_shard_usage_errors_are_one_line(tmp_path, monkeypatch, capsys, argv, fragment):
    from pipeline.shard_tool import shard_main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        shard_main(argv)
    assert info.value.code == 2
    line = _one_error_line(capsys)
    assert fragment in line and line.endswith("(see --help)"), line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["sideways"], "argument command: invalid choice: 'sideways'"),
        (["xor", "--params"], "argument --params: expected one argument"),
        ([], "the following arguments are required: command"),
    ],
)
def test_experiments_usage_errors_are_one_line(capsys, argv, fragment):
    from pipeline.experiments.__main__ import main as experiments_main

    with pytest.raises(SystemExit) as info:
        experiments_main(argv)
    assert info.value.code == 2
    line = _one_error_line(capsys)
    assert fragment in line, line


def test_experiments_set_error_names_the_override(capsys):
    from pipeline.experiments.__main__ import main as experiments_main

    params = str(REPO / "experiments/params.yaml")
    assert experiments_main(["xor", "--params", params, "--set", "xor.epochs=many"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: --set xor.epochs=many: xor.epochs"), line


def test_subcommand_parsers_share_the_one_line_error(capsys):
    from pipeline.core.cli import Parser, add_params_options

    parser = Parser(prog="demo")
    sub = parser.add_subparsers(dest="stage", required=True)
    add_params_options(sub.add_parser("pretrain"))
    with pytest.raises(SystemExit):
        parser.parse_args(["pretrain", "--seed", "x"])
    assert "unrecognized arguments: --seed x" in _one_error_line(capsys)
    with pytest.raises(SystemExit):
        parser.parse_args(["bogus"])
    assert "invalid choice: 'bogus'" in _one_error_line(capsys)
    ns = parser.parse_args(["pretrain", "--set", "a.b=1", "--set", "c=2"])
    assert ns.overrides == ["a.b=1", "c=2"] and ns.params == "params.yaml"


# --- run lock and stale temporary files -----------------------------------------------------

HOLDER = """
import sys, time
from pipeline.core.runlock import hold_run_lock
with hold_run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""

SECOND = """
import sys
from pipeline.core.cli import report
from pipeline.core.errors import PipelineError
from pipeline.core.runlock import hold_run_lock
try:
    with hold_run_lock(sys.argv[1]):
        print("acquired")
except PipelineError as e:
    sys.exit(report(e))
"""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_holder_of_a_run_lock_fails_naming_the_first(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run(
            [sys.executable, "-c", SECOND, str(run_dir)], capture_output=True, text=True, env=ENV
        )
        assert second.returncode == 2 and second.stdout == ""
        lines = second.stderr.splitlines()
        assert len(lines) == 1 and f"PID {holder.pid}" in lines[0], second.stderr
        # and in this process too, as the exception type
        with pytest.raises(RunLockedError, match=f"PID {holder.pid}"), hold_run_lock(run_dir):
            pass
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the killed holder's lock: the next run gets it.
    with hold_run_lock(run_dir) as lock:
        assert lock.read_text().strip() == str(os.getpid())


def test_lock_start_removes_only_dead_writers_temp_files(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        dead_ckpt = run_dir / f".last.pt.tmp-{dead}"
        dead_model = run_dir / f".model.pt.tmp-{dead}"
        dead_dir = run_dir / f".train.tmp-{dead}-0badcafe"
        live_ckpt = run_dir / f".last.pt.tmp-{live.pid}"
        unrelated = [run_dir / "last.pt", run_dir / ".hidden", run_dir / "x.tmp-1"]
        for p in [dead_ckpt, dead_model, live_ckpt, *unrelated]:
            p.write_bytes(b"x")
        dead_dir.mkdir()
        (dead_dir / "shard-000000.tar").write_bytes(b"x")
        assert set(stale_temp_files(run_dir)) == {dead_ckpt, dead_model, dead_dir}
        with hold_run_lock(run_dir):
            remaining = sorted(p.name for p in run_dir.iterdir())
        assert remaining == sorted([".lock", live_ckpt.name, *(p.name for p in unrelated)])
    finally:
        live.kill()
        live.wait()


def test_locked_run_leaves_temp_files_alone(tmp_path):
    """A second, refused holder must not clean up: the files may be the first holder's."""
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        stale = run_dir / f".last.pt.tmp-{_dead_pid()}"
        stale.write_bytes(b"x")
        with pytest.raises(RunLockedError), hold_run_lock(run_dir):
            pass
        assert stale.exists()
    finally:
        holder.kill()
        holder.wait()


def test_atomic_write_leaves_no_temp_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.json"

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "{}")
    assert list(tmp_path.iterdir()) == []


def test_load_torch_file_names_a_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match=f"model file not found: {tmp_path / 'x.pt'}"):
        load_torch_file(tmp_path / "x.pt", "model file")
