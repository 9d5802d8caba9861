"""Readout retraining and kNN against scikit-learn as the independent reference."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier

from pipeline.models import build_model
from pipeline.readout import fit_readout, install_readout, knn_accuracy


@pytest.mark.parametrize("classes", [[0, 1], [0, 1, 2, 3]])
def test_installed_readout_predicts_exactly_like_sklearn(classes):
    x, y = load_digits(return_X_y=True)
    keep = np.isin(y, classes)
    x, y = x[keep] / 16.0, np.searchsorted(classes, y[keep])
    torch.manual_seed(0)
    model = build_model(NS(arch="mlp", hidden=[32], activation="relu"), 1, 10, 8)
    model.eval()
    with torch.no_grad():
        feats = model.representation(torch.tensor(x, dtype=torch.float32)).numpy()
    clf, converged = fit_readout(feats, y, C=1.0, max_iter=2000)
    install_readout(model, clf, len(classes))
    with torch.no_grad():
        pred = model(torch.tensor(x, dtype=torch.float32)).argmax(1).numpy()
    assert converged
    assert model.head.out_features == len(classes)
    np.testing.assert_array_equal(pred, clf.predict(feats))


def test_knn_matches_sklearn_cosine_knn_on_separated_data():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 4
    train_y = rng.integers(0, 3, 300)
    test_y = rng.integers(0, 3, 100)
    train_x = centers[train_y] + rng.normal(size=(300, 8))
    test_x = centers[test_y] + rng.normal(size=(100, 8))
    ours = knn_accuracy(train_x, train_y, test_x, test_y, k=5)
    ref = (
        KNeighborsClassifier(n_neighbors=5, metric="cosine")
        .fit(train_x, train_y)
        .score(test_x, test_y)
    )
    assert abs(ours - ref) <= 0.03
    assert knn_accuracy(train_x, train_y, test_x, (test_y + 1) % 3, k=5) < 0.2
