"""Which queues a pool's stages go to: ``run.device`` decides, and ``auto`` on a pool whose
workers have never had a GPU runs on their CPUs; otherwise a missing queue is one line naming
it (and the setting, where changing it would help)."""

from __future__ import annotations

import pytest

from flows.pool import pool_device
from pipeline.core.errors import ConfigError
from pipeline.plan import StageInstance

STAGES = [
    StageInstance(id="prepare@d", stage="prepare", item={}, gpus=0),
    StageInstance(id="pretrain@none-0", stage="pretrain", item={}, gpus=2, trains=True),
    StageInstance(id="attack@x", stage="attack", item={}, gpus=1),
]


def test_auto_on_a_pool_of_cpu_workers_runs_on_their_cpus():
    assert pool_device("lab", STAGES, "auto", served={"cpu"}) == "cpu"


def test_auto_on_a_pool_with_gpu_workers_never_falls_back_to_cpus():
    with pytest.raises(ConfigError, match=r"--pool lab: no worker has served queue 'gpu2'") as e:
        pool_device("lab", STAGES, "auto", served={"cpu", "gpu1"})
    assert "run.device" not in str(e.value)  # a GPU worker is missing, not a setting


def test_cuda_on_a_pool_of_cpu_workers_names_the_setting():
    with pytest.raises(ConfigError, match=r"run.device is cuda.*--set run.device=cpu"):
        pool_device("lab", STAGES, "cuda", served={"cpu"})


def test_every_queue_served_keeps_the_device():
    assert pool_device("lab", STAGES, "auto", served={"cpu", "gpu1", "gpu2"}) == "auto"
    assert pool_device("lab", STAGES, "cpu", served={"cpu"}) == "cpu"


def test_a_pool_nobody_served_says_to_start_a_worker():
    with pytest.raises(ConfigError, match=r"queue 'cpu'.*python -m flows.worker --pool lab"):
        pool_device("lab", STAGES, "cpu", served=set())
