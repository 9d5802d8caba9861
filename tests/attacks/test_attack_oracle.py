"""LabelOracle: hard labels only, normalization inside, bounded chunks, per-sample counting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.attacks import LabelOracle
from pipeline.attacks.oracle import UnsupportedPrecision


class Recorder(nn.Module):
    """A linear classifier on flattened images that records the batch sizes and grad mode seen."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 4 * 4, 5)
        self.batches: list[int] = []
        self.grad_enabled: list[bool] = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.fc(x.flatten(1))


def test_labels_are_argmax_of_the_normalized_model():
    model = Recorder()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    oracle = LabelOracle(model, mean, std)
    x = torch.rand(40, 3, 4, 4)
    expected = model((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    labels = oracle(x)
    assert labels.dtype == torch.long and labels.shape == (40,)
    assert torch.equal(labels, expected.argmax(1))
    # Without normalization the labels differ for some inputs: the oracle really normalizes.
    assert not torch.equal(LabelOracle(model)(x), labels)


def test_chunks_bound_the_batch_without_changing_labels():
    model = Recorder()
    x = torch.rand(50, 3, 4, 4)
    reference = LabelOracle(model, chunk_size=1000)(x)
    model.batches.clear()
    labels = LabelOracle(model, chunk_size=7)(x)
    assert torch.equal(labels, reference)
    assert max(model.batches) == 7 and sum(model.batches) == 50
    assert not any(model.grad_enabled)


def test_counts_queries_per_sample_and_in_total():
    oracle = LabelOracle(Recorder(), chunk_size=8)
    oracle(torch.rand(5, 3, 4, 4), owners=torch.tensor([0, 0, 2, 2, 2]))
    oracle(torch.rand(3, 3, 4, 4), owners=torch.tensor([4, 0, 2]))
    oracle(torch.rand(6, 3, 4, 4))  # unattributed rows still count in the total
    assert oracle.total_queries == 14
    assert oracle.counts(6).tolist() == [3, 0, 4, 0, 1, 0]
    assert oracle.counts(2).tolist() == [3, 0]
    oracle.reset_counts()
    assert oracle.total_queries == 0 and oracle.counts(3).tolist() == [0, 0, 0]


def test_accepts_a_plain_label_callable():
    calls = []

    def predict(x):
        calls.append(x.shape[0])
        return (x.flatten(1).sum(1) > 8).long()

    oracle = LabelOracle(predict, chunk_size=4)
    x = torch.rand(10, 16)
    assert torch.equal(oracle(x), (x.sum(1) > 8).long())
    assert calls == [4, 4, 2]


@pytest.mark.parametrize(
    "kwargs",
    [dict(mean=(0.5,)), dict(std=(0.5,)), dict(chunk_size=0), dict(mean=(0.5,), std=(0.0,))],
)
def test_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        LabelOracle(Recorder(), **kwargs)


def test_rejects_mismatched_owners_and_bad_outputs():
    oracle = LabelOracle(Recorder())
    with pytest.raises(ValueError, match="owners"):
        oracle(torch.rand(3, 3, 4, 4), owners=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="logits"):
        LabelOracle(lambda x: torch.rand(x.shape[0]))(torch.rand(3, 2))


def test_precision_names_and_an_unsupported_precision_are_reported():
    with pytest.raises(ValueError, match="allowed: fp32, bf16, fp16"):
        LabelOracle(Recorder(), precision="fp8")

    class Fp32Only(torch.nn.Module):
        def forward(self, x):
            if torch.is_autocast_enabled(x.device.type):
                raise RuntimeError("kernel not implemented for 'Half'\nmore detail")
            return torch.zeros(x.shape[0], 3)

    assert LabelOracle(Fp32Only())(torch.rand(2, 4)).tolist() == [0, 0]
    with pytest.raises(UnsupportedPrecision, match="^fp16 on cpu: kernel not implemented"):
        LabelOracle(Fp32Only(), precision="fp16")(torch.rand(2, 4))


def test_bf16_labels_match_fp32_away_from_ties():
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 4)
    x = torch.rand(200, 16)
    ref = LabelOracle(model)(x)
    logits = model(x).detach().sort(dim=1).values
    clear = (logits[:, -1] - logits[:, -2]) > 0.1  # margins far above bf16 rounding
    assert torch.equal(LabelOracle(model, precision="bf16")(x)[clear], ref[clear])
