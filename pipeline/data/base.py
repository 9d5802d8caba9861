"""The one dataset interface every source returns: map-style, ``(PIL.Image, int label)`` pairs.

Sources differ only in how they find images on disk; everything downstream (transforms, shards,
loaders, readout, attacks) relies on the attributes defined here and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from pipeline.core.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


class LabeledDataset(Dataset):
    """Base of all sources: ``classes[i]`` names label ``i``; ``targets`` lists labels by index.

    ``targets`` lets callers stratify, count or shard labels without decoding a single image.
    """

    name: str
    classes: list[str]
    channels: int
    targets: list[int]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, samples={len(self)}, "
            f"classes={self.num_classes}, channels={self.channels})"
        )


def _mode(channels: int) -> str:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return "L" if channels == 1 else "RGB"


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def load_image(path: str | Path, channels: int = 3) -> Image.Image:
    """Open and fully decode one image, so a truncated file fails here and names itself."""
    try:
        with Image.open(path) as img:
            return img.convert(_mode(channels))
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {path}") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot read image {path}: {one_line(e)}") from None


class FileListDataset(LabeledDataset):
    """Images listed by path and decoded lazily, so large sources cost one list in memory."""

    def __init__(
        self,
        name: str,
        samples: Sequence[tuple[str | Path, int]],
        classes: Sequence[str],
        channels: int = 3,
    ):
        _mode(channels)
        self.name = name
        self.paths = [str(p) for p, _ in samples]
        self.targets = [int(t) for _, t in samples]
        self.classes = list(classes)
        self.channels = channels

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return load_image(self.paths[index], self.channels), self.targets[index]


class ArrayDataset(LabeledDataset):
    """Images held as one uint8 array (``N,H,W`` or ``N,H,W,3``): small sources decoded once."""

    def __init__(
        self,
        name: str,
        images: np.ndarray,
        targets: Sequence[int],
        classes: Sequence[str],
    ):
        if (
            images.dtype != np.uint8
            or images.ndim not in (3, 4)
            or images.shape[3:] not in ((), (3,))
        ):
            raise ValueError(f"images must be uint8 N,H,W[,3], got {images.dtype} {images.shape}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        self.name = name
        self.images = images
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)
        self.channels = 1 if images.ndim == 3 else 3

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), self.targets[index]


def require_dir(path: Path, message: str) -> Path:
    """The common first check of every on-disk source: one line saying where and what layout."""
    if not path.is_dir():
        raise DatasetError(message)
    return path


def list_images(folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files directly in ``folder``, sorted so sample order is the same on every machine.

    ``os.scandir`` avoids one stat per file, which matters for ImageNet's 1.28 M images.
    """
    exts = tuple(e.lower() for e in extensions)
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if e.is_file() and e.name.lower().endswith(exts)]
    return [folder / n for n in sorted(names)]
