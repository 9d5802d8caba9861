"""Noise stability: accuracy under random pixel perturbations (LR paper §3.2, Table 4).

For a perturbation probability ``p ∈ {0.4, 0.6, 0.8, 1.0}``, every pixel of every test image is
perturbed with probability ``p`` (an independent Bernoulli draw) by additive Gaussian noise
``N(0, 128/255)``, and the test accuracy is measured on the perturbed set.

Conventions fixed here (the paper does not spell them out):

* Inputs are in **pixel space** ``[0, 1]`` and perturbed images are clipped back to ``[0, 1]``.
  Dataset normalization (mean/std) therefore belongs inside the ``predict`` callable; passing
  already-normalized inputs is rejected because the noise scale would be wrong.
* ``sigma = 128/255`` is used as the **standard deviation** of the noise.
* By default each scalar value (each channel of each pixel) gets its own Bernoulli draw;
  ``shared_channels=True`` makes one draw per spatial pixel for ``(N, C, H, W)`` inputs (the noise
  values themselves stay independent per channel).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from pipeline.analysis._arrays import labels_from_output

PIXEL_NOISE_SIGMA = 128.0 / 255.0
DEFAULT_PS: tuple[float, ...] = (0.4, 0.6, 0.8, 1.0)


def pixel_noise(
    x: torch.Tensor,
    p: float,
    sigma: float = PIXEL_NOISE_SIGMA,
    generator: torch.Generator | None = None,
    shared_channels: bool = False,
) -> torch.Tensor:
    """Random pixel perturbation of LR paper Table 4: ``clip(x + m ⊙ ε, 0, 1)``.

    ``m ~ Bernoulli(p)`` per value (per spatial pixel with ``shared_channels=True``, which needs a
    4-D ``(N, C, H, W)`` input) and ``ε ~ N(0, sigma²)``. ``x`` must lie in ``[0, 1]``. ``p = 0``
    returns ``x`` unchanged; ``generator`` (on ``x``'s device) makes the draw reproducible.
    Returns a new tensor of ``x``'s shape, dtype and device.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"perturbation probability p must be in [0, 1]; got {p}")
    if sigma < 0:
        raise ValueError(f"sigma must be non-negative; got {sigma}")
    if not torch.is_floating_point(x):
        raise ValueError(f"x must be a floating-point tensor in [0, 1]; got dtype {x.dtype}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            "pixel_noise expects inputs in pixel space [0, 1]; got values in "
            f"[{x.min().item():.3g}, {x.max().item():.3g}] (normalize inside the model instead)"
        )
    if shared_channels:
        if x.ndim != 4:
            raise ValueError(f"shared_channels needs an (N, C, H, W) input; got shape {x.shape}")
        mask_shape = (x.shape[0], 1, x.shape[2], x.shape[3])
    else:
        mask_shape = tuple(x.shape)
    u = torch.rand(mask_shape, generator=generator, device=x.device, dtype=x.dtype)
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    mask = (u < p).expand_as(x)
    return torch.where(mask, x + sigma * eps, x).clamp_(0.0, 1.0)


@torch.no_grad()
def noise_accuracy(
    predict: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    y: Any,
    ps: Sequence[float] = DEFAULT_PS,
    seed: int = 0,
    sigma: float = PIXEL_NOISE_SIGMA,
    batch_size: int | None = None,
    shared_channels: bool = False,
) -> dict[float, float]:
    """Accuracy on pixel-noised inputs for each perturbation probability (LR paper, Table 4).

    ``predict`` maps a batch of pixel-space inputs to predicted labels ``(B,)`` or class scores
    ``(B, K)`` (argmax taken); it runs under ``torch.no_grad()`` and should include any input
    normalization and have the model in eval mode. ``x`` is ``(n, ...)`` in ``[0, 1]``, ``y`` the
    ``n`` true labels. Returns ``{p: accuracy}`` in the order of ``ps``.

    The noise for every ``p`` is drawn from a generator seeded with ``seed`` (on ``x``'s device),
    so the uniforms and Gaussians are common random numbers across ``p``: the pixels perturbed
    at a smaller ``p`` are a subset of those perturbed at a larger one, which makes the
    differences between the entries of the table less noisy. ``batch_size`` bounds how many
    inputs are perturbed and predicted at once (default: all).
    """
    y = torch.as_tensor(y, device=x.device).reshape(-1)
    n = x.shape[0]
    if y.numel() != n:
        raise ValueError(f"x has {n} samples but y has {y.numel()} labels")
    if n == 0:
        raise ValueError("noise_accuracy needs at least one sample")
    step = n if batch_size is None else int(batch_size)
    if step < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")

    results: dict[float, float] = {}
    for p in ps:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(seed)
        correct = 0
        for start in range(0, n, step):
            xb = pixel_noise(
                x[start : start + step],
                p,
                sigma=sigma,
                generator=generator,
                shared_channels=shared_channels,
            )
            pred = labels_from_output(predict(xb)).to(y.device).reshape(-1)
            correct += int((pred == y[start : start + step]).sum().item())
        results[float(p)] = correct / n
    return results
