"""Readout retraining: multinomial logistic regression on frozen backbone features."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression


def fit_readout(
    train_x: np.ndarray, train_y: np.ndarray, C: float = 1.0, max_iter: int = 1000
) -> tuple[LogisticRegression, bool]:
    """Fit scikit-learn's LogisticRegression (lbfgs, multinomial); returns (model, converged)."""
    # scikit-learn only when a readout is fitted (~1 s to import); knn_accuracy needs numpy only.
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(train_x, train_y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return clf, converged


def install_readout(model, clf: LogisticRegression, num_classes: int) -> None:
    """Replace ``model.head`` with the fitted readout, so backbone + readout is one torch model.

    Binary problems give scikit-learn a single logit ``z``; it becomes the two logits (0, z).
    """
    coef = torch.as_tensor(clf.coef_, dtype=torch.float32)
    bias = torch.as_tensor(clf.intercept_, dtype=torch.float32)
    if coef.shape[0] == 1 and num_classes == 2:
        coef = torch.cat([torch.zeros_like(coef), coef])
        bias = torch.cat([torch.zeros_like(bias), bias])
    full_w = torch.zeros(num_classes, coef.shape[1])
    full_b = torch.full((num_classes,), -1e4)  # classes absent from training are never predicted
    idx = torch.as_tensor(clf.classes_, dtype=torch.long) if coef.shape[0] > 1 else torch.arange(2)
    full_w[idx], full_b[idx] = coef, bias
    model.replace_head(num_classes)
    with torch.no_grad():
        model.head.weight.copy_(full_w)
        model.head.bias.copy_(full_b)


def knn_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int = 20
) -> float:
    """Cosine-similarity k-nearest-neighbour vote (the standard SSL monitor); ties go to the nearest."""
    a = train_x / np.maximum(np.linalg.norm(train_x, axis=1, keepdims=True), 1e-12)
    b = test_x / np.maximum(np.linalg.norm(test_x, axis=1, keepdims=True), 1e-12)
    k = min(k, len(a))
    sims = b @ a.T
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    classes = int(max(train_y.max(), test_y.max())) + 1
    votes = np.zeros((len(b), classes))
    for j in range(k):
        idx = nearest[:, j]
        np.add.at(votes, (np.arange(len(b)), train_y[idx]), sims[np.arange(len(b)), idx] + 1.0)
    return float(np.mean(votes.argmax(1) == test_y))
