"""Class-folder datasets: ``<root>/<split>/<class>/<images>`` for a user's own target dataset.

ImageNet uses the same scanner; only the split names and the error text differ.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.base import IMAGE_EXTENSIONS, FileListDataset, list_images

KNOWN_SPLITS = ("train", "val", "test")


def _subdirs(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def scan_class_folders(
    name: str,
    root: Path,
    split: str,
    splits: Sequence[str],
    layout: str,
    max_per_class: int | None = None,
    channels: int = 3,
) -> FileListDataset:
    """Samples of ``root/split``, labelled by the sorted union of class folders of all ``splits``.

    Taking the union means a class missing from one split cannot shift the label ids of the
    others. ``max_per_class`` keeps the first images (sorted by name) for quick runs.
    """
    if max_per_class is not None and (
        isinstance(max_per_class, bool) or not isinstance(max_per_class, int) or max_per_class < 1
    ):
        raise ConfigError(f"{name} max_per_class must be a positive integer; got {max_per_class!r}")
    if channels not in (1, 3):
        raise ConfigError(f"{name} channels must be 1 or 3; got {channels!r}")
    split_dir = root / split
    if not split_dir.is_dir():
        raise DatasetError(f"{name} split {split!r} not found at {split_dir}: {layout}")
    present = [s for s in dict.fromkeys([*splits, split]) if (root / s).is_dir()]
    classes = sorted({c for s in present for c in _subdirs(root / s)})
    own = _subdirs(split_dir)
    if not own:
        loose = (
            " (it holds images directly; sort them into class folders)"
            if list_images(split_dir, IMAGE_EXTENSIONS)
            else ""
        )
        raise DatasetError(f"no class folders in {split_dir}{loose}: {layout}")
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for c in own:
        files = list_images(split_dir / c)
        if not files:  # it would be a class (a head output) that no sample can ever teach
            raise DatasetError(
                f"class folder {split_dir / c} holds no image files "
                f"({', '.join(IMAGE_EXTENSIONS)}): add images or remove the folder; {layout}"
            )
        samples += [(f, index[c]) for f in files[:max_per_class]]
    if not samples:
        raise DatasetError(f"no images in the class folders of {split_dir}: {layout}")
    return FileListDataset(name, samples, classes, channels=channels)


def open_image_folder(
    root: str | Path,
    split: str = "train",
    *,
    channels: int = 3,
    max_per_class: int | None = None,
) -> FileListDataset:
    """A generic target dataset; any split name works, classes are the folder names."""
    if not isinstance(split, str) or not split or "/" in split:
        raise ConfigError(f"image_folder split must be a folder name; got {split!r}")
    root = Path(root).expanduser()
    layout = f"expected {root}/<split>/<class>/<image files> (e.g. {root}/train/cat/001.jpg)"
    if not root.is_dir():
        raise DatasetError(f"image folder dataset not found at {root}: {layout}")
    return scan_class_folders(
        "image_folder", root, split, KNOWN_SPLITS, layout, max_per_class, channels
    )
