"""Tangent Attack and our HopSkipJump against an independent implementation (ART's HopSkipJump).

ART reports no query count, so every row its estimator is asked to predict is counted by the
``predict_fn`` we give it, per sample (ART is run one sample at a time); that includes ART's own
bookkeeping rows (the label of ``x``, of the start, and a final success check). Each of our
attacks then gets exactly that many queries per sample. Both attacks start from the same adversarial
noise points, so the comparison is about the iterations, not about lucky starts; ART's global
NumPy RNG is seeded, which makes the comparison deterministic.

ART's HopSkipJump returns its last iterate, which sits past the boundary (it searches the
boundary at the start of an iteration, not after the step). The strict comparison therefore
also projects ART's result to the boundary by a binary search, with those queries added to
ART's count (and so to the budget of our attacks).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from art.attacks.evasion import HopSkipJump
from art.estimators.classification import BlackBoxClassifier

from pipeline.attacks import binary_search, hop_skip_jump, tangent_attack

N_SAMPLES = 50
HSJA_ITERATIONS = 10  # ≈ 2 400 queries per sample at d = 64


def _noise_starts(model, x, y, seed):
    """One adversarial uniform-noise point per sample (found by the test, free for both)."""
    g = torch.Generator().manual_seed(seed)
    starts, need = torch.empty_like(x), torch.ones(len(x), dtype=torch.bool)
    while need.any():
        cand = torch.rand(x.shape, generator=g)
        adv = model(cand).argmax(1) != y
        starts[need & adv] = cand[need & adv]
        need &= ~adv
    return starts


@pytest.fixture(scope="module")
def art_reference(digits_mlp):
    """ART's HopSkipJump on the first samples: raw and projected distances, queries per sample."""
    model, xs, ys = digits_mlp
    x, y = xs[:N_SAMPLES], ys[:N_SAMPLES]
    with torch.no_grad():
        starts = _noise_starts(model, x, y, seed=0)
    count = [0]

    def predict_fn(a: np.ndarray) -> np.ndarray:
        count[0] += len(a)
        with torch.no_grad():
            return torch.softmax(model(torch.as_tensor(a, dtype=torch.float32)), 1).numpy()

    art_model = BlackBoxClassifier(predict_fn, (64,), 10, clip_values=(0.0, 1.0))
    hsja = HopSkipJump(
        art_model, targeted=False, norm=2, max_iter=HSJA_ITERATIONS, max_eval=10_000,
        init_eval=100, init_size=100, verbose=False,
    )  # fmt: skip
    np.random.seed(0)
    raw, projected, queries = [], [], []
    for i in range(N_SAMPLES):
        count[0] = 0
        adv = torch.as_tensor(
            hsja.generate(x[i : i + 1].numpy(), y=y[i : i + 1].numpy(), x_adv_init=starts[i : i + 1].numpy())
        )  # fmt: skip

        def is_adv(points, idx, label=int(y[i])):
            return torch.as_tensor(predict_fn(points.numpy())).argmax(1) != label

        assert bool(is_adv(adv, None)[0]), "ART returned a non-adversarial point"
        on_boundary = binary_search(is_adv, x[i : i + 1], adv, 0.01 / 8).points  # ART's θ
        raw.append(float((adv - x[i]).norm()))
        projected.append(float((on_boundary - x[i]).norm()))
        queries.append(count[0])
    budget = torch.tensor(queries)
    assert torch.all(budget > 2000)  # ART really ran its iterations
    return x, y, starts, budget, float(np.mean(raw)), float(np.mean(projected))


@pytest.mark.parametrize("attack", [tangent_attack, hop_skip_jump])
def test_mean_distance_at_most_art_hopskipjump_at_the_same_budget(
    digits_mlp, art_reference, attack
):
    model, _, _ = digits_mlp
    x, y, starts, budget, art_raw, art_projected = art_reference
    res = attack(
        lambda z: model(z).argmax(1), x, y, iterations=10_000, max_queries=budget, starts=starts
    )
    assert res.success.all()
    assert torch.all(res.queries <= budget)
    assert torch.all(res.queries >= budget - 20)  # and it used the budget
    ours = float(res.distances.mean())
    print(f"{attack.__name__} {ours:.4f}  ART {art_raw:.4f}  ART+projection {art_projected:.4f}")
    assert ours <= 1.05 * art_raw
    assert ours <= 1.05 * art_projected
