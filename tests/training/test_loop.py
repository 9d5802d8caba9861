"""The training loop's contracts: schedules, NaN stop, checkpoint identity, optimizer groups."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace as NS

import pytest
import torch

from pipeline.core.config import ScheduleSpec, TrainSpec
from pipeline.core.errors import TrainingError
from pipeline.data.loaders import EpochSampler
from pipeline.models import build_model
from pipeline.runtime import device as runtime
from pipeline.training import loop
from pipeline.training.checkpoint import CheckpointStore
from pipeline.training.loop import FitContext, SupervisedModule, fit
from pipeline.training.schedule import lr_multiplier


def test_cosine_period_is_the_run_length_unless_set():
    f = lr_multiplier(ScheduleSpec(kind="cosine"), epochs=7, steps_per_epoch=3)
    assert f(0) == pytest.approx(1.0)
    assert f(7 * 3 // 2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 10 / 21)))
    assert f(21) == pytest.approx(0.0, abs=1e-12)
    g = lr_multiplier(ScheduleSpec(kind="cosine", t_max=14), epochs=7, steps_per_epoch=3)
    assert g(21) == pytest.approx(0.5)


def test_step_schedule_and_warmup():
    f = lr_multiplier(
        ScheduleSpec(kind="step", step_size=30, gamma=0.1), epochs=120, steps_per_epoch=2
    )
    assert f(59) == 1.0 and f(60) == pytest.approx(0.1) and f(180) == pytest.approx(1e-3)
    w = lr_multiplier(ScheduleSpec(kind="constant", warmup_epochs=2), epochs=5, steps_per_epoch=5)
    assert w(0) == pytest.approx(0.1) and w(9) == pytest.approx(1.0) and w(20) == 1.0


def test_sampler_is_a_permutation_sharded_by_rank_and_skips_on_resume():
    full = EpochSampler(10, seed=3)
    full.set_epoch(1)
    order = list(full)
    assert sorted(order) == list(range(10))
    shards = []
    for rank in range(3):
        s = EpochSampler(10, seed=3, rank=rank, world=3)
        s.set_epoch(1)
        shards.append(list(s))
    assert {len(s) for s in shards} == {4} and set(sum(shards, [])) == set(range(10))
    full.set_epoch(1, skip=4)
    assert list(full) == order[4:]
    full.set_epoch(2)
    assert list(full) != order


class _Tensors(torch.utils.data.Dataset):
    def __init__(self, n=64, size=8):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 1, size, size, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _ctx(tmp_path, spec, fp="a"):
    return FitContext(
        spec=spec,
        train_set=_Tensors(),
        checkpoints=CheckpointStore(tmp_path / "ck", fp),
        metrics_dir=tmp_path / "m",
        device=torch.device("cpu"),
        progress=False,
    )


def _model():
    torch.manual_seed(0)
    return build_model(NS(arch="small_resnet", widths=[4, 4, 8, 8], blocks=[1, 1, 1, 1]), 1, 3, 8)


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    spec = TrainSpec(
        epochs=3,
        batch_size=16,
        checkpoint_every=1,
        optimizer={"lr_backbone": 1e30, "lr_head": 1e30, "weight_decay": 0.0},
    )
    with pytest.raises(TrainingError, match="non-finite loss") as info:
        fit(SupervisedModule(_model()), _ctx(tmp_path, spec))
    assert "last good checkpoint kept" in str(info.value)
    state = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["module"].values() if v.is_floating_point())


def test_checkpoint_from_other_parameters_is_not_resumed(tmp_path):
    spec = TrainSpec(epochs=1, batch_size=16)
    fit(SupervisedModule(_model()), _ctx(tmp_path, spec, fp="first"))
    assert CheckpointStore(tmp_path / "ck", "first").load()["done"]
    assert CheckpointStore(tmp_path / "ck", "second").load() is None


def test_new_head_is_in_the_optimizer_after_replacement(tmp_path):
    model = _model()
    model.replace_head(3)
    before = model.head.weight.detach().clone()
    fit(SupervisedModule(model), _ctx(tmp_path, TrainSpec(epochs=1, batch_size=16)))
    assert not torch.equal(before, model.head.weight.detach())


def test_finished_run_rewrites_its_history_when_resumed(tmp_path):
    spec = TrainSpec(epochs=1, batch_size=16)
    fit(SupervisedModule(_model()), _ctx(tmp_path, spec))
    history = tmp_path / "m" / "history.csv"
    before = history.read_text()
    history.unlink()  # what DVC does to a stage's outputs before re-running it
    fit(SupervisedModule(_model()), _ctx(tmp_path, spec))
    assert history.read_text() == before


class _CallCounter:
    """Counts calls of one bound method and forwards them."""

    def __init__(self, method):
        self.method, self.calls = method, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.method(*args, **kwargs)


def test_float16_autocast_steps_go_through_a_grad_scaler(tmp_path, monkeypatch):
    with monkeypatch.context() as cuda:  # a GPU without bf16, e.g. a V100
        cuda.setattr(torch.cuda, "is_available", lambda: True)
        cuda.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
        chosen = runtime.precision(torch.device("cuda"), enabled=True)
        assert runtime.precision(torch.device("cuda"), enabled=False).dtype is None
    assert chosen.dtype == torch.float16 and isinstance(chosen.scaler, torch.amp.GradScaler)
    # The same float16 + scaler recipe, run on the CPU so the loop really executes it.
    scaler = chosen.scaler
    spies = {name: _CallCounter(getattr(scaler, name)) for name in ("scale", "step", "update")}
    for name, spy in spies.items():
        monkeypatch.setattr(scaler, name, spy)
    monkeypatch.setattr(
        runtime, "precision", lambda device, enabled: replace(chosen, device_type="cpu")
    )
    model = _model()
    before = model.head.weight.detach().clone()
    spec = TrainSpec(epochs=1, batch_size=16)  # 64 samples: 4 steps
    fit(SupervisedModule(model), _ctx(tmp_path, spec))
    assert {name: spy.calls for name, spy in spies.items()} == {"scale": 4, "step": 4, "update": 4}
    assert not torch.equal(before, model.head.weight.detach())
    saved = CheckpointStore(tmp_path / "ck", "a").load()
    assert saved["scaler"]["scale"] == scaler.get_scale()


def test_a_training_step_never_reads_device_values(tmp_path, monkeypatch):
    inside = {"step": False}
    real_step = loop._train_step

    def watched_step(*args, **kwargs):
        inside["step"] = True
        try:
            real_step(*args, **kwargs)
        finally:
            inside["step"] = False

    def forbid(name):
        real = getattr(torch.Tensor, name)

        def guard(self, *args, **kwargs):
            assert not inside["step"], f"Tensor.{name} (a host sync) inside a training step"
            return real(self, *args, **kwargs)

        return guard

    monkeypatch.setattr(loop, "_train_step", watched_step)
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, forbid(name))
    model = _model()
    history = fit(SupervisedModule(model), _ctx(tmp_path, TrainSpec(epochs=2, batch_size=16)))
    # The sums read at epoch end are still right: an independent recount of the last epoch.
    assert len(history) == 2 and 0.0 <= history[-1]["train_acc"] <= 1.0
    assert history[-1]["train_loss"] == pytest.approx(history[-1]["task_loss"])


def test_non_finite_loss_between_checkpoints_keeps_the_last_boundary(tmp_path):
    spec = TrainSpec(
        epochs=3,
        batch_size=16,
        checkpoint_every=3,
        optimizer={"lr_backbone": 1e30, "lr_head": 1e30, "weight_decay": 0.0},
    )
    with pytest.raises(TrainingError, match=r"non-finite loss .* at epoch \d+ step \d+") as info:
        fit(SupervisedModule(_model()), _ctx(tmp_path, spec))
    assert "last good checkpoint kept" in str(info.value)
    path = tmp_path / "ck" / "last.pt"
    if path.exists():  # only boundaries (every 3rd step or an epoch end) are ever written
        state = torch.load(path, weights_only=False)
        assert state["global_step"] % 3 == 0 or state["step_in_epoch"] == 0
        floats = [v for v in state["module"].values() if v.is_floating_point()]
        assert all(torch.isfinite(v).all() for v in floats)
