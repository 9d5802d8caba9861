"""What every caller relies on: counted queries, budgets, box, adversariality, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.attacks import LabelOracle, tangent_attack
from pipeline.attacks.queries import AdversarialQueries, query_budget
from pipeline.attacks.tangent import TangentAttack


def test_query_counts_match_an_independent_counter(linear_binary, counting_predict):
    model = linear_binary(30, seed=3)
    x = model.points(6, dist=0.2)
    counter = counting_predict(model, batch=6)
    res = tangent_attack(counter, x, model(x), iterations=8)
    assert torch.equal(res.queries, counter.per_sample)
    assert int(res.queries.sum()) == counter.total
    # Batched: one model call per step for all samples, not one per sample.
    assert counter.calls < 0.2 * counter.total / 6


def test_query_count_of_a_plain_callable_matches_rows_seen(linear_binary):
    model = linear_binary(30, seed=3)
    x = model.points(1, dist=0.2)
    rows = []

    def predict(inputs):
        rows.append(inputs.shape[0])
        return model(inputs)

    res = tangent_attack(predict, x, model(x), iterations=5)
    assert int(res.queries[0]) == sum(rows)


def test_label_oracle_audits_the_attack(digits_mlp):
    model, x, y = digits_mlp
    oracle = LabelOracle(model, chunk_size=256)
    res = tangent_attack(oracle, x[:5], y[:5], iterations=3)
    assert torch.equal(oracle.counts(5), res.queries)
    assert oracle.total_queries == int(res.queries.sum())


def test_points_are_in_the_box_and_adversarial_when_requeried(linear_binary, digits_mlp):
    """Includes a box that binds: the unconstrained nearest boundary point is outside [0, 1]."""
    model = linear_binary(20, seed=4)
    x = torch.zeros(4, 20)  # a corner; the boundary passes close to it outside the box
    x[:, :10] = 1.0
    x = x + 0.01 * torch.arange(4).unsqueeze(1)
    x = x.clamp(0, 1)
    y = model(x)
    res = tangent_attack(model, x, y, iterations=10)
    assert res.success.all()
    assert float(res.adversarial.min()) >= 0 and float(res.adversarial.max()) <= 1
    assert torch.all(model(res.adversarial) != y)
    assert torch.all(res.distances >= model.distance(x) * (1 - 1e-5))  # the box only adds
    mlp, xd, yd = digits_mlp
    res = tangent_attack(lambda z: mlp(z).argmax(1), xd[:12], yd[:12], iterations=5)
    assert res.success.all()
    adv = res.adversarial
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    # Re-queried in a different batch composition: all at once, reversed, one by one.
    assert torch.all(mlp(adv).argmax(1) != yd[:12])
    assert torch.all(mlp(adv.flip(0)).argmax(1).flip(0) != yd[:12])
    assert all(int(mlp(a[None]).argmax(1)) != int(t) for a, t in zip(adv, yd[:12]))
    torch.testing.assert_close(res.distances, torch.linalg.vector_norm(adv - xd[:12], dim=1))


def test_same_seed_same_result_other_seed_other_result(digits_mlp):
    model, x, y = digits_mlp

    def predict(z):
        return model(z).argmax(1)

    a = tangent_attack(predict, x[:6], y[:6], iterations=4, seed=11)
    b = tangent_attack(predict, x[:6], y[:6], iterations=4, seed=11)
    c = tangent_attack(predict, x[:6], y[:6], iterations=4, seed=12)
    assert torch.equal(a.adversarial, b.adversarial)
    assert torch.equal(a.distances, b.distances) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.adversarial, c.adversarial)


@pytest.mark.parametrize("verify", [True, False])
def test_budget_is_never_exceeded(digits_mlp, counting_predict, verify):
    model, x, y = digits_mlp
    budget = torch.tensor([0, 1, 30, 300, 700, 1500, 5000, 20000])
    counter = counting_predict(lambda z: model(z).argmax(1), batch=8)
    res = tangent_attack(counter, x[:8], y[:8], iterations=1000, max_queries=budget, verify=verify)
    assert torch.all(counter.per_sample <= budget)
    assert torch.equal(res.queries, counter.per_sample)
    assert not res.success[0] and int(res.queries[0]) == 0
    assert res.success[3:].all()  # a few hundred queries already find a boundary point
    assert torch.all(model(res.adversarial[res.success]).argmax(1) != y[:8][res.success])
    # The larger budgets were used almost fully: a sample stops only when it cannot afford
    # one more probe, tangent test and full search (≈ 10 + 2 queries at d = 64).
    assert torch.all(budget[4:] - res.queries[4:] < 20)
    # More budget, shorter distances (on average over these samples).
    assert res.distances[6:].mean() < res.distances[3:5].mean() * 1.2


def test_int_budget_and_zero_iterations(linear_binary):
    model = linear_binary(10, seed=5)
    x = model.points(3, dist=0.2)
    res = tangent_attack(model, x, model(x), iterations=50, max_queries=400)
    assert torch.all(res.queries <= 400) and res.success.all()
    res0 = tangent_attack(model, x, model(x), iterations=0)
    assert res0.success.all() and torch.all(res0.iterations == 0)
    assert torch.all(res0.distances >= res.distances)  # the search from noise alone is worse


def test_misclassified_inputs_cost_one_query_and_have_distance_zero(linear_binary):
    model = linear_binary(10, seed=5)
    x = model.points(4, dist=0.2)
    y = model(x)
    y[1] = 1 - y[1]  # wrong label: x[1] is "adversarial" already
    res = tangent_attack(model, x, y, iterations=3)
    assert res.misclassified.tolist() == [False, True, False, False]
    assert res.success.all() and float(res.distances[1]) == 0 and int(res.queries[1]) == 1
    assert torch.equal(res.adversarial[1], x[1])


def test_hopeless_samples_fail_cleanly_within_the_tries():
    x = torch.rand(3, 8)
    y = torch.zeros(3, dtype=torch.long)
    res = tangent_attack(lambda z: torch.zeros(z.shape[0], dtype=torch.long), x, y, init_tries=37)
    assert not res.success.any()
    assert torch.all(torch.isinf(res.distances))
    assert torch.equal(res.adversarial, x)
    assert torch.all(res.queries <= 1 + 37)  # the label check plus the bounded noise tries
    assert torch.all(res.iterations == 0)


def test_image_shaped_inputs_through_a_conv_net_and_oracle():
    """A conv net whose class is (about) the brightest channel: balanced labels on noise."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 3, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(0.05)
        conv.weight[:, :, 1, 1] += torch.eye(3)
        conv.bias.zero_()
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    oracle = LabelOracle(net, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), chunk_size=100)
    x = torch.rand(6, 3, 8, 8)
    y = oracle(x)
    oracle.reset_counts()
    pool = torch.rand(64, 3, 8, 8)
    res = tangent_attack(oracle, x, y, iterations=3, fallback_pool=(pool, oracle(pool)))
    assert res.adversarial.shape == x.shape and res.adversarial.dtype == torch.float32
    assert res.success.all()
    assert torch.all(oracle(res.adversarial) != y)


