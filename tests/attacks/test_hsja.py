"""HopSkipJump: exact on a linear boundary, honest query accounting, budgets, determinism, and
the best-distance record at query checkpoints (shared with Tangent Attack)."""

from __future__ import annotations

import pytest
import torch

from pipeline.attacks import LabelOracle, hop_skip_jump, tangent_attack


def test_linear_d100_default_budget_within_2_percent(linear_binary):
    model = linear_binary(100, seed=0)
    x = model.points(16, dist=0.3)
    y = model(x)
    res = hop_skip_jump(model, x, y)  # T = 40, B0 = 100: the paper's settings
    assert res.success.all()
    assert torch.all(model(res.adversarial) != y)
    ratio = float(res.distances.mean() / model.distance(x).mean())
    assert 1.0 <= ratio < 1.02, ratio  # never below the truth: every point is adversarial


def test_hsja_and_tangent_differ_only_in_the_step(linear_binary):
    """Same seed, same starts, same loop: exchanging the step alone turns one into the other."""
    from pipeline.attacks.boundary import run_boundary_attack
    from pipeline.attacks.hsja import HopSkipJump
    from pipeline.attacks.tangent import TangentAttack, tangent_point

    model = linear_binary(40, seed=1)
    x = model.points(6, dist=0.25)
    y = model(x)
    options = {"iterations": 5, "init_tries": 50}
    a = hop_skip_jump(model, x, y, **options)
    b = tangent_attack(model, x, y, **options)
    assert torch.equal(a.starts, b.starts)
    assert not torch.equal(a.adversarial, b.adversarial)

    class HsjaStepOnTangent(TangentAttack):
        def candidate(self, x, xb, normal, size):
            return xb + size.unsqueeze(1) * normal  # the paper's step: x_t + ξ v

    class TangentStepOnHsja(HopSkipJump):
        def candidate(self, x, xb, normal, size):
            return tangent_point(x, xb, normal, size)

    swapped = {
        "hsja": run_boundary_attack(HsjaStepOnTangent, model, x, y, **options),
        "tangent": run_boundary_attack(TangentStepOnHsja, model, x, y, **options),
    }
    for original, other in ((a, swapped["hsja"]), (b, swapped["tangent"])):
        for field in ("adversarial", "distances", "queries", "success", "iterations", "starts"):
            assert torch.equal(getattr(original, field), getattr(other, field)), field


def test_query_counts_match_an_independent_counter(digits_mlp, counting_predict):
    model, xs, ys = digits_mlp
    x, y = xs[:8], ys[:8]
    counter = counting_predict(lambda z: model(z).argmax(1), batch=8)
    res = hop_skip_jump(counter, x, y, iterations=6)
    assert torch.equal(res.queries, counter.per_sample)
    assert int(res.queries.sum()) == counter.total
    assert counter.calls < 0.2 * counter.total / 8  # batched across samples
    oracle = LabelOracle(model, chunk_size=128)
    res = hop_skip_jump(oracle, x, y, iterations=3)
    assert torch.equal(oracle.counts(8), res.queries)


@pytest.mark.parametrize("budget", [1, 37, 400, 1500])
def test_budget_is_never_exceeded(digits_mlp, counting_predict, budget):
    model, xs, ys = digits_mlp
    x, y = xs[:6], ys[:6]
    counter = counting_predict(lambda z: model(z).argmax(1), batch=6)
    per_sample = torch.tensor([budget, budget * 2, budget, 3 * budget, budget, budget])
    res = hop_skip_jump(counter, x, y, iterations=1000, max_queries=per_sample)
    assert torch.all(counter.per_sample <= per_sample)
    assert torch.equal(res.queries, counter.per_sample)
    if budget >= 400:
        assert res.success.all()
        assert torch.all(res.queries >= per_sample - 30)  # and the budget is used
    ok = res.success & ~res.misclassified
    assert torch.all(model(res.adversarial[ok]).argmax(1) != y[ok])


def test_same_seed_same_result_other_seed_other_result(digits_mlp):
    model, xs, ys = digits_mlp
    x, y = xs[:6], ys[:6]

    def predict(z):
        return model(z).argmax(1)

    a = hop_skip_jump(predict, x, y, iterations=4, seed=3, checkpoints=[300, 1000])
    b = hop_skip_jump(predict, x, y, iterations=4, seed=3, checkpoints=[300, 1000])
    c = hop_skip_jump(predict, x, y, iterations=4, seed=4, checkpoints=[300, 1000])
    for field in ("adversarial", "distances", "queries", "at_queries", "starts"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert not torch.equal(a.adversarial, c.adversarial)


@pytest.mark.parametrize("attack", [hop_skip_jump, tangent_attack])
def test_checkpoints_record_the_best_distance_within_each_budget(digits_mlp, attack):
    """The record is non-increasing in the budget and ends at the final distance; and an
    independent log of every query shows that each recorded distance belongs to an adversarial
    point that the sample had queried within that budget."""
    model, xs, ys = digits_mlp
    x, y = xs[:8], ys[:8]
    log = []  # (owner, adversarial, distance) per row, in query order

    class Logger:
        takes_owners = True

        def __call__(self, z, owners):
            labels = model(z).argmax(1)
            dist = torch.linalg.vector_norm((z - x[owners]).reshape(len(z), -1), dim=1)
            log.extend(zip(owners.tolist(), (labels != y[owners]).tolist(), dist.tolist()))
            return labels

    checkpoints = [200, 700, 1500, 100_000]
    res = attack(Logger(), x, y, iterations=12, checkpoints=checkpoints, init_tries=50)
    at = res.at_queries
    assert at.shape == (8, 4)
    assert torch.all(at[:, 1:] <= at[:, :-1])
    torch.testing.assert_close(at[:, -1], res.distances)  # the budget above all queries spent
    assert torch.all(at[:, 0] > res.distances)  # the iterations after 200 queries improved
    seen = [0] * 8
    best = torch.full((8, 4), float("inf"))
    for owner, adversarial, dist in log:
        seen[owner] += 1
        for k, budget in enumerate(checkpoints):
            if adversarial and seen[owner] <= budget:
                best[owner, k] = min(float(best[owner, k]), dist)
    assert torch.all(at >= best - 1e-5)
    assert torch.all(torch.isinf(attack(Logger(), x, y, checkpoints=[5], init_tries=50).at_queries))
