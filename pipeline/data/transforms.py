"""Image transforms: geometry and tensor conversion, with normalization kept a separate step.

The attack works in pixel space ([0, 1] tensors), so callers can build the pixel pipeline
(``to_pixel_tensor``) and put ``build_normalize`` in front of the model instead of in the data.

torchvision is imported only where its transforms are used: random crops and flips, the
crop-resize test geometry, normalization modules. Importing it costs a process 1.5-3 s (it
imports ``torch._dynamo``), more than a stage of the default DAG computes, so the paths the
default takes (augment ``none``: a square resize; plain conversion) are written here with PIL
and torch, giving the same tensors as torchvision bit for bit (tests/data check it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

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


class PilToPixels:
    """PIL image -> float tensor ``(channels, H, W)`` in [0, 1], resized to ``size`` x ``size``
    when given: what ``Compose([ConvertMode, Resize((size, size)), ToTensor()])`` computes.

    The resize is PIL's bilinear one (antialiased), skipped when the image has the size already,
    as torchvision's ``Resize`` does on PIL images.
    """

    def __init__(self, channels: int, size: int | None = None):
        self.convert = ConvertMode(channels)
        self.size = size

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = self.convert(img)
        if self.size is not None and img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BILINEAR)
        pixels = torch.from_numpy(np.array(img, np.uint8, copy=True))
        pixels = pixels.view(img.size[1], img.size[0], len(img.getbands()))
        return pixels.permute(2, 0, 1).contiguous().to(torch.get_default_dtype()).div(255)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.convert.mode!r}, size={self.size})"


def _check_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer; got {image_size!r}")


def _geometry(T, train: bool, image_size: int, augment: str) -> list:
    """torchvision geometry of the ``standard`` and ``resize`` augments (``T``: its transforms)."""
    if train:
        return [T.RandomResizedCrop(image_size, antialias=True), T.RandomHorizontalFlip()]
    if augment == "resize":
        return [T.Resize((image_size, image_size), antialias=True)]
    return [T.Resize(round(image_size * 256 / 224), antialias=True), T.CenterCrop(image_size)]


def to_pixel_tensor(
    train: bool, image_size: int, channels: int = 3, augment: str = "standard"
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> float tensor ``(channels, image_size, image_size)`` in [0, 1], unnormalized.

    ``augment``: ``standard`` (train RandomResizedCrop + flip, test Resize 256/224 + CenterCrop),
    ``resize`` (same train, test a plain square resize, for upscaled CIFAR-10), ``none``
    (square resize only, train and test, for the tiny digits).
    """
    _check_size(image_size)
    if augment == "none":
        return PilToPixels(channels, image_size)
    if augment not in AUGMENTS:
        raise ConfigError(f"unknown augment {augment!r}; allowed: {', '.join(AUGMENTS)}")
    # Only the augmenting paths need torchvision (see the module docstring).
    from torchvision import transforms as T

    geometry = _geometry(T, train, image_size, augment)
    return T.Compose([ConvertMode(channels), *geometry, T.ToTensor()])


def plain_tensor(channels: int = 3) -> PilToPixels:
    """PIL image -> [0, 1] float tensor at its own size: for data that is already model-sized."""
    return PilToPixels(channels)


def _stats(
    channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (defaults: ImageNet statistics), checked."""
    default_mean, default_std = default_stats(channels)
    mean = tuple(default_mean if mean is None else mean)
    std = tuple(default_std if std is None else std)
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise ConfigError(
            f"normalization needs {channels} mean and {channels} positive std values; "
            f"got mean={list(mean)} std={list(std)}"
        )
    return mean, std


def build_normalize(
    channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
):
    """Normalization alone: torchvision's ``Normalize``, an ``nn.Module`` that also accepts
    batches ``(N, C, H, W)``. (The stages normalize inside the model; see ``SplitModel``.)"""
    mean, std = _stats(channels, mean, std)
    from torchvision import transforms as T  # only callers of this function need torchvision

    return T.Normalize(mean, std)


def build_transform(
    train: bool,
    image_size: int,
    channels: int = 3,
    augment: str = "standard",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
):
    """``to_pixel_tensor`` followed by ``build_normalize`` (defaults: ImageNet statistics)."""
    pixels = to_pixel_tensor(train, image_size, channels, augment)
    normalize = build_normalize(channels, mean, std)
    from torchvision import transforms as T  # build_normalize has imported it already

    return T.Compose([pixels, normalize])


def denormalize(
    x: torch.Tensor,
    channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """Back from normalized to [0, 1] pixel tensors, e.g. to attack data loaded normalized."""
    mean, std = _stats(channels, mean, std)
    shape = (-1, 1, 1)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return x * s + m
