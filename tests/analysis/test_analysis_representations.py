"""Variance ratio, effective dimension and PCA compression accuracy against known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from pipeline.analysis import compression_accuracy, effective_dimension, variance_ratio_curve


def _with_singular_values(n: int, d: int, sigma: np.ndarray, seed: int = 0) -> np.ndarray:
    """An (n, d) matrix whose singular values are exactly ``sigma`` (padded with zeros)."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((n, len(sigma))))
    v, _ = np.linalg.qr(rng.standard_normal((d, len(sigma))))
    return (u * sigma) @ v.T


@pytest.mark.parametrize("n, d, k", [(50, 30, 4), (20, 60, 7), (40, 40, 1)])
def test_rank_k_matrix_reaches_one_at_k_and_is_monotone(n, d, k):
    rng = np.random.default_rng(k)
    a = rng.standard_normal((n, k)) @ rng.standard_normal((k, d))
    curve = variance_ratio_curve(a)
    assert curve.shape == (min(n, d),)
    assert np.all(np.diff(curve) >= -1e-12)
    assert curve[k - 1] == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(curve[k - 1 :], 1.0, atol=1e-10)
    if k > 1:
        # A generic rank-k matrix has k non-zero singular values: the ratio is < 1 before r = k.
        assert curve[k - 2] < 1.0 - 1e-6
    assert np.all(curve > 0) and np.all(curve <= 1.0)


def test_curve_matches_known_singular_values():
    sigma = np.array([5.0, 3.0, 2.0, 1.0, 0.5])
    a = _with_singular_values(30, 12, sigma)
    expected = np.concatenate([np.cumsum(sigma**2) / np.sum(sigma**2), np.ones(12 - 5)])
    np.testing.assert_allclose(variance_ratio_curve(a), expected, atol=1e-12)
    # Same answer from a float32 torch tensor (to float32 precision).
    np.testing.assert_allclose(
        variance_ratio_curve(torch.tensor(a, dtype=torch.float32)), expected, atol=1e-5
    )


def test_center_flag_removes_common_offset():
    rng = np.random.default_rng(1)
    centred = rng.standard_normal((200, 10)) * np.arange(1, 11)
    centred -= centred.mean(axis=0)
    shifted = centred + 100.0  # a large common offset: one dominant uncentred direction
    assert variance_ratio_curve(shifted)[0] > 0.99
    np.testing.assert_allclose(
        variance_ratio_curve(shifted, center=True), variance_ratio_curve(centred), atol=1e-9
    )
    # Centring matches PCA's explained variance ratio.
    cov_eig = np.sort(np.linalg.eigvalsh(np.cov(shifted, rowvar=False)))[::-1]
    np.testing.assert_allclose(
        variance_ratio_curve(shifted, center=True), np.cumsum(cov_eig) / cov_eig.sum(), atol=1e-9
    )


def test_effective_dimension_thresholds():
    sigma = np.sqrt(np.array([50.0, 30.0, 15.0, 4.0, 1.0]))  # energies sum to 100
    a = _with_singular_values(40, 20, sigma, seed=3)
    assert effective_dimension(a, threshold=0.5) == 1
    assert effective_dimension(a, threshold=0.8) == 2
    assert effective_dimension(a, threshold=0.9) == 3
    assert effective_dimension(a, threshold=0.96) == 4
    assert effective_dimension(a, threshold=1.0) == 5  # exactly the rank despite round-off
    with pytest.raises(ValueError):
        effective_dimension(a, threshold=0.0)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="all-zero"):
        variance_ratio_curve(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="all-zero"):
        variance_ratio_curve(np.ones((5, 3)), center=True)
    with pytest.raises(ValueError, match="2-D"):
        variance_ratio_curve(np.ones(5))


@pytest.fixture(scope="module")
def digits_split():
    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)


def test_compression_full_dims_equals_plain_logistic_regression(digits_split):
    xtr, xte, ytr, yte = digits_split
    acc = compression_accuracy(xtr, ytr, xte, yte, ks=(64,))
    assert list(acc) == [64]
    scaler = StandardScaler().fit(xtr)
    plain = LogisticRegression(max_iter=2000).fit(scaler.transform(xtr), ytr)
    plain_acc = float(np.mean(plain.predict(scaler.transform(xte)) == yte))
    # Full-dimensional PCA is a rotation, and the L2 penalty is rotation invariant: same problem.
    assert acc[64] == pytest.approx(plain_acc, abs=0.01)
    assert acc[64] > 0.9


def test_compression_accuracy_grows_with_k_and_caps_k(digits_split):
    xtr, xte, ytr, yte = digits_split
    acc = compression_accuracy(xtr, ytr, xte, yte, ks=(2, 5, 20, 1000))
    assert list(acc) == [2, 5, 20, 64]  # 1000 capped to the feature dimension
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    assert acc[2] > 0.3  # well above chance (0.1) even in 2-D
    assert acc[2] + 0.1 < acc[20]  # two components lose a lot of the digits' structure
    assert acc[5] < acc[20] + 0.01
    assert acc[20] < acc[64] + 0.02  # 20 components hold nearly everything
    assert acc[64] > 0.9


def test_compression_accepts_tensors_and_a_custom_classifier(digits_split):
    xtr, xte, ytr, yte = digits_split
    calls = []

    def factory():
        calls.append(1)
        return LogisticRegression(max_iter=2000, C=0.5)

    acc = compression_accuracy(
        torch.tensor(xtr, dtype=torch.float32),
        torch.tensor(ytr),
        torch.tensor(xte, dtype=torch.float32),
        torch.tensor(yte),
        ks=(10, 10, 30),
        make_classifier=factory,
    )
    assert list(acc) == [10, 30]
    assert len(calls) == 2
    assert acc[30] > 0.85
    with pytest.raises(ValueError, match="dimension"):
        compression_accuracy(xtr, ytr, xte[:, :10], yte)
