"""DDP on CPU: two processes under ``torchrun`` train exactly like one with the same global batch.

This file is both the pytest module and the worker script ``torchrun`` starts. The worker trains
a small MLP with rep-spectral switched on after the first epoch (so the power-iteration state
is exercised) through the real :func:`pipeline.training.loop.fit`, then saves its final state
per rank. The tests compare:

* the per-epoch loss of 2 ranks × local batch 8 with 1 process × batch 16 (rtol 1e-5);
* the final weights and power-iteration vectors of rank 0 and rank 1 (bit-identical), and
  against the single process (atol 1e-5);
* a 2-rank run that crashes mid-epoch and is restarted: it resumes on both ranks from rank 0's
  checkpoint and ends with the uninterrupted run's history and weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EPOCHS, N, BATCH = 3, 96, 16  # 6 steps per epoch in both layouts
CRASH_EPOCH, CRASH_AFTER_BATCHES = 1, 3  # after the checkpoint at global step 8 (epoch 1, step 2)


def worker(out: Path, crash: bool) -> None:
    """One rank (or the only process): train, then save state; crash mid-epoch 1 if asked."""
    sys.path.insert(0, str(REPO))
    import torch
    from torch.utils.data import Dataset

    from pipeline.core.config import ModelSpec, TrainSpec
    from pipeline.models import build_model
    from pipeline.regularizers import build_regularizers
    from pipeline.runtime import device as runtime
    from pipeline.runtime.distributed import init_distributed
    from pipeline.training.checkpoint import CheckpointStore
    from pipeline.training.loop import FitContext, SupervisedModule, fit

    torch.set_num_threads(1)  # the same kernels (and summation order) in every layout

    class Blobs(Dataset):
        """Fixed random 4x4 images labelled by a random linear map (learnable, not trivial)."""

        def __init__(self, local_batch: int):
            g = torch.Generator().manual_seed(0)
            self.x = torch.rand(N, 1, 4, 4, generator=g)
            self.y = (self.x.flatten(1) @ torch.randn(16, 3, generator=g)).argmax(1)
            self.crash_after = CRASH_AFTER_BATCHES * local_batch if crash else None
            self.epoch, self.fetched = 0, 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch, self.fetched = epoch, 0

        def __len__(self) -> int:
            return N

        def __getitem__(self, i: int):
            if self.crash_after is not None and self.epoch == CRASH_EPOCH:
                self.fetched += 1
                if self.fetched > self.crash_after:
                    raise RuntimeError("simulated crash")
            return self.x[i], self.y[i]

    device = torch.device("cpu")
    info = init_distributed(device)
    runtime.seed_everything(0)
    model = build_model(ModelSpec(arch="mlp", hidden=[32, 16]), 1, 3, 4)
    spec = TrainSpec(
        epochs=EPOCHS,
        batch_size=BATCH,
        checkpoint_every=4,
        optimizer={"lr_backbone": 0.2, "lr_head": 0.2, "momentum": 0.9, "weight_decay": 1e-4},
        gpus=info.world,
    )
    regs = build_regularizers(
        [{"name": "rep_spectral", "strength": 0.05, "burn_in": 1, "refresh_every": 3}]
    )
    data = Blobs(BATCH // info.world)
    history = fit(
        SupervisedModule(model),
        FitContext(
            spec=spec,
            train_set=data,
            checkpoints=CheckpointStore(out / "checkpoint", "fixed"),
            metrics_dir=out / "metrics",
            device=device,
            dist=info,
            regularizers=regs,
            progress=False,
            example_inputs=data.x[:4],
        ),
    )
    torch.save(
        {"model": model.state_dict(), "reg": regs[0].state_dict()}, out / f"rank{info.rank}.pt"
    )
    if info.is_main:
        (out / "history.json").write_text(json.dumps(history))


# --- the tests --------------------------------------------------------------------------------


def _launch(out: Path, nproc: int, crash: bool = False) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    script = [str(Path(__file__).resolve()), str(out), *(["--crash"] if crash else [])]
    if nproc == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", *script]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _history(out: Path) -> list[dict]:
    return json.loads((out / "history.json").read_text())


def _state(path: Path) -> dict:
    import torch

    state = torch.load(path, weights_only=True)
    return {f"{part}.{k}": v for part, sd in state.items() for k, v in sd.items()}


def _losses(history: list[dict]) -> list[float]:
    return [row["train_loss"] for row in history]


@pytest.mark.slow  # two gloo ranks train, crash and resume: about 40 CPU-seconds
def test_two_ranks_match_one_process_and_resume_after_a_crash(tmp_path):
    import numpy as np
    import torch

    single, ddp, crashed = tmp_path / "single", tmp_path / "ddp", tmp_path / "crashed"
    _check(_launch(single, 1))
    _check(_launch(ddp, 2))

    # Same per-epoch losses, and the regularizer was really on after burn-in.
    one, two = _history(single), _history(ddp)
    assert len(one) == len(two) == EPOCHS
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-6)
    assert all(row["penalty"] > 0 for row in two[1:]) and two[0]["penalty"] == 0
    assert [r["train_acc"] for r in two] == [r["train_acc"] for r in one]

    # Rank 0 and rank 1 end with identical weights and power-iteration vectors.
    r0, r1 = _state(ddp / "rank0.pt"), _state(ddp / "rank1.pt")
    assert any(k.startswith("reg.estimators") for k in r0)
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    ref = _state(single / "rank0.pt")
    for key in r0:
        torch.testing.assert_close(r0[key].float(), ref[key].float(), atol=1e-5, rtol=1e-5)

    # A crash mid-epoch, then a restart: both ranks resume from rank 0's checkpoint.
    failed = _launch(crashed, 2, crash=True)
    assert failed.returncode != 0 and "simulated crash" in failed.stdout + failed.stderr
    assert (crashed / "checkpoint" / "last.pt").is_file()
    assert not (crashed / "history.json").exists() or len(_history(crashed)) < EPOCHS
    _check(_launch(crashed, 2))
    np.testing.assert_allclose(_losses(_history(crashed)), _losses(two), rtol=1e-6)
    resumed = _state(crashed / "rank1.pt")
    for key in r0:
        torch.testing.assert_close(resumed[key], r0[key], atol=1e-6, rtol=1e-6)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--crash", action="store_true")
    ns = parser.parse_args()
    worker(ns.out, ns.crash)
