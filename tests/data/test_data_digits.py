"""The embedded digits source: deterministic stratified split, class subsets, scaling, resizing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import load_digits

from pipeline.core.errors import ConfigError
from pipeline.data import open_source

RAW = load_digits()


def test_split_is_deterministic_disjoint_and_complete():
    train = open_source("digits", None, "train")
    test = open_source("digits", None, "test")
    again = open_source("digits", None, "test")
    np.testing.assert_array_equal(test.indices, again.indices)
    np.testing.assert_array_equal(test.images, again.images)
    assert not set(train.indices) & set(test.indices)
    assert len(train) + len(test) == len(RAW.target) == 1797
    assert len(test) == math.ceil(0.25 * 1797)  # scikit-learn rounds the test size up


def test_split_is_stratified():
    test = open_source("digits", None, "test")
    counts = np.bincount(test.targets, minlength=10)
    expected = np.bincount(RAW.target) * 0.25
    assert np.all(np.abs(counts - expected) <= 1)


def test_test_fraction_and_seed_options_change_the_split():
    default = open_source("digits", None, "test")
    assert len(open_source("digits", None, "test", test_fraction=0.5)) == 899
    other = open_source("digits", None, "test", split_seed=1)
    assert set(other.indices) != set(default.indices)


def test_class_subset_relabels_in_given_order_and_keeps_split():
    full = open_source("digits", None, "train")
    sub = open_source("digits", None, "train", classes=[7, 3])
    assert sub.classes == ["7", "3"] and sub.num_classes == 2
    raw = RAW.target[sub.indices]
    assert set(raw[np.asarray(sub.targets) == 0]) == {7}
    assert set(raw[np.asarray(sub.targets) == 1]) == {3}
    # the subset is exactly the full split's images of those digits: no test image leaks in
    assert set(sub.indices) == {i for i in full.indices if RAW.target[i] in (3, 7)}


def test_pretrain_and_transfer_subsets_are_disjoint():
    pre = open_source("digits", None, "train", classes=[0, 1, 2, 3, 4])
    target = open_source("digits", None, "train", classes=[5, 6, 7, 8, 9])
    assert not set(pre.indices) & set(target.indices)
    assert pre.targets.count(0) == np.sum(RAW.target[pre.indices] == 0)
    assert set(target.targets) == {0, 1, 2, 3, 4}


def test_pixels_scaled_to_255_grayscale():
    ds = open_source("digits", None, "train")
    img, _ = ds[0]
    assert img.mode == "L" and img.size == (8, 8) and ds.channels == 1
    expected = np.rint(RAW.images[ds.indices[0]] * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(img), expected)
    assert ds.images.max() == 255 and ds.images.min() == 0


def test_image_size_upsamples():
    ds = open_source("digits", None, "test", image_size=16, classes=[1])
    img, label = ds[0]
    assert img.size == (16, 16) and img.mode == "L" and label == 0
    small = open_source("digits", None, "test", classes=[1])
    # bilinear upsampling keeps the mean brightness roughly the same
    assert abs(float(np.mean(np.asarray(img))) - float(np.mean(np.asarray(small[0][0])))) < 12


@pytest.mark.parametrize(
    "options",
    [
        {"classes": [3, 3]},
        {"classes": [10]},
        {"classes": []},
        {"classes": ["a"]},
        {"image_size": 0},
        {"test_fraction": 1.5},
    ],
)
def test_bad_options_are_config_errors(options):
    with pytest.raises(ConfigError, match="digits"):
        open_source("digits", None, "train", **options)
