"""Helpers and constants for the fake dataset trees (imported by conftest and the tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
