"""Training on a streamed shard set: a run interrupted mid-epoch and resumed from its checkpoint
ends bit-identical to an uninterrupted one (CPU), with loader workers taking part."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest
import torch

from pipeline.core.config import TrainSpec
from pipeline.data import open_source, write_shards
from pipeline.data.loaders import SeededTransform
from pipeline.data.shards import ShardDataset
from pipeline.data.transforms import to_pixel_tensor
from pipeline.models import build_model
from pipeline.training import loop
from pipeline.training.checkpoint import CheckpointStore
from pipeline.training.loop import FitContext, SupervisedModule, fit


class Crash(Exception):
    pass


def _train(tmp_path, shard_dir, name: str, crash_at: int | None = None, monkeypatch=None):
    torch.manual_seed(0)
    model = build_model(NS(arch="small_resnet", widths=[4, 4, 8, 8], blocks=[1, 1, 1, 1]), 1, 3, 8)
    shards = ShardDataset(shard_dir, limit=96, shuffle_buffer=8)
    train = SeededTransform(shards, to_pixel_tensor(True, 8, 1, "standard"), seed=5)
    # 96 samples / 16 = 6 steps an epoch; checkpoints at steps 3 and 9 (mid-epoch) and epoch ends.
    spec = TrainSpec(epochs=2, batch_size=16, checkpoint_every=3, seed=5)
    ctx = FitContext(
        spec=spec,
        train_set=train,
        checkpoints=CheckpointStore(tmp_path / name / "ck", "fp"),
        metrics_dir=tmp_path / name / "m",
        device=torch.device("cpu"),
        num_workers=2,
        progress=False,
    )
    if crash_at is not None:
        step = loop._train_step

        def crashing(run, *args, **kwargs):
            if run.global_step == crash_at:
                raise Crash
            return step(run, *args, **kwargs)

        monkeypatch.setattr(loop, "_train_step", crashing)
        with pytest.raises(Crash):
            fit(SupervisedModule(model), ctx)
        monkeypatch.setattr(loop, "_train_step", step)
        state = torch.load(tmp_path / name / "ck" / "last.pt", weights_only=True)
        assert (state["epoch"], state["step_in_epoch"]) == (1, 3)  # resumes mid-epoch 2
        torch.manual_seed(123)  # a fresh process: nothing carries over but the checkpoint
        model = build_model(
            NS(arch="small_resnet", widths=[4, 4, 8, 8], blocks=[1, 1, 1, 1]), 1, 3, 8
        )
    history = fit(SupervisedModule(model), ctx)
    return model.state_dict(), history


def test_interrupted_streamed_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    digits = open_source("digits", None, "train", classes=[0, 1, 2])
    write_shards(digits, tmp_path / "s", maxcount=20, shuffle_seed=0)
    straight, h1 = _train(tmp_path, tmp_path / "s", "straight")
    # Crash after step 11: the last checkpoint is epoch 2 step 3, where two loader workers
    # holding 3 batches each had delivered 2 and 1, so the resumed loader must start at worker 1.
    resumed, h2 = _train(tmp_path, tmp_path / "s", "resumed", crash_at=11, monkeypatch=monkeypatch)
    assert h1 == h2
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
