"""Progress of a stage: the lines the flow reads, their rate, the plain lines, and that showing
progress changes no result (training, prepare)."""

from __future__ import annotations

import io
from types import SimpleNamespace as NS

import pytest
import torch

from flows.progress import parse
from pipeline.core.progress import LineSchedule, Progress, format_line


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_a_line_the_flow_parses_back():
    line = format_line("finetune@d-none-0-none-0", 12, 40, "steps",
                       {"epoch": "2/5", "loss": 0.123456, "odd": "a b"})  # fmt: skip
    update = parse(line)
    assert (update.ident, update.done, update.total, update.unit) == (
        "finetune@d-none-0-none-0", 12, 40, "steps")  # fmt: skip
    assert update.fields == {"epoch": "2/5", "loss": "0.1235", "odd": "a_b"}
    assert update.percent == 30.0
    assert parse("PROGRESS bad x 3 steps") is None and parse("epoch=1 train_loss=0.5") is None


def test_lines_for_the_flow_are_rate_bounded_and_the_last_always_arrives(monkeypatch):
    monkeypatch.setenv("PIPELINE_PROGRESS", "pretrain@none-0")
    monkeypatch.setenv("PIPELINE_PROGRESS_EVERY", "1")
    clock, out = Clock(), io.StringIO()
    with Progress("x", 100, "steps", stream=out, clock=clock) as progress:
        for step in range(1, 100):  # 99 updates over 9.9 s
            clock.t = step / 10
            progress.update(step)
    sent = [parse(line).done for line in out.getvalue().splitlines()]
    assert sent[0] == 1 and sent[-1] == 99  # the first, and the last though throttled
    assert 9 <= len(sent) <= 12  # about one a second


def test_plain_lines_come_each_tenth_but_never_two_within_ten_seconds():
    clock = Clock()
    schedule = LineSchedule(clock=clock)
    times = []
    for second in range(501):  # 500 s, linear progress: a tenth every 50 s
        clock.t = second
        if schedule.due(second, 500):
            times.append(second)
    assert times == list(range(0, 501, 50))  # each tenth; never a quiet minute
    slow = LineSchedule(clock=clock)
    times = []
    for second in range(1001):  # a tenth every 100 s: a line after each quiet minute too
        clock.t = second
        times += [second] if slow.due(second, 1000) else []
    assert times[:4] == [0, 60, 100, 160] and times[-1] == 1000
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 10
    fast = LineSchedule(clock=clock)
    clock.t = 0.0
    shown = []
    for i in range(1, 101):  # a whole run within 0.1 s: the first and the last line only
        clock.t = i / 1000
        shown += [i] if fast.due(i, 100) else []
    assert shown == [1, 100]


def test_no_terminal_and_no_flow_means_no_output(monkeypatch):
    monkeypatch.delenv("PIPELINE_PROGRESS", raising=False)
    out = io.StringIO()
    progress = Progress("x", 10, stream=out, enabled=False)
    progress.update(5)
    progress.close()
    assert not progress.active and out.getvalue() == ""


def _fit(tmp_path, name):
    from pipeline.core.config import TrainSpec
    from pipeline.models import build_model
    from pipeline.training.checkpoint import CheckpointStore
    from pipeline.training.loop import FitContext, SupervisedModule, fit

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.rand(64, 1, 8, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    )
    torch.manual_seed(0)
    arch = NS(arch="small_resnet", widths=[4, 4, 8, 8], blocks=[1, 1, 1, 1])
    model = build_model(arch, 1, 3, 8)
    ctx = FitContext(
        spec=TrainSpec(epochs=2, batch_size=16), train_set=data,
        checkpoints=CheckpointStore(tmp_path / name / "ck", "a"),
        metrics_dir=tmp_path / name / "m", device=torch.device("cpu"), progress=False,
    )  # fmt: skip
    fit(SupervisedModule(model), ctx)
    return model


def test_training_reports_steps_and_epochs_and_trains_the_same(tmp_path, monkeypatch, capsys):
    quiet = _fit(tmp_path, "quiet")
    monkeypatch.setenv("PIPELINE_PROGRESS", "pretrain@none-0")
    monkeypatch.setenv("PIPELINE_PROGRESS_EVERY", "0")
    watched = _fit(tmp_path, "watched")
    updates = [parse(line) for line in capsys.readouterr().err.splitlines() if parse(line)]
    # 64 samples / batch 16 = 4 steps an epoch, 2 epochs: one line a step.
    assert [u.done for u in updates] == list(range(1, 9))
    assert {u.total for u in updates} == {8} and {u.unit for u in updates} == {"steps"}
    assert updates[3].fields["epoch"] == "1/2" and updates[3].fields["step"] == "4/4"
    assert updates[-1].fields["epoch"] == "2/2"
    for a, b in zip(quiet.state_dict().values(), watched.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_prepare_counts_every_image(workdir, monkeypatch, capsys):
    from pipeline.core.config import load_config
    from pipeline.stages import prepare

    monkeypatch.setenv("PIPELINE_PROGRESS", "prepare@digits_0to4")
    monkeypatch.setenv("PIPELINE_PROGRESS_EVERY", "1000")  # first and last only
    summary = prepare.run(load_config("params.yaml"), "digits_0to4")
    updates = [parse(line) for line in capsys.readouterr().err.splitlines() if parse(line)]
    images = sum(split["samples"] for split in summary.values())
    assert updates[0].done == 1 and updates[-1].done == updates[-1].total == images
    assert updates[-1].unit == "images" and updates[-1].fields["split"] == "test"
    assert len(updates) == 2


@pytest.fixture(autouse=True)
def _no_flow(monkeypatch):
    monkeypatch.delenv("PIPELINE_PROGRESS", raising=False)
    monkeypatch.delenv("PIPELINE_PROGRESS_EVERY", raising=False)
