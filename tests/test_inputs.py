"""Nothing silently wrong: bad inputs are refused where they enter, resource errors are one line.

Each fault class gets a table of cases on fake datasets in their real on-disk layout
(tests/data/data_fakes.py). A command-line case first prepares the good dataset, then damages
its raw files and runs ``prepare`` again: it must exit 2 with one line naming the file and what
is wrong, and leave every file it had written byte-identical.

1. 16-bit and other pixel modes (converted exactly, or refused)   5. label ranges (shards, .mat)
2. CIFAR pixel dtypes and ranges, labels                           6. FIFOs, bombs, non-UTF-8 lists
3. classes without images                                          7. non-finite model weights
4. one sample in two splits                                        8. disk full, read-only, ulimit -f
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import resource
import struct
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader

from pipeline.__main__ import main
from pipeline.core import paths
from pipeline.core.errors import ArtifactError, DatasetError, ResourceError
from pipeline.core.io import atomic_write_text
from pipeline.data import ArrayDataset, open_shards, open_source, write_shards
from pipeline.data.base import load_image
from pipeline.data.cifar10 import read_batch, read_classes
from pipeline.models import build_model, load_model, save_model
from pipeline.models.torch_files import atomic_torch_save
from tests.conftest import REPO, tiny_params
from tests.data.data_fakes import (
    cell_array,
    make_cifar_root,
    make_dogs_root,
    make_flowers_root,
    make_folder_root,
    make_imagenet_root,
    make_indoor_root,
)

ENV = {**os.environ, "PIPELINE_DEVICE": "cpu", "PYTHONPATH": str(REPO)}

# ---------------------------------------------------------------------------------------------
# Helpers: a work directory with one raw dataset, snapshots, one-line errors
# ---------------------------------------------------------------------------------------------

SOURCES = {  # source -> (fake builder, splits of its prepare output)
    "image_folder": (make_folder_root, ["train", "test"]),
    "imagenet": (make_imagenet_root, ["train", "val"]),
    "cifar10": (make_cifar_root, ["train", "test"]),
    "flowers102": (make_flowers_root, ["train", "val", "test"]),
    "stanford_dogs": (make_dogs_root, ["train", "test"]),
    "mit_indoor": (make_indoor_root, ["train", "test"]),
}


def _params() -> dict:
    """tiny_params, its finetune backbones limited to variants the pretraining runs."""
    params = tiny_params()
    made = params["pretrain"]["run"]["variants"]
    run = params["finetune"]["run"]
    run["backbones"] = [b for b in run["backbones"] if b in made]
    return params


def _snapshot(root: Path) -> dict[str, str]:
    """Every file the pipeline wrote (not the raw data, not the run locks) and its digest."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.parts[len(root.parts)] not in ("data", "params.yaml")
        and not str(p.relative_to(root)).startswith("artifacts/runs/")
    }


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _raw_work(tmp_path: Path, monkeypatch, source: str) -> tuple[Path, Path]:
    """A work directory whose params prepare ``data/raw`` (a fake ``source`` tree) as ``raw``."""
    make, splits = SOURCES[source]
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    params = _params()
    params["prepare"]["outputs"]["raw"] = {"source": source, "splits": splits}
    params["prepare"]["raw"] = ["raw"]
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    src = tmp_path / "src"
    src.mkdir()
    make(src).rename(work / "data" / "raw")
    monkeypatch.chdir(work)
    return work, work / "data" / "raw"


def _prepare(capsys) -> int:
    code = main(["prepare", "--dataset", "raw"])
    if code == 0:
        capsys.readouterr()
    return code


def _refused_after_damage(tmp_path, monkeypatch, capsys, source, damage, fragments) -> str:
    """Prepare the good tree, damage it, prepare again: exit 2, one line, nothing changed."""
    work, raw = _raw_work(tmp_path, monkeypatch, source)
    assert _prepare(capsys) == 0
    before = _snapshot(work)
    assert any(k.startswith("artifacts/prepared/raw/") for k in before)
    damage(raw)
    assert main(["prepare", "--dataset", "raw"]) == 2
    line = _one_error_line(capsys)
    for fragment in fragments:
        assert fragment in line, line
    assert _snapshot(work) == before
    return line


