"""Helpers and constants for the fake dataset trees (imported by conftest and the tests)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


def write_image(path: Path, seed: int, size: tuple[int, int] = (12, 10)) -> Path:
    """A random RGB image; the format follows the suffix (.jpg, .JPEG, .png)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def cell_array(strings: list[str]) -> np.ndarray:
    """A MATLAB cell column of strings, as Stanford Dogs stores ``file_list``."""
    cells = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        cells[i, 0] = np.array([s])
    return cells


CIFAR_NAMES = [f"name{i}" for i in range(10)]

FLOWER_LABELS = [1, 2, 3, 1, 2, 3, 1, 2, 3, 3]  # image_00001..00010
FLOWER_SETID = {"trnid": [1, 2, 3], "valid": [4, 5, 6], "tstid": [7, 8, 9, 10]}
DOG_BREEDS = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog"]
INDOOR_CLASSES = ["airport_inside", "bakery", "casino"]
WNIDS = ["n01440764", "n01443537"]


def make_cifar_root(tmp_path: Path) -> Path:
    """``<tmp>/cifar-10-batches-py`` with 5×4 train and 6 test images, pickled like the release."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": 4 for i in range(1, 6)} | {"test_batch": 6}
    for name, n in batches.items():
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(x) for x in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f)
    meta = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump(meta, f)
    return tmp_path


def make_flowers_root(tmp_path: Path) -> Path:
    root = tmp_path / "flowers"
    for i in range(1, len(FLOWER_LABELS) + 1):
        write_image(root / "jpg" / f"image_{i:05d}.jpg", seed=i)
    scipy.io.savemat(root / "imagelabels.mat", {"labels": np.array([FLOWER_LABELS])})
    scipy.io.savemat(root / "setid.mat", {k: np.array([v]) for k, v in FLOWER_SETID.items()})
    return root


def make_dogs_root(tmp_path: Path) -> Path:
    root = tmp_path / "dogs"
    lists = {"train": [], "test": []}
    for label, breed in enumerate(DOG_BREEDS, start=1):
        for j in range(3):
            rel = f"{breed}/{breed.split('-')[0]}_{j}.jpg"
            write_image(root / "Images" / rel, seed=10 * label + j)
            lists["train" if j < 2 else "test"].append((rel, label))
    (root / "lists").mkdir()
    for split, entries in lists.items():
        scipy.io.savemat(
            root / "lists" / f"{split}_list.mat",
            {
                "file_list": cell_array([e[0] for e in entries]),
                "annotation_list": cell_array([e[0][:-4] for e in entries]),
                "labels": np.array([[e[1]] for e in entries], dtype=np.uint8),
            },
        )
    return root


def make_indoor_root(tmp_path: Path) -> Path:
    root = tmp_path / "indoor"
    train, test = [], []
    for k, c in enumerate(INDOOR_CLASSES):
        for j in range(3):
            rel = f"{c}/{c}_{j:04d}.jpg"
            write_image(root / "Images" / rel, seed=10 * k + j)
            (train if j < 2 else test).append(rel)
    (root / "TrainImages.txt").write_text("\n".join(train) + "\n")
    (root / "TestImages.txt").write_text("\n".join(test) + "\n")
    return root


def make_imagenet_root(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet"
    for k, wnid in enumerate(WNIDS):
        for j in range(3):
            write_image(root / "train" / wnid / f"{wnid}_{j}.JPEG", seed=100 * k + j)
        write_image(root / "val" / wnid / f"ILSVRC2012_val_{k:08d}.JPEG", seed=1000 + k)
    return root


def make_folder_root(tmp_path: Path) -> Path:
    """A user's target dataset; ``test`` lacks class ``cat`` to check label ids stay shared."""
    root = tmp_path / "mine"
    for c in ("ant", "bee", "cat"):
        for j in range(2):
            write_image(root / "train" / c / f"{j}.png", seed=j)
    for c in ("ant", "bee"):
        write_image(root / "test" / c / "x.jpg", seed=7)
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    return root
