"""The registry of dataset sources: config names a source, this module finds its opener.

Options are checked against each opener's keyword-only parameters here, so a typo in a params
file is a ``ConfigError`` naming the allowed options rather than a ``TypeError`` deep inside.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError
from pipeline.data.base import LabeledDataset
from pipeline.data.cifar10 import open_cifar10
from pipeline.data.digits import open_digits
from pipeline.data.flowers102 import open_flowers102
from pipeline.data.image_folder import open_image_folder
from pipeline.data.imagenet import open_imagenet
from pipeline.data.mit_indoor import open_mit_indoor
from pipeline.data.stanford_dogs import open_stanford_dogs

Opener = Callable[..., LabeledDataset]

SOURCES: dict[str, Opener] = {
    "digits": open_digits,
    "cifar10": open_cifar10,
    "flowers102": open_flowers102,
    "stanford_dogs": open_stanford_dogs,
    "mit_indoor": open_mit_indoor,
    "imagenet": open_imagenet,
    "image_folder": open_image_folder,
}


def available_sources() -> list[str]:
    return sorted(SOURCES)


def source_options(name: str) -> dict[str, Any]:
    """The options a source accepts, with their defaults (for help text and config checks)."""
    opener = _opener(name)
    params = inspect.signature(opener).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def open_source(
    name: str, root: str | Path | None = None, split: str = "train", **options: Any
) -> LabeledDataset:
    """Open ``split`` of source ``name`` under ``root``; ``options`` are source-specific."""
    allowed = source_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        listing = ", ".join(sorted(allowed)) or "none"
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for source {name!r}; allowed: {listing}"
        )
    if root is None and name != "digits":
        raise ConfigError(f"source {name!r} needs a root directory")
    return _opener(name)(root, split, **options)


def _opener(name: str) -> Opener:
    try:
        return SOURCES[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown dataset source {name!r}; allowed: {', '.join(available_sources())}"
        ) from None
