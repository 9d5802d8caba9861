"""Tiny fake dataset trees in each source's real on-disk layout (built by data_fakes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fakes import (
    make_cifar_root,
    make_dogs_root,
    make_flowers_root,
    make_folder_root,
    make_imagenet_root,
    make_indoor_root,
)


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """``<tmp>/cifar-10-batches-py`` with 5×4 train and 6 test images, pickled like the release."""
    return make_cifar_root(tmp_path)


@pytest.fixture
def flowers_root(tmp_path: Path) -> Path:
    return make_flowers_root(tmp_path)


@pytest.fixture
def dogs_root(tmp_path: Path) -> Path:
    return make_dogs_root(tmp_path)


@pytest.fixture
def indoor_root(tmp_path: Path) -> Path:
    return make_indoor_root(tmp_path)


@pytest.fixture
def imagenet_root(tmp_path: Path) -> Path:
    return make_imagenet_root(tmp_path)


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """A user's target dataset; ``test`` lacks class ``cat`` to check label ids stay shared."""
    return make_folder_root(tmp_path)
