"""Transforms: output shapes/dtypes per augment mode, separable normalization, channel handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.core.errors import ConfigError
from pipeline.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_normalize,
    build_transform,
    default_stats,
    denormalize,
    plain_tensor,
    to_pixel_tensor,
)


def rgb(width: int = 40, height: int = 30, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("augment", ["standard", "resize", "none"])
@pytest.mark.parametrize("train", [True, False])
def test_output_is_float_square_tensor(augment: str, train: bool):
    x = build_transform(train, 24, 3, augment)(rgb())
    assert x.dtype == torch.float32 and x.shape == (3, 24, 24)
    p = to_pixel_tensor(train, 24, 3, augment)(rgb())
    assert p.shape == (3, 24, 24) and p.min() >= 0.0 and p.max() <= 1.0


def test_standard_test_resizes_256_over_224_then_center_crops():
    t = to_pixel_tensor(False, 224, 3, "standard")
    resize, crop = t.transforms[1], t.transforms[2]
    assert resize.size == 256 and list(crop.size) == [224, 224]
    # a thin vertical stripe in the centre survives the centre crop, the border does not
    img = np.zeros((300, 400, 3), np.uint8)
    img[:, 195:205] = 255
    x = t(Image.fromarray(img))
    assert x[:, :, 112].mean() > 0.9 and x[:, :, 0].max() == 0


def test_resize_test_keeps_whole_image():
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 0] = 255  # left border column: lost by a centre crop, kept by a plain resize
    x = to_pixel_tensor(False, 224, 3, "resize")(Image.fromarray(img))
    assert x.shape == (3, 224, 224) and x[:, :, 0].mean() > 0.5


def test_none_is_deterministic_and_handles_grayscale_digits():
    img = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    t = build_transform(True, 16, 1, "none")
    a, b = t(img), t(img)
    assert a.shape == (1, 16, 16) and torch.equal(a, b)


def test_train_augmentation_is_random():
    t = to_pixel_tensor(True, 16, 3, "standard")
    torch.manual_seed(0)
    outs = [t(rgb()) for _ in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_channels_are_converted():
    gray = Image.fromarray(np.full((10, 10), 128, np.uint8))
    assert to_pixel_tensor(False, 8, 3, "none")(gray).shape == (3, 8, 8)
    assert plain_tensor(1)(rgb()).shape == (1, 30, 40)


def test_normalization_is_separable_and_invertible():
    img = rgb()
    pixels = to_pixel_tensor(False, 20, 3, "resize")(img)
    normalized = build_transform(False, 20, 3, "resize")(img)
    norm = build_normalize(3)
    assert torch.allclose(norm(pixels), normalized, atol=1e-6)
    # the same module normalizes a batch of pixel tensors (model-side, for attacks)
    batch = torch.stack([pixels, pixels])
    assert torch.allclose(norm(batch)[1], normalized, atol=1e-6)
    assert torch.allclose(denormalize(normalized), pixels, atol=1e-6)
    expected = (pixels[0, 0, 0] - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert torch.isclose(normalized[0, 0, 0], expected, atol=1e-6)


def test_grayscale_stats_average_imagenet():
    mean, std = default_stats(1)
    assert mean == pytest.approx((0.449,), abs=1e-3) and std == pytest.approx((0.226,), abs=1e-3)
    custom = build_transform(False, 8, 1, "none", mean=(0.5,), std=(0.5,))
    white = Image.fromarray(np.full((8, 8), 255, np.uint8))
    assert torch.allclose(custom(white), torch.ones(1, 8, 8))


@pytest.mark.parametrize(
    "call",
    [
        lambda: build_transform(True, 32, 3, "autoaugment"),
        lambda: build_transform(True, 0, 3, "standard"),
        lambda: build_transform(True, 32, 2, "standard"),
        lambda: build_normalize(3, mean=(0.5,), std=(0.5,)),
        lambda: build_normalize(1, mean=(0.5,), std=(0.0,)),
    ],
)
def test_bad_arguments_are_config_errors(call):
    with pytest.raises(ConfigError):
        call()


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize(("mode", "channels"), [("RGB", 3), ("L", 1), ("L", 3), ("RGB", 1)])
@pytest.mark.parametrize("size", [(16, 16), (8, 8), (40, 30), (5, 7)])
def test_no_augment_path_is_torchvisions_bit_for_bit(train, mode, channels, size):
    """The ``none`` augment and plain conversion, written without torchvision, give exactly the
    tensors of torchvision's Resize + ToTensor (downsizing, upsizing, no-op and mode changes)."""
    from torchvision import transforms as T

    from pipeline.data.transforms import ConvertMode

    img = rgb(*size, seed=size[0]).convert(mode)
    expected = T.Compose([ConvertMode(channels), T.Resize((16, 16), antialias=True), T.ToTensor()])
    assert torch.equal(to_pixel_tensor(train, 16, channels, "none")(img), expected(img))
    plain = T.Compose([ConvertMode(channels), T.ToTensor()])
    assert torch.equal(plain_tensor(channels)(img), plain(img))
