"""Random pixel perturbations (LR paper Table 4) and accuracy under them."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.analysis import PIXEL_NOISE_SIGMA, noise_accuracy, pixel_noise


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Pixel values strictly inside (0, 1), so any perturbation changes the value."""
    return 0.05 + 0.9 * torch.rand(n, 3, 16, 16, generator=_gen(seed))


def test_default_sigma_is_128_over_255():
    assert math.isclose(PIXEL_NOISE_SIGMA, 128 / 255)


def test_p_zero_is_identity():
    x = torch.rand(8, 3, 5, 5, generator=_gen(1))
    out = pixel_noise(x, 0.0, generator=_gen())
    assert torch.equal(out, x)
    assert out is not x


def test_p_one_changes_every_pixel_and_stays_in_range():
    x = _images()
    out = pixel_noise(x, 1.0, generator=_gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert bool((out != x).all())
    assert out.min() >= 0.0 and out.max() <= 1.0
    # sigma = 128/255 is large: clipping happens a lot, but not everywhere.
    clipped = ((out == 0) | (out == 1)).float().mean().item()
    assert 0.1 < clipped < 0.9


def test_extreme_inputs_stay_in_unit_interval():
    x = torch.tensor([0.0, 1.0]).repeat(5000)
    out = pixel_noise(x, 1.0, generator=_gen(2))
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert bool((out != x).any())


@pytest.mark.parametrize("p", [0.1, 0.4, 0.8])
def test_fraction_changed_matches_p(p):
    x = _images(n=128)  # 98 304 values
    out = pixel_noise(x, p, generator=_gen(3))
    frac = (out != x).float().mean().item()
    std = math.sqrt(p * (1 - p) / x.numel())
    assert abs(frac - p) < 6 * std


def test_noise_has_the_requested_standard_deviation():
    x = torch.full((200_000,), 0.5)
    out = pixel_noise(x, 1.0, sigma=0.05, generator=_gen(4))  # 10 sigma from the box: no clipping
    diff = out - x
    assert diff.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert diff.std().item() == pytest.approx(0.05, rel=0.02)


def test_generator_makes_noise_reproducible():
    x = _images(n=4)
    a = pixel_noise(x, 0.5, generator=_gen(7))
    b = pixel_noise(x, 0.5, generator=_gen(7))
    c = pixel_noise(x, 0.5, generator=_gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_shared_channels_perturbs_whole_pixels():
    x = _images(n=16)
    out = pixel_noise(x, 0.5, generator=_gen(5), shared_channels=True)
    changed = out != x  # (N, C, H, W); values are interior so perturbed <=> changed
    assert bool((changed == changed[:, :1]).all())
    frac = changed[:, 0].float().mean().item()
    assert abs(frac - 0.5) < 0.05
    with pytest.raises(ValueError, match="N, C, H, W"):
        pixel_noise(torch.rand(3, 4), 0.5, shared_channels=True)


def test_rejects_normalized_inputs_and_bad_p():
    with pytest.raises(ValueError, match="pixel space"):
        pixel_noise(torch.tensor([-0.5, 0.3]), 0.5)
    with pytest.raises(ValueError, match="pixel space"):
        pixel_noise(torch.tensor([1.5, 0.3]), 0.5)
    with pytest.raises(ValueError, match="probability"):
        pixel_noise(torch.tensor([0.5]), 1.5)


def _threshold_classifier(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0] > 0.5).long()


def test_noise_accuracy_matches_analytic_value():
    # Every input is the single pixel 0.75 with label 1; the classifier thresholds at 0.5.
    # A perturbed pixel is misclassified iff eps < -0.25, so accuracy = 1 - p * Phi(-0.25 / sigma).
    n = 40_000
    x = torch.full((n, 1), 0.75)
    y = torch.ones(n, dtype=torch.long)
    ps = (0.0, 0.4, 1.0)
    acc = noise_accuracy(_threshold_classifier, x, y, ps=ps, seed=0, batch_size=7_000)
    assert list(acc) == [0.0, 0.4, 1.0]
    phi = 0.5 * math.erfc(0.25 / PIXEL_NOISE_SIGMA / math.sqrt(2))
    assert acc[0.0] == 1.0
    for p in ps[1:]:
        expected = 1 - p * phi
        assert acc[p] == pytest.approx(expected, abs=5 * math.sqrt(expected * (1 - expected) / n))


def test_noise_accuracy_common_random_numbers_and_scores():
    # With the same seed the perturbed set at p=0.4 is a subset of the one at p=0.8, so a
    # classifier can only lose accuracy; scores (n, K) go through argmax.
    n = 5_000
    x = torch.full((n, 1), 0.75)
    y = torch.ones(n, dtype=torch.long)

    def scores(xb: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - xb, xb - 0.5], dim=1)

    acc = noise_accuracy(scores, x, y, ps=(0.4, 0.8), seed=3)
    again = noise_accuracy(scores, x, y.numpy(), ps=(0.4, 0.8), seed=3)
    assert acc == again
    assert acc[0.8] <= acc[0.4] < 1.0
    with pytest.raises(ValueError, match="labels"):
        noise_accuracy(scores, x, y[:-1])
