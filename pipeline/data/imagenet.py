"""ImageNet-1k as class folders (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``)."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.base import FileListDataset
from pipeline.data.image_folder import scan_class_folders

SPLITS = ("train", "val")
LAYOUT = (
    "expected train/<wnid>/*.JPEG and val/<wnid>/*.JPEG class folders "
    "(val sorted into wnid folders, e.g. with valprep.sh)"
)


def open_imagenet(
    root: str | Path, split: str = "train", *, max_per_class: int | None = None
) -> FileListDataset:
    """Classes are the sorted WordNet ids, so label ids match torchvision's ImageFolder order.

    ``max_per_class`` takes the first images per class: a deterministic subset for smoke runs.
    """
    if split not in SPLITS:
        raise ConfigError(f"imagenet split must be one of train, val; got {split!r}")
    root = Path(root).expanduser()
    if not (root / split).is_dir():
        raise DatasetError(f"ImageNet not found at {root}: {LAYOUT}")
    return scan_class_folders("imagenet", root, split, SPLITS, LAYOUT, max_per_class)
