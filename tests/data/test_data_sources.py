"""On-disk sources read from fake trees in their real layouts; registry and error messages."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from data_fakes import CIFAR_NAMES, DOG_BREEDS, FLOWER_LABELS, INDOOR_CLASSES, WNIDS, write_image
from PIL import Image

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data import available_sources, open_source, source_options
from pipeline.data.base import LabeledDataset


def labels_of(ds: LabeledDataset) -> list[int]:
    return [ds[i][1] for i in range(len(ds))]


def check_items(ds: LabeledDataset) -> None:
    """Every item is an (Image in the declared mode, label in range) pair matching targets."""
    for i in range(len(ds)):
        img, label = ds[i]
        assert isinstance(img, Image.Image)
        assert img.mode == ("RGB" if ds.channels == 3 else "L")
        assert 0 <= label < ds.num_classes
        assert label == ds.targets[i]


def test_registry_lists_all_sources():
    assert available_sources() == sorted(
        [
            "digits",
            "cifar10",
            "flowers102",
            "stanford_dogs",
            "mit_indoor",
            "imagenet",
            "image_folder",
        ]
    )
    assert set(source_options("digits")) == {"classes", "image_size", "test_fraction", "split_seed"}
    assert source_options("flowers102") == {"include_valid": False}


def test_unknown_source_is_config_error_listing_names():
    with pytest.raises(ConfigError) as err:
        open_source("mnist", "/nowhere", "train")
    message = str(err.value)
    assert "'mnist'" in message and "cifar10" in message and "digits" in message
    assert "\n" not in message


def test_unknown_option_is_config_error_listing_allowed():
    with pytest.raises(ConfigError, match=r"imgsize.*allowed: classes, image_size"):
        open_source("digits", None, "train", imgsize=16)
    with pytest.raises(ConfigError, match="'cifar10' needs a root"):
        open_source("cifar10", None, "train")


def test_cifar10_train_and_test(cifar_root: Path):
    folder = cifar_root / "cifar-10-batches-py"
    for root in (cifar_root, folder):  # the folder or its parent
        train = open_source("cifar10", root, "train")
        test = open_source("cifar10", root, "test")
        assert (len(train), len(test)) == (20, 6)
        assert train.classes == CIFAR_NAMES and train.num_classes == 10 and train.channels == 3
    with (folder / "data_batch_2").open("rb") as f:
        batch = pickle.load(f, encoding="bytes")
    img, label = train[4]  # first image of data_batch_2
    assert img.size == (32, 32) and label == batch[b"labels"][0]
    expected = batch[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(np.asarray(img), expected)
    check_items(test)


def test_cifar10_malformed_batch_names_file(cifar_root: Path):
    bad = cifar_root / "cifar-10-batches-py" / "data_batch_3"
    with bad.open("wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DatasetError, match="data_batch_3.*3072"):
        open_source("cifar10", cifar_root, "train")
    bad.write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="cannot read CIFAR-10 batch .*data_batch_3"):
        open_source("cifar10", cifar_root, "train")


def test_flowers102_official_splits(flowers_root: Path):
    train = open_source("flowers102", flowers_root, "train")
    trainval = open_source("flowers102", flowers_root, "train", include_valid=True)
    test = open_source("flowers102", flowers_root, "test")
    assert train.classes == ["1", "2", "3"]
    assert [Path(p).name for p in test.paths] == [f"image_{i:05d}.jpg" for i in (7, 8, 9, 10)]
    assert labels_of(train) == [FLOWER_LABELS[i - 1] - 1 for i in (1, 2, 3)]
    assert labels_of(test) == [FLOWER_LABELS[i - 1] - 1 for i in (7, 8, 9, 10)]
    assert len(trainval) == 6 and set(train.paths) < set(trainval.paths)
    assert not set(trainval.paths) & set(test.paths)
    check_items(trainval)


def test_flowers102_bad_setid_names_field(flowers_root: Path):
    scipy.io.savemat(flowers_root / "setid.mat", {"trnid": np.array([[1]])})
    with pytest.raises(DatasetError, match=r"setid.mat lacks field\(s\) valid, tstid"):
        open_source("flowers102", flowers_root, "test")


def test_stanford_dogs_lists(dogs_root: Path):
    train = open_source("stanford_dogs", dogs_root, "train")
    test = open_source("stanford_dogs", dogs_root, "test")
    assert train.classes == ["Chihuahua", "Japanese_spaniel", "Maltese_dog"]
    assert (len(train), len(test)) == (6, 3)
    assert labels_of(test) == [0, 1, 2]
    assert not set(train.paths) & set(test.paths)
    for path, label in zip(train.paths, train.targets):
        assert Path(path).parent.name == DOG_BREEDS[label]
    check_items(train)


def test_mit_indoor_lists(indoor_root: Path):
    train = open_source("mit_indoor", indoor_root, "train")
    test = open_source("mit_indoor", indoor_root, "test")
    assert train.classes == INDOOR_CLASSES == test.classes
    assert (len(train), len(test)) == (6, 3)
    assert labels_of(test) == [0, 1, 2]
    assert not set(train.paths) & set(test.paths)
    check_items(test)


def test_mit_indoor_malformed_line(indoor_root: Path):
    (indoor_root / "TestImages.txt").write_text("just_a_file.jpg\n")
    with pytest.raises(DatasetError, match="TestImages.txt has a malformed line 'just_a_file.jpg'"):
        open_source("mit_indoor", indoor_root, "train")


def test_imagenet_class_folders(imagenet_root: Path):
    train = open_source("imagenet", imagenet_root, "train")
    val = open_source("imagenet", imagenet_root, "val")
    assert train.classes == WNIDS == val.classes
    assert labels_of(train) == [0, 0, 0, 1, 1, 1] and labels_of(val) == [0, 1]
    small = open_source("imagenet", imagenet_root, "train", max_per_class=1)
    assert labels_of(small) == [0, 1]
    check_items(val)


def test_imagenet_flat_val_is_explained(imagenet_root: Path):
    flat = imagenet_root.parent / "flat"
    write_image(flat / "train" / WNIDS[0] / "a.JPEG", seed=1)
    write_image(flat / "val" / "ILSVRC2012_val_00000001.JPEG", seed=2)
    with pytest.raises(DatasetError, match="holds images directly"):
        open_source("imagenet", flat, "val")


def test_image_folder_shares_label_ids_across_splits(folder_root: Path):
    train = open_source("image_folder", folder_root, "train")
    test = open_source("image_folder", folder_root, "test")
    assert train.classes == ["ant", "bee", "cat"] == test.classes
    assert len(train) == 6  # notes.txt is skipped
    assert labels_of(test) == [0, 1]
    gray = open_source("image_folder", folder_root, "test", channels=1)
    assert gray.channels == 1 and gray[0][0].mode == "L"


@pytest.mark.parametrize(
    ("source", "layout"),
    [
        ("cifar10", "data_batch_1..5 and test_batch"),
        ("flowers102", "imagelabels.mat"),
        ("stanford_dogs", "lists/train_list.mat"),
        ("mit_indoor", "TrainImages.txt"),
        ("imagenet", "train/<wnid>/*.JPEG"),
        ("image_folder", "<split>/<class>/<image files>"),
    ],
)
def test_missing_dataset_names_path_and_layout(tmp_path: Path, source: str, layout: str):
    root = tmp_path / "absent" / source
    with pytest.raises(DatasetError) as err:
        open_source(source, root, "train")
    message = str(err.value)
    assert str(root) in message and layout in message and "expected" in message
    assert "\n" not in message


def test_missing_list_file_names_it(dogs_root: Path):
    (dogs_root / "lists" / "test_list.mat").unlink()
    with pytest.raises(DatasetError, match=r"test_list.mat not found: expected Images/"):
        open_source("stanford_dogs", dogs_root, "train")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_names_file(folder_root: Path, damage: str):
    path = folder_root / "test" / "bee" / "x.jpg"
    data = path.read_bytes()
    path.write_bytes(b"\x00garbage" * 20 if damage == "garbage" else data[: len(data) // 2])
    ds = open_source("image_folder", folder_root, "test")
    assert ds[0][1] == 0  # the intact image still loads
    with pytest.raises(DatasetError) as err:
        ds[1]
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_listed_but_absent_image_names_file(flowers_root: Path):
    missing = flowers_root / "jpg" / "image_00008.jpg"
    missing.unlink()
    ds = open_source("flowers102", flowers_root, "test")
    with pytest.raises(DatasetError, match=f"not found: {missing}"):
        ds[1]


@pytest.mark.parametrize(
    ("source", "split"),
    [("cifar10", "val"), ("flowers102", "valid"), ("imagenet", "test"), ("digits", "val")],
)
def test_unknown_split_is_config_error(cifar_root: Path, source: str, split: str):
    with pytest.raises(ConfigError, match=f"split must be one of .*'{split}'"):
        open_source(source, cifar_root, split)


def test_the_schema_names_every_registered_source():
    """core/config.py cannot import pipeline.data, so it lists the names; they must agree."""
    from pipeline.core.config import DATA_SOURCES

    assert set(DATA_SOURCES) == {"shards", *available_sources()}
