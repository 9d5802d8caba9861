"""Wall time of the transfer DAG on a pool of 1 and of 2 workers, side by side in one run.

``python benchmarks/flow_workers.py [--pretrain-epochs N] [--variants none rep_spectral]
[--seeds 0]``

Each measurement builds a fresh tiny git + DVC project (a local-directory DVC remote), clones it
once per worker, starts ``python -m flows.worker`` in every clone and times
``flows.transfer(pool=...)`` from submission to the last recorded stage. Both use one temporary
Prefect server. The DAG is the tests' small variant (digits, 8x8 images, tiny ResNet): the
default ``params.yaml`` DAG takes hours on a 2-core CPU machine. With 2 pretraining variants at
one pretraining seed it has 2 + 2 + 2 + 2 + 4 + 1 = 13 instances; the model stages (10) run on
the workers (each further seed adds 10 more).

On a machine with fewer cores than workers x threads the workers compete for the CPU, so the
ratio is a lower bound of what separate GPU machines give; the per-stage overhead (a Prefect
run, DVC pull/push) is part of both timings.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(workers: int, params: dict, base: Path) -> float:
    from flows import transfer as flow_module
    from tests.flows.test_workers import POOL, Worker, make_pool_project

    tmp = base / f"pool{workers}"
    tmp.mkdir()
    (tmp / "remote").mkdir()
    project = make_pool_project(tmp / "p", params, tmp / "remote")
    started = [Worker(f"w{i + 1}", project, tmp) for i in range(workers)]
    cwd = os.getcwd()
    sys.path.insert(0, str(project))
    try:
        for worker in started:
            worker.wait_serving()
        os.chdir(project)
        t0 = time.perf_counter()
        status = flow_module.transfer(save_experiment=False, pool=POOL, retries=0)
        elapsed = time.perf_counter() - t0
    finally:
        os.chdir(cwd)
        sys.path.remove(str(project))
        for worker in started:
            worker.stop()
    assert set(status.values()) == {"ran"}, status
    counts = {w.name: len(w.ran()) for w in started}
    print(f"{workers} worker(s): {elapsed:7.1f} s  ({len(status)} instances; on workers: {counts})")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["none", "rep_spectral"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="pretraining seeds")
    ns = parser.parse_args()
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    from tests.flows.test_workers import pool_params

    params = pool_params(epochs=ns.pretrain_epochs)
    params["pretrain"]["run"] = {"variants": list(ns.variants), "seeds": list(ns.seeds)}
    params["finetune"]["run"].update(backbones=list(ns.variants), backbone_seeds=list(ns.seeds))
    print(
        f"small DAG: pretrain {ns.variants} x seeds {ns.seeds} x {ns.pretrain_epochs} epochs; "
        f"{os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
        one = measure(1, params, Path(tmp))
        two = measure(2, params, Path(tmp))
    print(f"ratio 1 worker / 2 workers: {one / two:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
