"""The in-memory trainer: regularizers act through the optimizer, and both shortcuts are exact."""

from __future__ import annotations

import torch

from pipeline.experiments.common import mlp
from pipeline.experiments.trainer import (
    TrainSettings,
    sigma_max_per_layer,
    train_in_memory,
    train_stacked,
)
from pipeline.experiments.xor import xor_data
from pipeline.regularizers import build_regularizers

FEATURE = "backbone.net.1"


def _xor_model(seed: int):
    return mlp(2, 1, [8], "gelu", 2, seed)


def _reg(name: str, strength: float, burn_in: int):
    return build_regularizers(
        [{"name": name, "strength": strength, "burn_in": burn_in, "refresh_every": 1}]
    )


def _close(a, b, atol=1e-5):
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.allclose(sa[k], sb[k], atol=atol, rtol=0) for k in sa)


def test_regularizers_lower_sigma_max_on_a_short_xor_run():
    """rep-spectral lowers the feature layer's σ_max vs none; ll-spectral lowers the readout's."""
    x, y = xor_data()
    settings = TrainSettings(epochs=300, lr=1.0, momentum=0.9, log_every=300)
    plain = train_in_memory(
        _xor_model(0), x, y, TrainSettings(**{**settings.__dict__, "epochs": 150})
    )
    finals = {}
    for name in ("none", "rep_spectral", "ll_spectral"):
        model = _xor_model(0)
        regs = [] if name == "none" else _reg(name, 2e-2, burn_in=150)
        train_in_memory(model, x, y, settings, regs, start=plain.snapshot)
        finals[name] = sigma_max_per_layer(model)
        assert (model(x).argmax(1) == y).all(), name  # still solves XOR
    assert finals["rep_spectral"][FEATURE] < 0.9 * finals["none"][FEATURE]
    assert finals["ll_spectral"]["head"] < 0.9 * finals["none"]["head"]
    # rep-spectral leaves the readout alone: it does not shrink like under ll-spectral.
    assert finals["rep_spectral"]["head"] > finals["ll_spectral"]["head"]


def test_history_logs_sigma_and_penalty_only_after_burn_in():
    x, y = xor_data()
    model = _xor_model(1)
    res = train_in_memory(
        model, x, y, TrainSettings(epochs=60, lr=1.0, log_every=20), _reg("rep_spectral", 1e-2, 40)
    )
    assert [h["epoch"] for h in res.history] == [20, 40, 60]
    assert res.history[0]["penalty"] == 0.0 and res.history[-1]["penalty"] > 0.0
    assert {f"sigma/{FEATURE}", "sigma/head"} <= set(res.history[-1])


def test_stacked_training_matches_one_model_at_a_time():
    x, y = xor_data()
    settings = TrainSettings(epochs=150, lr=1.0, momentum=0.9, weight_decay=1e-3, log_every=50)
    stacked = [_xor_model(s) for s in range(3)]
    stacked_res = train_stacked(stacked, x, y, settings)
    for seed, model in enumerate(stacked):
        alone = _xor_model(seed)
        alone_res = train_in_memory(alone, x, y, settings)
        assert _close(model, alone)
        h_a, h_b = stacked_res[seed].history[-1], alone_res.history[-1]
        assert abs(h_a[f"sigma/{FEATURE}"] - h_b[f"sigma/{FEATURE}"]) < 1e-4


def test_branching_at_burn_in_equals_a_straight_run_full_batch_and_minibatch():
    """Plain phase once + continue from the snapshot == one uninterrupted regularized run."""
    g = torch.Generator().manual_seed(0)
    data = {
        "full": (xor_data(), None, _xor_model),
        "mini": (
            (torch.rand(40, 2, generator=g), torch.randint(0, 2, (40,), generator=g)),
            16,
            _xor_model,
        ),
    }
    for (x, y), batch, make in data.values():
        settings = TrainSettings(epochs=30, lr=0.5, momentum=0.9, weight_decay=1e-3,
                                 batch_size=batch, seed=3, log_every=10)  # fmt: skip
        straight = make(0)
        train_in_memory(straight, x, y, settings, _reg("ll_spectral", 1e-2, burn_in=20))
        plain = train_in_memory(make(0), x, y, TrainSettings(**{**settings.__dict__, "epochs": 20}))
        branched = make(0)
        train_in_memory(
            branched, x, y, settings, _reg("ll_spectral", 1e-2, burn_in=20), start=plain.snapshot
        )
        assert _close(straight, branched, atol=1e-6)


def test_stacked_branch_resumes_momentum():
    x, y = xor_data()
    full = TrainSettings(epochs=80, lr=1.0, momentum=0.9, log_every=40)
    straight = [_xor_model(s) for s in range(2)]
    train_stacked(straight, x, y, full)
    first = [_xor_model(s) for s in range(2)]
    half = train_stacked(first, x, y, TrainSettings(**{**full.__dict__, "epochs": 40}))
    resumed = [_xor_model(s) for s in range(2)]
    train_stacked(resumed, x, y, full, starts=[r.snapshot for r in half])
    for a, b in zip(straight, resumed):
        assert _close(a, b, atol=1e-6)
