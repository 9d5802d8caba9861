"""Stanford Dogs (120 breeds) in its release layout, split by the official ``lists/*.mat``."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.base import FileListDataset, check_disjoint
from pipeline.data.matfiles import load_mat, mat_ints, mat_strings

LAYOUT = (
    "expected Images/<wnid-breed>/<file>.jpg and lists/train_list.mat, lists/test_list.mat "
    "(fields file_list, labels 1..120)"
)
_WNID = re.compile(r"^n\d+-")


def _read_list(root: Path, split: str) -> list[tuple[str, int]]:
    path = root / "lists" / f"{split}_list.mat"
    fields = load_mat(path, ["file_list", "labels"], LAYOUT)
    files = mat_strings(fields["file_list"])
    labels = mat_ints(fields["labels"], f"{path} field labels")
    if len(files) != len(labels):
        raise DatasetError(f"{path} has {len(files)} files but {len(labels)} labels: {LAYOUT}")
    if labels and min(labels) < 1:
        raise DatasetError(f"{path} has labels below 1: {LAYOUT}")
    bad = [f for f in files if len(Path(f).parts) != 2 or {".", ".."} & set(Path(f).parts)]
    if bad:  # an entry must name a file of one breed folder under Images/
        raise DatasetError(f"{path} has a malformed file_list entry {bad[0]!r}: {LAYOUT}")
    return list(zip(files, labels))


def open_stanford_dogs(root: str | Path, split: str = "train") -> FileListDataset:
    """Classes are breed names (the folder name without its WordNet id), ordered by label.

    Both lists are read so train and test agree on the class count and names.
    """
    if split not in ("train", "test"):
        raise ConfigError(f"stanford_dogs split must be one of train, test; got {split!r}")
    root = Path(root).expanduser()
    if not (root / "Images").is_dir():
        raise DatasetError(f"Stanford Dogs not found at {root}: {LAYOUT}")
    lists = {s: _read_list(root, s) for s in ("train", "test")}
    check_disjoint(
        {f"{s}_list.mat": [file for file, _ in entries] for s, entries in lists.items()},
        str(root / "lists"),
        repr,
    )
    names: dict[int, str] = {}
    for file, label in lists["train"] + lists["test"]:
        names.setdefault(label, _WNID.sub("", Path(file).parent.name) or str(label))
    missing = sorted(set(range(1, max(names, default=0) + 1)) - set(names))
    if missing:  # every label up to the largest is a class (a head output) and needs images
        raise DatasetError(
            f"{root / 'lists'}: no file has label {missing[0]} but labels go up to {max(names)}: "
            f"every class 1..N needs images; {LAYOUT}"
        )
    classes = [names[label] for label in range(1, max(names, default=0) + 1)]
    samples = [(root / "Images" / file, label - 1) for file, label in lists[split]]
    return FileListDataset("stanford_dogs", samples, classes)
