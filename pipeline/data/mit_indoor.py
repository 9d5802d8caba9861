"""MIT Indoor 67 with the official 80/20-per-class split from ``TrainImages.txt``/``TestImages.txt``."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.base import FileListDataset, check_disjoint, one_line

LAYOUT = (
    "expected Images/<category>/<file>.jpg, TrainImages.txt and TestImages.txt "
    "(lines like airport_inside/airport_inside_0001.jpg)"
)
LIST_FILES = {"train": "TrainImages.txt", "test": "TestImages.txt"}


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path} not found: {LAYOUT}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {one_line(e)}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DatasetError(
            f"{path} is not UTF-8 text: byte 0x{raw[e.start]:02x} on line {line}: {LAYOUT}"
        ) from None
    entries = [e for e in (line.strip() for line in text.splitlines()) if e]
    # One category folder and one file name: no absolute paths, no climbing out of Images/.
    bad = [e for e in entries if len(Path(e).parts) != 2 or {".", ".."} & set(Path(e).parts)]
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
    check_disjoint({LIST_FILES[s]: entries for s, entries in lists.items()}, str(root), repr)
    classes = sorted({Path(e).parts[0] for entries in lists.values() for e in entries})
    index = {c: i for i, c in enumerate(classes)}
    samples = [(root / "Images" / e, index[Path(e).parts[0]]) for e in lists[split]]
    return FileListDataset("mit_indoor", samples, classes)