def test_verify_pushes_a_flipped_boundary_point_back_out(linear_binary):
    """Emulates a model whose label at the boundary depends on the batch (rounding, autocast):
    the threshold moves by a hair after the search, so the returned points must move out."""
    model = linear_binary(16, seed=6)
    x = model.points(8, dist=0.2)[1::2]  # all on the class-0 side
    shift = [0.0]

    def predict(z):
        return (model.signed_distance(z) > shift[0]).long()

    y = predict(x)
    assert torch.all(y == 0)
    attack = TangentAttack(
        AdversarialQueries(predict, y, (16,)), x, query_budget(None, 4, x.device),
        gamma=1.0, box=(0.0, 1.0), seed=0, max_probe_elements=2**20, verify=True,
    )  # fmt: skip
    attack.start(100, None, None)
    for t in range(1, 6):
        attack.iterate(t, 100, 10_000, 20)
    before = attack.best_dist.clone()
    shift[0] = float(model.signed_distance(attack.best).max()) + 1e-4  # boundary moves out
    assert torch.all(predict(attack.best) == y)  # every boundary point has flipped
    queries = attack.oracle.count.clone()
    res = attack.finish(x.shape)
    assert torch.all(predict(res.adversarial) != y)
    assert torch.all(res.distances > before) and torch.all(res.distances < before + 0.01)
    assert torch.all(res.queries > queries)  # the check and the rungs are counted


def test_the_schema_allows_exactly_the_registered_methods():
    """``attack.methods`` in params.yaml is checked against a literal in core; it must name
    every attack of ``METHODS`` and nothing else."""
    import typing

    from pipeline.attacks.methods import METHODS
    from pipeline.core.config import AttackSpec

    (literal,) = typing.get_args(AttackSpec.model_fields["methods"].annotation)
    assert set(typing.get_args(literal)) == set(METHODS)