def _png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG written by hand (gray for H x W, RGB for H x W x 3): Pillow cannot write
    16-bit RGB, and an independent encoder keeps the test from trusting the code under test."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    h, w = pixels.shape[:2]
    color = 2 if pixels.ndim == 3 else 0
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _bomb_png(side: int = 30000) -> bytes:
    """A PNG whose header claims side x side pixels (over Pillow's 2 x 89 M pixel limit)."""
    data = _png16(np.zeros((1, 1), np.uint16))
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    crc = zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF
    return data[:8] + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", crc) + data[33:]


# ---------------------------------------------------------------------------------------------
# 1. Pixel modes: 16-bit gray keeps its high byte (as Pillow does for 16-bit RGB); palette, LA
#    and CMYK convert by their definitions; float and out-of-range 32-bit pixels are refused
# ---------------------------------------------------------------------------------------------

RNG = np.random.default_rng(7)
GRAY16 = RNG.integers(0, 65536, (5, 6), dtype=np.uint16)
RGB16 = RNG.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
INDEX = RNG.integers(0, 4, (5, 6), dtype=np.uint8)
PALETTE = RNG.integers(0, 256, (4, 3), dtype=np.uint8)
LA = RNG.integers(0, 256, (5, 6, 2), dtype=np.uint8)
CMYK = RNG.integers(0, 256, (5, 6, 4), dtype=np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, Pillow's documented RGB -> L formula."""
    return rgb.astype(float) @ np.array([299, 587, 114]) / 1000


def _palette_image(transparency: bool) -> Image.Image:
    img = Image.fromarray(INDEX, "P")
    img.putpalette(PALETTE.ravel().tolist())
    if transparency:
        img.info["transparency"] = 0
    return img


def _write(path: Path, img: Image.Image | bytes) -> Path:
    if isinstance(img, bytes):
        path.write_bytes(img)
    else:
        img.save(path)
    return path


CMYK_RGB = (255 - CMYK[..., :3].astype(float)) * (255 - CMYK[..., 3:].astype(float)) / 255

# (case, file name, content, channels, expected pixels or None for "refused", tolerance)
PIXEL_CASES = [
    ("png16_gray_rgb", "a.png", _png16(GRAY16), 3, np.repeat((GRAY16 >> 8)[..., None], 3, 2), 0),
    ("png16_gray_l", "a.png", _png16(GRAY16), 1, GRAY16 >> 8, 0),
    ("tiff16_gray", "a.tif", Image.fromarray(GRAY16), 1, GRAY16 >> 8, 0),
    ("tiff16_bigendian", "a.tif", Image.fromarray(GRAY16.astype(">u2")), 1, GRAY16 >> 8, 0),
    ("int32_in_16bit_range", "a.tif", Image.fromarray(GRAY16.astype(np.int32)), 1, GRAY16 >> 8, 0),
    ("png16_rgb", "a.png", _png16(RGB16), 3, RGB16 >> 8, 0),
    ("palette", "a.png", _palette_image(False), 3, PALETTE[INDEX], 0),
    ("palette_transparent", "a.png", _palette_image(True), 3, PALETTE[INDEX], 0),
    ("palette_gray", "a.png", _palette_image(False), 1, _luma(PALETTE[INDEX]), 1),
    ("la", "a.png", Image.fromarray(LA, "LA"), 3, np.repeat(LA[..., :1], 3, 2), 0),
    ("la_gray", "a.png", Image.fromarray(LA, "LA"), 1, LA[..., 0], 0),
    ("cmyk", "a.tif", Image.fromarray(CMYK, "CMYK"), 3, CMYK_RGB, 1),
]
REFUSED_PIXELS = [
    ("int32_above_16bit", Image.fromarray(np.full((3, 3), 70000, np.int32)), "70000..70000"),
    ("int32_negative", Image.fromarray(np.full((3, 3), -5, np.int32)), "-5..-5"),
    ("float", Image.fromarray(np.full((3, 3), 0.5, np.float32)), "floating-point"),
]


@pytest.mark.parametrize(
    ("name", "content", "channels", "expected", "tol"),
    [c[1:] for c in PIXEL_CASES],
    ids=[c[0] for c in PIXEL_CASES],
)
def test_pixel_modes_convert_by_their_definition(tmp_path, name, content, channels, expected, tol):
    got = np.asarray(load_image(_write(tmp_path / name, content), channels)).astype(float)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= tol


@pytest.mark.parametrize(("img", "fragment"), [c[1:] for c in REFUSED_PIXELS],
                         ids=[c[0] for c in REFUSED_PIXELS])  # fmt: skip
def test_pixels_of_unknown_scale_are_refused(tmp_path, img, fragment):
    path = _write(tmp_path / "a.tif", img)
    with pytest.raises(DatasetError) as info:
        load_image(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_a_folder_of_16bit_pngs_is_prepared_from_its_high_bytes(tmp_path, monkeypatch, capsys):
    """On main every pixel above 255 became 255: a folder of 16-bit PNGs became white."""
    work, raw = _raw_work(tmp_path, monkeypatch, "image_folder")
    expected = {}
    for split_class in ("train/ant", "train/bee", "train/cat", "test/ant", "test/bee"):
        for f in (raw / split_class).iterdir():
            f.unlink()
        pixels = RNG.integers(0, 65536, (5, 6), dtype=np.uint16)
        (raw / split_class / "x.png").write_bytes(_png16(pixels))
        expected[split_class] = pixels >> 8
    assert _prepare(capsys) == 0
    shards = open_shards(work / "artifacts/prepared/raw/train", in_memory=True)
    got = sorted(np.asarray(shards[i][0])[..., 0].tobytes() for i in range(len(shards)))
    want = sorted(expected[f"train/{c}"].astype(np.uint8).tobytes() for c in ("ant", "bee", "cat"))
    assert got == want


# ---------------------------------------------------------------------------------------------
# 2. CIFAR batches: uint8 pixels expected (exact wider integers allowed), integer labels
# ---------------------------------------------------------------------------------------------


def _rewrite_batch(folder: Path, name: str, **changes) -> None:
    path = folder / "cifar-10-batches-py" / name
    with path.open("rb") as f:
        batch = pickle.load(f)
    for key, make in changes.items():
        batch[key.encode()] = make(batch[key.encode()])
    with path.open("wb") as f:
        pickle.dump(batch, f)


CIFAR_CLI = [
    ("float_0_1", "data_batch_3", {"data": lambda d: (d / 255).astype(np.float32)},
     ["data_batch_3", "float32", "spanning 0.0", "expected uint8 pixels 0..255"]),
    ("int64_to_299", "data_batch_2", {"data": lambda d: d.astype(np.int64) + 44},
     ["data_batch_2", "int64", "..299", "expected uint8 pixels 0..255"]),
    ("int16_negative", "test_batch", {"data": lambda d: d.astype(np.int16) - 1},
     ["test_batch", "int16", "spanning -1.."]),
    ("label_fraction", "data_batch_1", {"labels": lambda ls: [2.5, *ls[1:]]},
     ["data_batch_1", "label 0 is 2.5", "expected integers"]),
    ("label_nan", "data_batch_5", {"labels": lambda ls: [*ls[:-1], float("nan")]},
     ["data_batch_5", "label 3 is nan"]),
    ("label_text", "data_batch_4", {"labels": lambda ls: ["cat", *ls[1:]]},
     ["data_batch_4", "label 0 is 'cat'"]),
]  # fmt: skip


@pytest.mark.parametrize(("batch", "changes", "fragments"), [c[1:] for c in CIFAR_CLI],
                         ids=[c[0] for c in CIFAR_CLI])  # fmt: skip
def test_cifar_batches_of_wrong_type_or_range_are_refused(
    tmp_path, monkeypatch, capsys, batch, changes, fragments
):
    _refused_after_damage(
        tmp_path, monkeypatch, capsys, "cifar10",
        lambda raw: _rewrite_batch(raw, batch, **changes), fragments,
    )  # fmt: skip


def test_cifar_wider_integers_in_range_load_exactly(tmp_path):
    root = make_cifar_root(tmp_path)
    folder = root / "cifar-10-batches-py"
    original, labels = read_batch(folder / "test_batch")
    _rewrite_batch(root, "test_batch", data=lambda d: d.astype(np.int64),
                   labels=lambda ls: np.array(ls, dtype=np.int64))  # fmt: skip
    images, labels2 = read_batch(folder / "test_batch")
    assert images.dtype == np.uint8 and np.array_equal(images, original) and labels2 == labels


def test_cifar_label_names_that_are_not_utf8_are_one_line(tmp_path):
    folder = make_cifar_root(tmp_path) / "cifar-10-batches-py"
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": [b"cat\xff"] + [b"x"] * 9}, f)
    with pytest.raises(DatasetError, match="batches.meta: a label name is not UTF-8"):
        read_classes(folder)


# ---------------------------------------------------------------------------------------------
# 3. A class without images (an empty folder, a gap in the label numbers): refused, named
# ---------------------------------------------------------------------------------------------


def _relabel_mat(path: Path, field: str, change: Callable) -> None:
    content = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    content[field] = change(content[field])
    scipy.io.savemat(path, content)


EMPTY_CLASS = [
    ("empty_folder", "image_folder", lambda r: (r / "train/dog").mkdir(),
     ["raw/train/dog", "holds no image files"]),
    ("folder_without_images", "image_folder",
     lambda r: [f.unlink() for f in (r / "train/ant").glob("*.png")],
     ["raw/train/ant", "holds no image files"]),
    ("empty_imagenet_class", "imagenet",
     lambda r: [f.unlink() for f in (r / "val/n01443537").iterdir()],
     ["raw/val/n01443537", "holds no image files"]),
    ("flowers_label_gap", "flowers102",
     lambda r: _relabel_mat(r / "imagelabels.mat", "labels", lambda a: np.where(a == 2, 4, a)),
     ["imagelabels.mat", "no image with label 2", "labels up to 4"]),
    ("dogs_label_gap", "stanford_dogs",
     lambda r: [_relabel_mat(r / f"lists/{s}_list.mat", "labels", lambda a: a + (a >= 2))
                for s in ("train", "test")],
     ["raw/lists", "no file has label 2"]),
]  # fmt: skip


@pytest.mark.parametrize(("source", "damage", "fragments"), [c[1:] for c in EMPTY_CLASS],
                         ids=[c[0] for c in EMPTY_CLASS])  # fmt: skip
def test_a_class_without_images_is_refused(
    tmp_path, monkeypatch, capsys, source, damage, fragments
):
    _refused_after_damage(tmp_path, monkeypatch, capsys, source, damage, fragments)


# ---------------------------------------------------------------------------------------------
# 4. One sample in two splits (train and test share images): refused, naming it
# ---------------------------------------------------------------------------------------------


def _append_line(path: Path, line: str) -> None:
    path.write_text(path.read_text() + line + "\n")


def _dogs_test_gets_train_file(root: Path) -> None:
    train = scipy.io.loadmat(root / "lists/train_list.mat")
    test = {k: v for k, v in scipy.io.loadmat(root / "lists/test_list.mat").items()
            if not k.startswith("__")}  # fmt: skip
    first = str(train["file_list"][0, 0][0])
    files = [str(c[0]) for c in test["file_list"].ravel()] + [first]
    test["file_list"] = cell_array(files)
    test["annotation_list"] = cell_array([f[:-4] for f in files])
    test["labels"] = np.vstack([test["labels"], train["labels"][:1]])
    scipy.io.savemat(root / "lists/test_list.mat", test)


OVERLAPS = [
    ("flowers_train_test", "flowers102",
     lambda r: _relabel_mat(r / "setid.mat", "tstid", lambda a: np.hstack([a, [[2]]])),
     ["setid.mat", "image id 2 (jpg/image_00002.jpg) is in both trnid and tstid"]),
    ("flowers_val_test", "flowers102",
     lambda r: _relabel_mat(r / "setid.mat", "valid", lambda a: np.hstack([a, [[9]]])),
     ["setid.mat", "image id 9", "in both valid and tstid"]),
    ("indoor_train_test", "mit_indoor",
     lambda r: _append_line(r / "TestImages.txt", "bakery/bakery_0001.jpg"),
     ["'bakery/bakery_0001.jpg' is in both TrainImages.txt and TestImages.txt"]),
    ("dogs_train_test", "stanford_dogs", _dogs_test_gets_train_file,
     ["raw/lists", "'n02085620-Chihuahua/n02085620_0.jpg' is in both train_list.mat and "
      "test_list.mat"]),
]  # fmt: skip


@pytest.mark.parametrize(("source", "damage", "fragments"), [c[1:] for c in OVERLAPS],
                         ids=[c[0] for c in OVERLAPS])  # fmt: skip
def test_a_sample_in_two_splits_is_refused(
    tmp_path, monkeypatch, capsys, source, damage, fragments
):
    _refused_after_damage(tmp_path, monkeypatch, capsys, source, damage, fragments)


# ---------------------------------------------------------------------------------------------
# 5. Labels: a shard label outside the class count is refused where the shard is read (not as
#    "Target 4 is out of bounds" deep in training); .mat labels that are not whole numbers
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def bad_label_shards(tmp_path) -> Path:
    """4 classes, sample 2 labelled 4 (``write_shards`` writes what a source gives)."""
    images = np.zeros((5, 4, 4), np.uint8)
    dataset = ArrayDataset("bad", images, [0, 1, 4, 2, 3], ["a", "b", "c", "d"])
    write_shards(dataset, tmp_path / "s", maxcount=3)
    return tmp_path / "s"


def _stream_all(shard_dir: Path) -> None:
    shards = open_shards(shard_dir)
    to_tensor = lambda img: torch.from_numpy(np.asarray(img).copy())  # noqa: E731
    stream = shards.training_stream(to_tensor, batch_size=1, order_seed=0, augment_seed=0)
    list(DataLoader(stream, batch_size=None, collate_fn=lambda b: b))


SHARD_READS = {
    "by_index": lambda d: open_shards(d)[2],
    "iterated": lambda d: list(iter(open_shards(d))),
    "in_memory": lambda d: open_shards(d, in_memory=True),
    "streamed": _stream_all,
}


@pytest.mark.parametrize("read", list(SHARD_READS))
def test_a_shard_label_outside_the_classes_names_shard_and_sample(bad_label_shards, read):
    with pytest.raises(DatasetError) as info:
        SHARD_READS[read](bad_label_shards)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(bad_label_shards / "shard-000000.tar") in msg and "sample 000000002" in msg, msg
    assert "label 4, outside 0..3 (4 classes" in msg, msg


def test_a_negative_shard_label_is_refused(tmp_path):
    write_shards(ArrayDataset("neg", np.zeros((2, 4, 4), np.uint8), [0, -1], ["a", "b"]),
                 tmp_path / "s")  # fmt: skip
    with pytest.raises(DatasetError, match="sample 000000001 has label -1, outside 0..1"):
        open_shards(tmp_path / "s", in_memory=True)


MAT_LABELS = [
    ("flowers_nan", "flowers102", "imagelabels.mat", "labels",
     lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, np.nan, a.astype(float)),
     ["imagelabels.mat field labels holds nan at position 4 (of 10)", "expected whole numbers"]),
    ("flowers_fraction", "flowers102", "imagelabels.mat", "labels",
     lambda a: a + 0.5, ["imagelabels.mat field labels holds 1.5 at position 1"]),
    ("flowers_text", "flowers102", "imagelabels.mat", "labels",
     lambda a: np.array(["abc"]), ["imagelabels.mat field labels holds text"]),
    ("flowers_setid_inf", "flowers102", "setid.mat", "tstid",
     lambda a: np.hstack([a.astype(float), [[np.inf]]]),
     ["setid.mat field tstid holds inf at position 5"]),
    ("dogs_nan", "stanford_dogs", "lists/test_list.mat", "labels",
     lambda a: np.full(a.shape, np.nan), ["test_list.mat field labels holds nan at position 1"]),
]  # fmt: skip


@pytest.mark.parametrize(("source", "file", "field", "change", "fragments"),
                         [c[1:] for c in MAT_LABELS], ids=[c[0] for c in MAT_LABELS])  # fmt: skip
def test_mat_labels_that_are_not_whole_numbers_are_one_line(
    tmp_path, monkeypatch, capsys, source, file, field, change, fragments
):
    _refused_after_damage(
        tmp_path, monkeypatch, capsys, source,
        lambda r: _relabel_mat(r / file, field, change), fragments,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# 6. What a file list can name instead of an image, and list files that are not text
# ---------------------------------------------------------------------------------------------


def _fifo_instead_of_image(root: Path) -> None:
    image = root / "Images/bakery/bakery_0001.jpg"
    image.unlink()
    os.mkfifo(image)


def _dir_instead_of_image(root: Path) -> None:
    image = root / "Images/casino/casino_0000.jpg"
    image.unlink()
    image.mkdir()


def _bomb_instead_of_image(root: Path) -> None:
    (root / "train/bee/1.png").write_bytes(_bomb_png())


def _non_utf8_line(root: Path) -> None:
    path = root / "TestImages.txt"
    path.write_bytes(path.read_bytes().replace(b"bakery_0002", b"bakery_\xff002", 1))


NOT_IMAGES = [
    ("fifo", "mit_indoor", _fifo_instead_of_image,
     ["raw/Images/bakery/bakery_0001.jpg is a named pipe (FIFO)", "expected a regular image"]),
    ("directory", "mit_indoor", _dir_instead_of_image,
     ["raw/Images/casino/casino_0000.jpg is a directory"]),
    ("decompression_bomb", "image_folder", _bomb_instead_of_image,
     ["refusing image", "raw/train/bee/1.png", "900000000 pixels", "decompression bomb"]),
    ("non_utf8_list", "mit_indoor", _non_utf8_line,
     ["raw/TestImages.txt is not UTF-8 text: byte 0xff on line 2"]),
    ("list_climbs_out", "mit_indoor",
     lambda r: _append_line(r / "TrainImages.txt", "../TrainImages.txt"),
     ["raw/TrainImages.txt has a malformed line '../TrainImages.txt'"]),
]  # fmt: skip


@pytest.mark.timeout(120)  # on main, the FIFO blocked `prepare` in Image.open forever
@pytest.mark.parametrize(("source", "damage", "fragments"), [c[1:] for c in NOT_IMAGES],
                         ids=[c[0] for c in NOT_IMAGES])  # fmt: skip
def test_what_is_not_an_image_file_is_one_line(
    tmp_path, monkeypatch, capsys, source, damage, fragments
):
    _refused_after_damage(tmp_path, monkeypatch, capsys, source, damage, fragments)


# ---------------------------------------------------------------------------------------------
# 7. Non-finite weights: loading the model is an error naming the file and the tensor
# ---------------------------------------------------------------------------------------------


def _model_file(path: Path, poison: Callable[[dict], None] | None) -> Path:
    from pipeline.core.config import ModelSpec

    spec = ModelSpec(arch="small_resnet", widths=[4, 4, 8, 8], blocks=[1, 1, 1, 1])
    model = build_model(spec, 1, 5, 8)
    meta = {"model": spec.model_dump(), "in_chans": 1, "image_size": 8, "classes": list("abcde")}
    if poison is not None:
        with torch.no_grad():
            poison(model.state_dict())
    save_model(model, path, meta)
    return path


def _first_conv(state: dict) -> torch.Tensor:
    return next(v for k, v in state.items() if v.ndim == 4 and k.endswith("weight"))


POISONS = [
    ("nan_conv", lambda s: _first_conv(s).view(-1)[:3].fill_(float("nan")), "3 NaN and 0 inf"),
    ("inf_head", lambda s: s["head.weight"].view(-1)[:1].fill_(float("inf")), "head.weight"),
    ("inf_bn_running_var", lambda s: next(v for k, v in s.items()
                                          if k.endswith("running_var")).fill_(-float("inf")),
     "running_var"),
]  # fmt: skip


@pytest.mark.parametrize(("poison", "fragment"), [c[1:] for c in POISONS],
                         ids=[c[0] for c in POISONS])  # fmt: skip
def test_a_model_with_non_finite_weights_is_refused(tmp_path, poison, fragment):
    path = _model_file(tmp_path / "model.pt", poison)
    with pytest.raises(ArtifactError) as info:
        load_model(path)
    msg = str(info.value)
    assert f"model file {path} has non-finite weights" in msg and fragment in msg, msg


def test_a_finite_model_still_loads(tmp_path):
    model, meta = load_model(_model_file(tmp_path / "model.pt", None))
    assert meta["classes"] == list("abcde") and model.head.weight.shape[0] == 5


def test_attack_on_a_nan_model_exits_2_naming_it(work, capsys):
    """On main this attack exited 0 with accuracy 0.2 and a null Δ."""
    run = paths.readout_id("digits_5to9", "none", 0)
    model = _model_file(work / paths.readout_model(run), POISONS[0][1])
    before = _snapshot(work)
    argv = ["attack", "--kind", "readout", "--target", "digits_5to9", "--backbone", "none"]
    assert main([*argv, "--backbone_seed", "0"]) == 2
    line = _one_error_line(capsys)
    assert str(model.relative_to(work)) in line and "non-finite weights" in line, line
    assert _snapshot(work) == before


# ---------------------------------------------------------------------------------------------
# 8. Resource errors: disk full, read-only, forbidden, file-size limit -> one line naming the
#    path, exit 2, the previous file intact. Simulated (we run as root: chmod does not bite)
#    by raising the OSError a full or read-only disk raises; EFBIG for real under `ulimit -f`.
# ---------------------------------------------------------------------------------------------

FAULTS = {
    "ENOSPC": (errno.ENOSPC, "no space left on device (ENOSPC"),
    "EFBIG": (errno.EFBIG, "file too large for the file-size limit (see `ulimit -f`)"),
    "EROFS": (errno.EROFS, "read-only file system (EROFS"),
    "EACCES": (errno.EACCES, "permission denied (EACCES"),
    "EDQUOT": (errno.EDQUOT, "disk quota exceeded (EDQUOT"),
}


def _fail_after_half(code: int):
    """A write that puts half the bytes on disk, then fails the way the disk would."""

    def write(self, data, *args, **kwargs):
        with open(self, "w") as f:
            f.write(data[: len(data) // 2])
        raise OSError(code, os.strerror(code))

    return write


@pytest.mark.parametrize("fault", list(FAULTS))
def test_atomic_text_write_failure_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, fault):
    code, fragment = FAULTS[fault]
    target = tmp_path / "metrics" / "summary.json"
    atomic_write_text(target, '{"old": 1}\n')
    monkeypatch.setattr(Path, "write_text", _fail_after_half(code))
    with pytest.raises(ResourceError) as info:
        atomic_write_text(target, '{"new": 2, "padding": "' + "x" * 100 + '"}\n')
    msg = str(info.value)
    assert msg.startswith(f"cannot write {target}: ") and fragment in msg, msg
    assert "\n" not in msg and "previous summary.json (if any) is intact" in msg
    assert target.read_text() == '{"old": 1}\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ["summary.json"]


@pytest.mark.parametrize("fault", ["EROFS", "EACCES"])
def test_a_refused_rename_keeps_the_old_torch_file(tmp_path, monkeypatch, fault):
    code, fragment = FAULTS[fault]
    target = tmp_path / "model.pt"
    atomic_torch_save({"w": torch.ones(3)}, target)
    old = target.read_bytes()

    def refuse(src, dst):
        raise OSError(code, os.strerror(code), str(src), None, str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ResourceError) as info:
        atomic_torch_save({"w": torch.zeros(3)}, target)
    assert str(info.value).startswith(f"cannot write {target}: ") and fragment in str(info.value)
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_torch_file_write_failure_inside_torch_is_one_line(tmp_path, monkeypatch):
    """torch's writer wraps a failed write in a RuntimeError (measured: "unexpected pos ...",
    the OSError as its context); the errno is found behind it."""
    target = tmp_path / "ckpt.pt"
    atomic_torch_save({"w": torch.ones(3)}, target)
    old = target.read_bytes()

    def save(obj, f):
        f.write(b"PK\x03\x04 half an archive")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            # As torch does: the OSError is only the context (no ``from``).
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")  # noqa: B904

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(ResourceError) as info:
        atomic_torch_save({"w": torch.zeros(3)}, target)
    assert str(info.value).startswith(f"cannot write {target}: no space left on device (ENOSPC)")
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def _run_limited(argv: list[str], cwd: Path, limit_bytes: int) -> subprocess.CompletedProcess:
    """``argv`` under ``ulimit -f`` (RLIMIT_FSIZE): a real EFBIG, whoever runs the test."""

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        argv, cwd=cwd, env=ENV, capture_output=True, text=True, preexec_fn=limit, timeout=300
    )


def test_real_file_size_limit_in_prepare_is_one_line_and_keeps_the_old_shards(work):
    before = _snapshot(work)
    proc = _run_limited(
        [sys.executable, "-m", "pipeline", "prepare", "--dataset", "digits_0to4"],
        work, 20_000,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: cannot write the outputs of prepare"), lines[0]
    assert "artifacts/prepared/digits_0to4" in lines[0] and "(EFBIG" in lines[0], lines[0]
    assert _snapshot(work) == before


def test_real_file_size_limit_in_torch_save_names_the_file(tmp_path):
    target = tmp_path / "model.pt"
    atomic_torch_save({"w": torch.ones(3)}, target)
    old = target.read_bytes()
    code = (
        "import sys, torch\n"
        "from pipeline.core.errors import ResourceError\n"
        "from pipeline.models.torch_files import atomic_torch_save\n"
        "try:\n"
        f"    atomic_torch_save({{'w': torch.zeros(100000)}}, {str(target)!r})\n"
        "except ResourceError as e:\n"
        "    print(e)\n"
    )
    proc = _run_limited([sys.executable, "-c", code], tmp_path, 20_000)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"cannot write {target}: file too large"), proc.stdout
    assert "(EFBIG" in proc.stdout
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


@pytest.mark.parametrize("fault", ["ENOSPC", "EROFS"])
def test_prepare_on_a_full_or_read_only_disk_is_one_line(work, capsys, monkeypatch, fault):
    code, fragment = FAULTS[fault]
    before = _snapshot(work)

    def refuse(self, *args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tarfile.TarFile, "addfile", refuse)
    assert main(["prepare", "--dataset", "digits_5to9"]) == 2
    line = _one_error_line(capsys)
    assert "the outputs of prepare" in line and "artifacts/prepared/digits_5to9" in line, line
    assert fragment in line, line
    assert _snapshot(work) == before


def test_shard_tool_on_a_full_disk_names_its_output(work, capsys, monkeypatch):
    out = work / "myshards"
    assert main(["shard", "digits", "--out", str(out), "--option", "image_size=8"]) == 0
    capsys.readouterr()
    before = _snapshot(work)

    def refuse(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "addfile", refuse)
    assert main(["shard", "digits", "--out", str(out), "--option", "image_size=8"]) == 2
    line = _one_error_line(capsys)
    assert f"cannot write {out}: no space left on device (ENOSPC)" in line, line
    assert "previous shard set (if any) is intact" in line
    assert _snapshot(work) == before


def test_a_read_only_run_folder_is_one_line_from_the_cli(work, capsys, monkeypatch):
    """Outside any writer that names its file: the OSError's own file is named."""
    import pipeline.core.runlock as runlock

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", "artifacts/runs/prepare")

    monkeypatch.setattr(runlock, "hold_run_lock", refuse)
    assert main(["prepare", "--dataset", "digits_5to9"]) == 2
    line = _one_error_line(capsys)
    assert line == "error: cannot write artifacts/runs/prepare: read-only file system (EROFS)"


def test_a_denied_read_is_not_blamed_on_the_outputs(work, capsys, monkeypatch):
    import pipeline.stages.prepare as prepare

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "data/secret.jpg")

    monkeypatch.setattr(prepare, "open_source", refuse)
    assert main(["prepare", "--dataset", "digits_5to9"]) == 2
    line = _one_error_line(capsys)
    assert line == "error: cannot access data/secret.jpg: permission denied (EACCES)", line


def test_other_os_errors_are_not_dressed_as_resource_errors(work, monkeypatch):
    import pipeline.stages.prepare as prepare

    def boom(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(prepare, "open_source", boom)
    with pytest.raises(OSError, match="Input/output error"):
        main(["prepare", "--dataset", "digits_5to9"])


def test_sources_open_unchanged_on_good_trees(tmp_path):
    """The new checks refuse nothing on the good fakes (every source, every split)."""
    for source, (make, splits) in SOURCES.items():
        (tmp_path / source).mkdir()
        root = make(tmp_path / source)
        for split in splits:
            dataset = open_source(source, root, split)
            assert len(dataset) > 0 and len(set(dataset.targets)) > 1
            image, label = dataset[0]
            assert image.mode == "RGB" and 0 <= label < dataset.num_classes
