"""MIT Indoor 67 with the official 80/20-per-class split from ``TrainImages.txt``/``TestImages.txt``."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.base import FileListDataset

LAYOUT = (
    "expected Images/<category>/<file>.jpg, TrainImages.txt and TestImages.txt "
    "(lines like airport_inside/airport_inside_0001.jpg)"
)
LIST_FILES = {"train": "TrainImages.txt", "test": "TestImages.txt"}


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path} not found: {LAYOUT}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    entries = [line for line in lines if line]
    bad = [e for e in entries if len(Path(e).parts) != 2]
    if bad:
        raise DatasetError(f"{path} has a malformed line {bad[0]!r}: {LAYOUT}")
    return entries


def open_mit_indoor(root: str | Path, split: str = "train") -> FileListDataset:
    """Classes are the sorted category names found in both lists, so splits share label ids."""
    if split not in LIST_FILES:
        raise ConfigError(f"mit_indoor split must be one of train, test; got {split!r}")
    root = Path(root).expanduser()
    if not (root / "Images").is_dir():
        raise DatasetError(f"MIT Indoor 67 not found at {root}: {LAYOUT}")
    lists = {s: _read_list(root / name) for s, name in LIST_FILES.items()}
    classes = sorted({Path(e).parts[0] for entries in lists.values() for e in entries})
    index = {c: i for i, c in enumerate(classes)}
    samples = [(root / "Images" / e, index[Path(e).parts[0]]) for e in lists[split]]
    return FileListDataset("mit_indoor", samples, classes)
