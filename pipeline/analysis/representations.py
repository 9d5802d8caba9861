"""Low-rank structure of representations (LR paper: Fig. 2 variance ratio, Table 5 compression).

The LR paper ("Robustness via deep low-rank representations", §3 and Appendix C) measures how
low-rank the activations of a layer are over a dataset in two ways:

* the **variance ratio** ``Σ_{i≤r} σ_i² / Σ_i σ_i²`` of the activation matrix ``A`` (rows are
  examples), as a curve in ``r`` (Fig. 2, 5, 6);
* **compression**: project the representations onto their top-``k`` principal directions
  (PCA fitted on the training set, after standard scaling) and train a linear classifier on the
  ``k``-dimensional embedding; report test accuracy per ``k`` (Table 5, Table 8).

All functions take NumPy arrays or torch tensors (any device) and return NumPy/Python values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from pipeline.analysis._arrays import to_numpy

DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 50, 100, 200, 500)

# Slack for comparing a cumulative ratio with a threshold: a curve that reaches 1 analytically can
# stop at 1 - 1e-16 in floating point.
_RATIO_TOL = 1e-12


def _feature_matrix(features: Any) -> np.ndarray:
    a = to_numpy(features, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"features must be a 2-D (n, d) matrix; got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"features must be non-empty; got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("features contain NaN or inf")
    return a


def variance_ratio_curve(features: Any, center: bool = False) -> np.ndarray:
    """Variance ratio ``Σ_{i≤r} σ_i² / Σ_i σ_i²`` for ``r = 1 .. min(n, d)`` (LR paper, Fig. 2).

    ``σ_1 ≥ σ_2 ≥ …`` are the singular values of the activation matrix ``A`` of shape ``(n, d)``
    (one row per example). The LR paper defines the ratio on "the ordered singular values of the
    given activation matrix A" with no mean subtraction, so by default the features are **not
    centred** (``center=False``): a large common offset then shows up as one dominant direction.
    ``center=True`` subtracts the per-feature mean over the ``n`` rows first, which makes the
    curve the cumulative explained-variance ratio of PCA.

    Returns a float64 array of length ``min(n, d)``; it is non-decreasing and ends at 1 (entries
    past the rank of ``A`` equal 1). Raises ``ValueError`` for an all-zero matrix (after
    centring), where the ratio is undefined.
    """
    a = _feature_matrix(features)
    if center:
        a = a - a.mean(axis=0, keepdims=True)
    sigma = np.linalg.svd(a, compute_uv=False)
    energy = sigma**2
    total = energy.sum()
    if not total > 0:
        raise ValueError("variance ratio is undefined for an all-zero feature matrix")
    curve = np.cumsum(energy) / total
    # Round-off can push partial sums a hair past 1; the ratio is a fraction by definition.
    return np.minimum(curve, 1.0)


def effective_dimension(features: Any, threshold: float = 0.9, center: bool = False) -> int:
    """Smallest ``r`` whose variance ratio reaches ``threshold`` (read off LR paper Fig. 2).

    This is the "effective rank of activations" the LR paper reads from its variance-ratio
    curves (e.g. "the effective rank is as low as 10"). ``center`` is passed to
    :func:`variance_ratio_curve` (default: not centred, as in the paper).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1]; got {threshold}")
    curve = variance_ratio_curve(features, center=center)
    reached = np.nonzero(curve >= threshold - _RATIO_TOL)[0]
    # The curve ends at 1 up to round-off, so the threshold is always reached.
    return int(reached[0]) + 1


def _default_classifier() -> LogisticRegression:
    return LogisticRegression(max_iter=2000)


def compression_accuracy(
    train_feats: Any,
    train_y: Any,
    test_feats: Any,
    test_y: Any,
    ks: Sequence[int] = DEFAULT_KS,
    standardize: bool = True,
    make_classifier: Callable[[], Any] | None = None,
    seed: int = 0,
) -> dict[int, float]:
    """Test accuracy of a linear classifier on PCA-compressed representations (LR paper, Table 5).

    Procedure (LR paper §3.3 and Appendix C.2): scale each feature to zero mean and unit variance
    (``standardize``, the paper's "standard pre-processing of scaling the input"), fit PCA on the
    **training** representations, project train and test onto the top ``k`` components, train a
    linear classifier on the projected training set and report its accuracy on the projected test
    set. The paper used a linear max-margin classifier (SVM); the default here is scikit-learn's
    ``LogisticRegression`` (L2, lbfgs). ``make_classifier`` returns a fresh unfitted estimator to
    use instead (e.g. ``lambda: LinearSVC()``).

    Each ``k`` is capped at ``min(d, n_train)``, the most components PCA can have, so asking for a
    ``k`` larger than the feature dimension gives the uncompressed ("full") accuracy. The result
    maps each **effective** ``k`` (after capping; duplicates merged) to accuracy in ``[0, 1]``,
    in increasing ``k``. PCA is fitted once with the largest ``k`` and truncated for smaller ones
    (principal components are nested), with ``seed`` fixing a randomized SVD solver.
    """
    xtr = _feature_matrix(train_feats)
    xte = _feature_matrix(test_feats)
    ytr = to_numpy(train_y).reshape(-1)
    yte = to_numpy(test_y).reshape(-1)
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(
            f"train and test features differ in dimension: {xtr.shape[1]} vs {xte.shape[1]}"
        )
    if len(ytr) != len(xtr) or len(yte) != len(xte):
        raise ValueError("labels and features differ in length")
    if len(ks) == 0 or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers; got {ks}")

    k_cap = min(xtr.shape[1], xtr.shape[0])
    effective_ks = sorted({min(int(k), k_cap) for k in ks})

    if standardize:
        scaler = StandardScaler().fit(xtr)
        xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    pca = PCA(n_components=effective_ks[-1], random_state=seed).fit(xtr)
    ztr, zte = pca.transform(xtr), pca.transform(xte)

    factory = make_classifier if make_classifier is not None else _default_classifier
    accuracies: dict[int, float] = {}
    for k in effective_ks:
        clf = factory()
        clf.fit(ztr[:, :k], ytr)
        accuracies[k] = float(np.mean(clf.predict(zte[:, :k]) == yte))
    return accuracies
