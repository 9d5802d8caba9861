"""Oxford Flowers 102 in its release layout; ``test`` is the official 6 149-image test split."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.base import FileListDataset, check_disjoint
from pipeline.data.matfiles import load_mat, mat_ints

LAYOUT = (
    "expected jpg/image_00001.jpg..., imagelabels.mat (labels 1..102) and setid.mat "
    "(trnid, valid, tstid)"
)
SPLIT_FIELDS = {"train": ("trnid",), "val": ("valid",), "test": ("tstid",)}


def open_flowers102(
    root: str | Path, split: str = "train", *, include_valid: bool = False
) -> FileListDataset:
    """Images of ``setid.mat``'s split; ``include_valid`` adds the 1 020 validation images to
    ``train``, as papers that train on train+val do. Classes are named by their label, ``"1"``..
    """
    if split not in SPLIT_FIELDS:
        raise ConfigError(f"flowers102 split must be one of train, val, test; got {split!r}")
    if not isinstance(include_valid, bool):
        raise ConfigError(f"flowers102 include_valid must be true or false; got {include_valid!r}")
    root = Path(root).expanduser()
    if not (root / "jpg").is_dir():
        raise DatasetError(f"Oxford Flowers 102 not found at {root}: {LAYOUT}")
    label_file, setid_file = root / "imagelabels.mat", root / "setid.mat"
    labels = mat_ints(
        load_mat(label_file, ["labels"], LAYOUT)["labels"], f"{label_file} field labels"
    )
    setid = load_mat(setid_file, ["trnid", "valid", "tstid"], LAYOUT)
    split_ids = {
        f: mat_ints(setid[f], f"{setid_file} field {f}") for f in ("trnid", "valid", "tstid")
    }
    check_disjoint(split_ids, str(setid_file), lambda i: f"image id {i} (jpg/image_{i:05d}.jpg)")
    fields = SPLIT_FIELDS[split] + (("valid",) if split == "train" and include_valid else ())
    ids = sorted(i for field in fields for i in split_ids[field])
    if not labels or min(labels) < 1:
        raise DatasetError(f"{label_file} has labels outside 1..102: {LAYOUT}")
    # Every label up to the largest names a class (a head output): one without images is an error.
    missing = sorted(set(range(1, max(labels) + 1)) - set(labels))
    if missing:
        raise DatasetError(
            f"{label_file} has no image with label {missing[0]} but labels up to {max(labels)}: "
            f"every class 1..N needs images; {LAYOUT}"
        )
    bad = [i for i in ids if not 1 <= i <= len(labels)]
    if bad:
        raise DatasetError(
            f"{setid_file} lists image id {bad[0]} but imagelabels.mat has "
            f"{len(labels)} labels: {LAYOUT}"
        )
    samples = [(root / "jpg" / f"image_{i:05d}.jpg", labels[i - 1] - 1) for i in ids]
    classes = [str(c) for c in range(1, max(labels) + 1)]
    return FileListDataset("flowers102", samples, classes)
