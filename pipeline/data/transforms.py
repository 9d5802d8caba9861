"""Image transforms: geometry and tensor conversion, with normalization kept a separate step.

The attack works in pixel space ([0, 1] tensors), so callers can build the pixel pipeline
(``to_pixel_tensor``) and put ``build_normalize`` in front of the model instead of in the data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torchvision import transforms as T

from pipeline.core.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTS = ("standard", "resize", "none")


def default_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet mean/std for RGB; for grayscale their channel average (what timm does for 1 channel)."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    if channels == 1:
        return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)
    raise ConfigError(f"channels must be 1 or 3; got {channels!r}")


class ConvertMode:
    """Force PIL mode ``L`` or ``RGB`` so a grayscale JPEG in an RGB dataset still gives 3 channels.

    A class rather than a lambda so DataLoader workers can pickle it.
    """

    def __init__(self, channels: int):
        default_stats(channels)  # validates
        self.mode = "L" if channels == 1 else "RGB"

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == self.mode else img.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


def _geometry(train: bool, image_size: int, augment: str) -> list:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer; got {image_size!r}")
    square = (image_size, image_size)
    if augment == "none":
        return [T.Resize(square, antialias=True)]
    if augment not in AUGMENTS:
        raise ConfigError(f"unknown augment {augment!r}; allowed: {', '.join(AUGMENTS)}")
    if train:
        return [T.RandomResizedCrop(image_size, antialias=True), T.RandomHorizontalFlip()]
    if augment == "resize":
        return [T.Resize(square, antialias=True)]
    return [T.Resize(round(image_size * 256 / 224), antialias=True), T.CenterCrop(image_size)]


def to_pixel_tensor(
    train: bool, image_size: int, channels: int = 3, augment: str = "standard"
) -> T.Compose:
    """PIL image -> float tensor ``(channels, image_size, image_size)`` in [0, 1], unnormalized.

    ``augment``: ``standard`` (train RandomResizedCrop + flip, test Resize 256/224 + CenterCrop),
    ``resize`` (same train, test a plain square resize, for upscaled CIFAR-10), ``none``
    (square resize only, train and test, for the tiny digits).
    """
    return T.Compose([ConvertMode(channels), *_geometry(train, image_size, augment), T.ToTensor()])


def plain_tensor(channels: int = 3) -> T.Compose:
    """PIL image -> [0, 1] float tensor at its own size: for data that is already model-sized."""
    return T.Compose([ConvertMode(channels), T.ToTensor()])


def build_normalize(
    channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> T.Normalize:
    """Normalization alone; an ``nn.Module`` that also accepts batches ``(N, C, H, W)``."""
    default_mean, default_std = default_stats(channels)
    mean = tuple(default_mean if mean is None else mean)
    std = tuple(default_std if std is None else std)
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise ConfigError(
            f"normalization needs {channels} mean and {channels} positive std values; "
            f"got mean={list(mean)} std={list(std)}"
        )
    return T.Normalize(mean, std)


def build_transform(
    train: bool,
    image_size: int,
    channels: int = 3,
    augment: str = "standard",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> T.Compose:
    """``to_pixel_tensor`` followed by ``build_normalize`` (defaults: ImageNet statistics)."""
    pixels = to_pixel_tensor(train, image_size, channels, augment)
    return T.Compose([*pixels.transforms, build_normalize(channels, mean, std)])


def denormalize(
    x: torch.Tensor,
    channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """Back from normalized to [0, 1] pixel tensors, e.g. to attack data loaded normalized."""
    norm = build_normalize(channels, mean, std)
    shape = (-1, 1, 1)
    m = torch.as_tensor(norm.mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.as_tensor(norm.std, dtype=x.dtype, device=x.device).view(shape)
    return x * s + m
