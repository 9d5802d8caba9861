"""CIFAR-10 from the official python-pickle release (``cifar-10-batches-py``), read into memory."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.base import ArrayDataset, one_line

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
DEFAULT_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
LAYOUT = (
    "expected data_batch_1..5 and test_batch "
    f"(python pickle version, {FOLDER}), given as that folder or its parent"
)


def find_folder(root: str | Path) -> Path:
    """Accept the batches folder itself or the directory the archive was extracted into."""
    root = Path(root).expanduser()
    for candidate in (root, root / FOLDER):
        if (candidate / "test_batch").is_file() or (candidate / "data_batch_1").is_file():
            return candidate
    raise DatasetError(f"CIFAR-10 not found at {root}: {LAYOUT}")


# The only globals the release's pickles reference: numpy's array reconstruction (a dict of
# b'data' ndarray, b'labels'/b'filenames' lists and b'batch_label' bytes). ``numpy.core`` is
# the name in the release (numpy 1), ``numpy._core`` the one numpy 2 writes.
ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


class _BatchUnpickler(pickle.Unpickler):
    """Refuses every global outside :data:`ALLOWED_GLOBALS`, so a planted file runs no code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name} (a CIFAR-10 batch holds only arrays and lists)"
            )
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"CIFAR-10 batch missing: {path}: {LAYOUT}")
    try:
        with path.open("rb") as f:
            return _BatchUnpickler(f, encoding="bytes").load()
    except Exception as e:  # a truncated or foreign file can raise almost anything
        raise DatasetError(
            f"cannot read CIFAR-10 batch {path}: {type(e).__name__}: {one_line(e)}"
        ) from None


def _key(batch: dict, name: str):
    for key in (name.encode(), name):
        if key in batch:
            return batch[key]
    raise KeyError(name)


def _int_label(value) -> int | None:
    """An integer label, or None for anything else (a float with a fraction, NaN, text)."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def check_pixels(data: np.ndarray, path: Path) -> None:
    """Pixels must be integers in 0..255: casting floats in [0, 1] to uint8 gives black images,
    casting larger integers wraps them modulo 256."""
    if data.dtype == np.uint8:
        return
    span = f" spanning {data.min()}..{data.max()}" if data.size and data.dtype.kind in "iuf" else ""
    if data.dtype.kind not in "iu":
        raise DatasetError(
            f"CIFAR-10 batch {path}: data is {data.dtype}{span}; expected uint8 pixels 0..255 "
            "(pixels of another type or scale are not converted)"
        )
    if data.size and (data.min() < 0 or data.max() > 255):
        raise DatasetError(
            f"CIFAR-10 batch {path}: data is {data.dtype}{span}; expected uint8 pixels 0..255"
        )


def read_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """One pickle batch as ``(N, 32, 32, 3)`` uint8 images and integer labels.

    Integer pixels of a wider type are accepted when they lie in 0..255 (the cast is exact);
    anything else is refused, naming the file, its dtype and its range.
    """
    batch = _load_pickle(path)
    if not isinstance(batch, dict):
        raise DatasetError(
            f"malformed CIFAR-10 batch {path}: expected a dict, got {type(batch).__name__}"
        )
    try:
        data = np.asarray(_key(batch, "data"))
        raw_labels = list(_key(batch, "labels"))
    except (KeyError, TypeError, ValueError):
        raise DatasetError(
            f"malformed CIFAR-10 batch {path}: expected a dict with b'data' (N x 3072 uint8) "
            "and b'labels'"
        ) from None
    labels = [_int_label(x) for x in raw_labels]
    if None in labels:
        i = labels.index(None)
        raise DatasetError(
            f"CIFAR-10 batch {path}: label {i} is {raw_labels[i]!r}; expected integers 0..9"
        )
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != data.shape[0]:
        raise DatasetError(
            f"malformed CIFAR-10 batch {path}: data has shape {data.shape} with {len(labels)} "
            "labels; expected N x 3072 uint8 and N labels"
        )
    check_pixels(data, path)
    images = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_classes(folder: Path) -> list[str]:
    """Names from ``batches.meta`` when present; the canonical names otherwise."""
    meta = folder / "batches.meta"
    if not meta.is_file():
        return list(DEFAULT_CLASSES)
    try:
        names = _key(_load_pickle(meta), "label_names")
    except (KeyError, TypeError):
        raise DatasetError(f"malformed CIFAR-10 meta {meta}: expected b'label_names'") from None
    try:
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"malformed CIFAR-10 meta {meta}: a label name is not UTF-8 ({one_line(e)})"
        ) from None
    except TypeError:
        raise DatasetError(f"malformed CIFAR-10 meta {meta}: expected b'label_names'") from None


def open_cifar10(root: str | Path, split: str = "train") -> ArrayDataset:
    """The 50 000 training or 10 000 test images as RGB PIL images, labels 0..9."""
    if split not in ("train", "test"):
        raise ConfigError(f"cifar10 split must be one of train, test; got {split!r}")
    folder = find_folder(root)
    parts = [read_batch(folder / b) for b in (TRAIN_BATCHES if split == "train" else TEST_BATCHES)]
    images = np.concatenate([p[0] for p in parts])
    labels = [label for p in parts for label in p[1]]
    classes = read_classes(folder)
    if labels and not 0 <= min(labels) <= max(labels) < len(classes):
        raise DatasetError(
            f"CIFAR-10 labels in {folder} span {min(labels)}..{max(labels)} "
            f"but batches.meta names {len(classes)} classes"
        )
    return ArrayDataset("cifar10", images, labels, classes)
