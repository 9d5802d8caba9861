"""The one dataset interface every source returns: map-style, ``(PIL.Image, int label)`` pairs.

Sources differ only in how they find images on disk; everything downstream (transforms, shards,
loaders, readout, attacks) relies on the attributes defined here and nothing else.
"""

from __future__ import annotations

import os
import stat
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


# What a path that should be an image file can be instead (``os.stat``'s file types).
_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _open_regular(path: str | Path):
    """The file at ``path``, opened for reading only if it is a regular file: a FIFO listed as
    an image would block ``Image.open`` forever, a device would be read without end."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {path}") from None
    except OSError as e:
        raise DatasetError(f"cannot read image {path}: {one_line(e)}") from None
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), None)
    if kind is None and not stat.S_ISREG(mode):
        kind = "not a regular file"
    if kind is not None:
        raise DatasetError(f"image {path} is {kind}: expected a regular image file")
    # Non-blocking, and checked again on the open file: it may have been swapped since the stat.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DatasetError(f"image {path} is not a regular file: expected a regular image file")
    return os.fdopen(fd, "rb")


def to_eight_bit(img: Image.Image, path: str | Path) -> Image.Image:
    """16-bit gray pixels to 8 bits by keeping the high byte (``v >> 8``), as Pillow itself does
    for 16-bit RGB; Pillow's ``convert`` would instead clip every value above 255 to white.

    Mode ``I`` (32-bit integers, what some Pillow versions give for 16-bit files) is read as
    16-bit when its values lie in 0..65535 and refused otherwise; float pixels (mode ``F``) have
    no known scale and are refused. Other modes (palette, LA, CMYK, ...) are left to ``convert``.
    """
    if img.mode in SIXTEEN_BIT_MODES or img.mode == "I":
        pixels = np.asarray(img)
        if img.mode == "I" and pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            raise DatasetError(
                f"image {path} has 32-bit integer pixels spanning {pixels.min()}..{pixels.max()}: "
                "expected 8-bit or 16-bit pixels (0..65535)"
            )
        return Image.fromarray((pixels.astype(np.uint32) >> 8).astype(np.uint8), "L")
    if img.mode == "F":
        raise DatasetError(
            f"image {path} has floating-point pixels (mode F) of unknown scale: "
            "expected 8-bit or 16-bit pixels"
        )
    return img


def load_image(path: str | Path, channels: int = 3) -> Image.Image:
    """Open and fully decode one image, so a truncated file fails here and names itself."""
    target = _mode(channels)
    try:
        with _open_regular(path) as f, Image.open(f) as img:
            return to_eight_bit(img, path).convert(target)
    except Image.DecompressionBombError as e:  # not an OSError: it would be a traceback
        raise DatasetError(f"refusing image {path}: {one_line(e)}") from None
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


def check_disjoint(lists: dict[str, list], where: str, show=str) -> None:
    """Refuse an entry in two of ``lists`` (name -> entries), e.g. in both train and test: it
    would be tested on after being trained on. ``show`` formats the entry for the message."""
    owner: dict = {}
    for name, entries in lists.items():
        for entry in dict.fromkeys(entries):  # a repeat within one list is not an overlap
            if entry in owner:
                raise DatasetError(
                    f"{where}: {show(entry)} is in both {owner[entry]} and {name}: "
                    "a sample must belong to one split"
                )
            owner[entry] = name


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
