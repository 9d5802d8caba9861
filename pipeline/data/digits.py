"""The embedded default dataset: scikit-learn's bundled 8×8 handwritten digits (no download).

Class subsets make a transfer pair out of one dataset: pretrain on digits 0–4, transfer to 5–9.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from pipeline.core.errors import ConfigError
from pipeline.data.base import ArrayDataset

SPLITS = ("train", "test")


def split_indices(
    labels: np.ndarray, test_fraction: float, split_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices over all ten digits.

    The split is made before class selection, so an image is in the same split whichever subset
    of classes a stage asks for (pretraining and transfer target never trade test images).
    """
    index = np.arange(len(labels))
    # scikit-learn is imported here, not at module level: stages that only read shards skip it.
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        index, test_size=test_fraction, stratify=labels, random_state=split_seed
    )
    return np.sort(train), np.sort(test)


def open_digits(
    root: str | None = None,
    split: str = "train",
    *,
    classes: Sequence[int] | None = None,
    image_size: int = 8,
    test_fraction: float = 0.25,
    split_seed: int = 0,
) -> ArrayDataset:
    """Digits as grayscale PIL images, pixels 0..16 scaled to 0..255; ``root`` is ignored.

    ``classes`` keeps those digits and relabels them 0..k-1 in the given order; ``image_size``
    upsamples (bilinear) to a square so small convnets get more than 8×8 pixels.
    """
    del root  # bundled with scikit-learn
    if split not in SPLITS:
        raise ConfigError(f"digits split must be one of {', '.join(SPLITS)}; got {split!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ConfigError(f"digits test_fraction must be in (0, 1); got {test_fraction}")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ConfigError(f"digits image_size must be a positive integer; got {image_size!r}")
    keep = list(range(10)) if classes is None else [_digit(c) for c in classes]
    if not keep or len(set(keep)) != len(keep):
        raise ConfigError(f"digits classes must be a non-empty list without repeats; got {classes}")

    from sklearn.datasets import load_digits

    bunch = load_digits()
    labels = np.asarray(bunch.target)
    train, test = split_indices(labels, float(test_fraction), int(split_seed))
    chosen = train if split == "train" else test
    relabel = {digit: new for new, digit in enumerate(keep)}
    chosen = chosen[np.isin(labels[chosen], keep)]

    pixels = np.clip(np.rint(bunch.images[chosen] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    if image_size != pixels.shape[-1]:
        pixels = np.stack(
            [
                np.asarray(
                    Image.fromarray(p).resize((image_size, image_size), Image.Resampling.BILINEAR)
                )
                for p in pixels
            ]
        )
    targets = [relabel[int(d)] for d in labels[chosen]]
    dataset = ArrayDataset("digits", pixels, targets, [str(d) for d in keep])
    dataset.indices = chosen  # positions in load_digits(): traceability and split checks
    return dataset


def _digit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value <= 9:
        raise ConfigError(f"digits classes must be digits 0..9; got {value!r}")
    return int(value)
