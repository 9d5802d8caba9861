"""WebDataset shards: round trip, atomic replacement, node/worker splitting, shuffling, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data import (
    ArrayDataset,
    ShardDataset,
    open_shards,
    open_source,
    read_meta,
    write_shards,
)
from pipeline.shard_tool import parse_option, shard_main


def small_rgb(n: int = 23, classes: int = 3) -> ArrayDataset:
    """Random RGB images whose label is recoverable from the pixels (pixel [0,0,0] = index)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 6, 5, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    return ArrayDataset("toy", images, [i % classes for i in range(n)], ["a", "b", "c"][:classes])


class Failing(ArrayDataset):
    """Breaks after ``fail_at`` samples, like a crash halfway through sharding."""

    fail_at = 9

    def __getitem__(self, index: int):
        if index >= self.fail_at:
            raise RuntimeError("simulated crash")
        return super().__getitem__(index)


def test_round_trip_in_memory(tmp_path: Path):
    source = small_rgb()
    meta = write_shards(source, tmp_path / "s", maxcount=5, prefix="toy")
    assert meta["num_shards"] == 5 and meta["num_samples"] == 23
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "meta.json",
        *[f"toy-{i:06d}.tar" for i in range(5)],
    ]
    loaded = open_shards(tmp_path / "s", in_memory=True)
    assert (len(loaded), loaded.classes, loaded.channels, loaded.name) == (
        23,
        ["a", "b", "c"],
        3,
        "toy",
    )
    assert loaded.targets == source.targets
    for i in range(len(source)):
        img, label = loaded[i]
        assert img.mode == "RGB" and label == source.targets[i]
        np.testing.assert_array_equal(np.asarray(img), source.images[i])


def test_grayscale_digits_round_trip_and_meta(tmp_path: Path):
    digits = open_source("digits", None, "test", classes=[5, 6])
    write_shards(digits, tmp_path / "d", maxcount=30, extra_meta={"split": "test"})
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["source"] == "digits" and meta["split"] == "test" and meta["channels"] == 1
    assert meta["classes"] == ["5", "6"] and meta["num_samples"] == len(digits)
    loaded = open_shards(tmp_path / "d", in_memory=True)
    img, label = loaded[7]
    assert img.mode == "L" and label == digits.targets[7]
    np.testing.assert_array_equal(np.asarray(img), digits.images[7])


def test_shards_are_byte_reproducible(tmp_path: Path):
    write_shards(small_rgb(), tmp_path / "a", maxcount=10)
    write_shards(small_rgb(), tmp_path / "b", maxcount=10)
    for name in ("shard-000000.tar", "shard-000002.tar", "meta.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_crash_leaves_no_partial_dir(tmp_path: Path):
    source = small_rgb()
    broken = Failing(source.name, source.images, source.targets, source.classes)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_shards(broken, tmp_path / "out", maxcount=4)
    assert list(tmp_path.iterdir()) == []  # neither out/ nor a leftover temporary dir


def test_crash_keeps_previous_complete_set(tmp_path: Path):
    out = tmp_path / "out"
    write_shards(small_rgb(n=6), out, maxcount=4)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    source = small_rgb()
    broken = Failing(source.name, source.images, source.targets, source.classes)
    with pytest.raises(RuntimeError):
        write_shards(broken, out, maxcount=4)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    write_shards(source, out, maxcount=100)  # a successful rewrite replaces the old set
    assert read_meta(out)["num_samples"] == 23 and len(list(out.glob("*.tar"))) == 1


def first_pixel(img: Image.Image) -> int:
    return int(np.asarray(img)[0, 0, 0])


def test_disk_reader_yields_every_sample_once_in_written_order(tmp_path: Path):
    write_shards(small_rgb(), tmp_path / "s", maxcount=5)
    disk = ShardDataset(
        tmp_path / "s"
    )  # streaming and by-index reads: tests/data/test_data_stream.py
    assert len(disk) == 23 and disk.num_classes == 3
    seen = [(first_pixel(img), label) for img, label in disk]
    assert seen == [(i, i % 3) for i in range(23)]


def test_missing_or_empty_shard_dir_is_dataset_error(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "absent"):
        for open_ in (lambda p: open_shards(p), lambda p: open_shards(p, in_memory=True)):
            with pytest.raises(DatasetError) as err:
                open_(path)
            assert str(path) in str(err.value) and "meta.json" in str(err.value)


def test_missing_shard_file_is_dataset_error(tmp_path: Path):
    write_shards(small_rgb(), tmp_path / "s", maxcount=5)
    (tmp_path / "s" / "shard-000003.tar").unlink()
    with pytest.raises(DatasetError, match="shard-000003.tar listed in .* is missing"):
        open_shards(tmp_path / "s")


def test_corrupt_shard_is_dataset_error(tmp_path: Path):
    write_shards(small_rgb(), tmp_path / "s", maxcount=5)
    shard = tmp_path / "s" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:700])
    with pytest.raises(DatasetError, match="shard"):
        open_shards(tmp_path / "s", in_memory=True)


def test_write_rejects_bad_arguments(tmp_path: Path):
    with pytest.raises(ConfigError, match="maxcount"):
        write_shards(small_rgb(), tmp_path / "s", maxcount=0)
    with pytest.raises(DatasetError, match="empty"):
        write_shards(small_rgb(n=0), tmp_path / "s")
    assert not (tmp_path / "s").exists()
    precious = tmp_path / "data" / "keep.txt"
    precious.parent.mkdir()
    precious.write_text("user data")
    with pytest.raises(ConfigError, match="not a shard set"):
        write_shards(small_rgb(), tmp_path / "data")
    assert precious.read_text() == "user data"


def test_cli_writes_requested_split_with_options(tmp_path: Path, capsys):
    out = tmp_path / "cli"
    argv = ["digits", "--split", "test", "--out", str(out), "--maxcount", "50"]
    rc = shard_main([*argv, "--option", "classes=[5,6,7]", "image_size=16"])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    meta = read_meta(out)
    assert meta["classes"] == ["5", "6", "7"] and meta["options"]["image_size"] == 16
    loaded = open_shards(out, in_memory=True)
    assert loaded[0][0].size == (16, 16)
    assert len(loaded) == len(open_source("digits", None, "test", classes=[5, 6, 7]))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["mnist", "--out", "X"], "unknown dataset source 'mnist'"),
        (["digits", "--out", "X", "--option", "colour"], "key=value"),
        (["cifar10", "--root", "NOPE", "--out", "X"], "CIFAR-10 not found at NOPE"),
    ],
)
def test_cli_errors_are_one_line_exit_2(tmp_path: Path, capsys, argv, message):
    argv = [a.replace("X", str(tmp_path / "o")).replace("NOPE", str(tmp_path)) for a in argv]
    assert shard_main(argv) == 2
    err = capsys.readouterr().err
    assert message.replace("NOPE", str(tmp_path)) in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_parse_option_types():
    assert parse_option("classes=[5, 6]") == ("classes", [5, 6])
    assert parse_option("image_size=32") == ("image_size", 32)
    assert parse_option("include_valid=True") == ("include_valid", True)
    assert parse_option("name=cats") == ("name", "cats")
