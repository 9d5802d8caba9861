"""A GPU worker of a pool: runs single stage instances for a flow elsewhere, in its own clone.

``python -m flows.worker --pool NAME [--gpus N] [--queue Q ...] [--limit N] [--checkpoint-dir DIR]``

Started in a git clone of the project (at the commit the flow runs), with the project's DVC
remote configured. It serves the deployments ``pool-stage/<pool>-<queue>`` for the queues it can
take (``cpu`` and ``gpu1`` .. ``gpuN`` for its N GPUs); several workers serve the same
deployments and Prefect hands each run to exactly one of them. One run is one stage instance:

1. check that this clone is at the flow's commit and write the flow's ``params.yaml``;
2. put the ``dvc.lock`` entries of its upstream instances (sent by the flow) into this clone's
   ``dvc.lock`` and pull exactly the outputs of them that the instance reads from the remote;
   an object that cannot be pulled stops the run with one line naming it, before anything runs;
3. run the command ``dvc.yaml`` declares, on GPUs taken by file locks (so runs on one machine
   never share a GPU; a training stage with ``train.gpus`` > 1 relaunches itself under torchrun);
4. record the outputs in this clone's DVC cache, push them to the remote, and publish the
   instance's new ``dvc.lock`` entry as an artifact of the run, which the flow writes into its
   own ``dvc.lock`` (:mod:`flows.pool`).

While it runs, the worker sets a heartbeat variable every few seconds; a flow that sees it stop
declares the worker lost and runs the stage again on another worker, which resumes from the
last checkpoint when checkpoints live in a folder every worker reaches
(``$PIPELINE_CHECKPOINT_DIR``, see :func:`pipeline.core.paths.checkpoints`).

This module serves the deployments and runs the flow; steps 1-4 are :mod:`flows.clone_run`, the
GPU locks :mod:`flows.gpu_locks`, the heartbeat :mod:`flows.heartbeat`, and the names and result
format it shares with the flow's side :mod:`flows.protocol`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from flows.clone_run import run_here
from flows.gpu_locks import gpus_taken
from flows.heartbeat import announce_worker, heartbeat
from flows.launch import StageFailed
from flows.protocol import (
    FLOW_NAME,
    deployment_name,
    ensure_work_pool,
    git_head,
    queue_gpus,
    result_markdown,
)
from flows.record import MissingObject
from pipeline.core.errors import ConfigError, PipelineError
from pipeline.core.paths import CHECKPOINT_DIR_ENV

WORKER_ENV = "PIPELINE_WORKER_NAME"
BEAT_ENV = "PIPELINE_POOL_BEAT_S"
USER_ERROR = PipelineError.exit_code  # 2: the same on any worker, so never retried


# -- a run of the pool's flow -------------------------------------------------------------------


def publish(ident: str, result: dict) -> None:
    """The run's outcome as an artifact: readable in the UI, parsed by the flow."""
    create_markdown_artifact(
        markdown=result_markdown(ident, result), description=f"{ident}: its dvc.lock entry"
    )


@flow(name=FLOW_NAME, flow_run_name="{ident}", persist_result=False, log_prints=True)
def stage_on_worker(ident: str, upstream: dict, params_text: str, commit: str, queue: str = "cpu"):
    """Run one stage instance in this worker's clone; publishes its ``dvc.lock`` entry."""
    log = get_run_logger()
    worker = os.environ.get(WORKER_ENV) or socket.gethostname()
    root = Path.cwd().resolve()
    if (flow_run.run_count or 1) > 1:
        # A "Retry" in the UI: no flow waits for this run, so nothing would write its
        # dvc.lock entry; the stage is run (and recorded) by running the flow again.
        message = (f"{ident}: a pool stage is not retried from the UI (its result would not "
                   "reach dvc.lock); run the flow again (python -m flows.transfer --pool ...): "
                   "it runs what is not up to date and records it")  # fmt: skip
        log.error("%s", message)
        return Failed(message=message)
    log.info("%s: on worker %s (%s)", ident, worker, root)
    result: dict = {"worker": worker, "ident": ident}
    try:
        beat_s = float(os.environ.get(BEAT_ENV) or 10)
        with heartbeat(str(flow_run.get_id()), beat_s), gpus_taken(queue_gpus(queue)) as devices:
            entry = run_here(root, ident, upstream, params_text, commit, devices, log)
        result.update(ok=True, entry=entry)
    except StageFailed as exc:
        result.update(ok=False, exit_code=exc.exit_code, message=str(exc))
    except MissingObject as exc:
        result.update(ok=False, exit_code=USER_ERROR, message=f"{ident}: {exc}")
    except PipelineError as exc:
        result.update(ok=False, exit_code=exc.exit_code, message=f"{ident}: {exc}")
    publish(ident, result)
    if not result["ok"]:
        log.error("%s", result["message"])
        return Failed(message=result["message"])
    log.info("ran %s on worker %s", ident, worker)
    return Completed(message=f"ran on {worker}")


# -- serving ----------------------------------------------------------------------------------


def default_queues(gpus: int) -> list[str]:
    return ["cpu", *(f"gpu{n}" for n in range(1, gpus + 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.worker", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--pool", required=True, help="the name the flow's --pool gives")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs here (default: all visible)")
    parser.add_argument("--queue", action="append", dest="queues", metavar="Q",
                        help="queues to serve (default: cpu, gpu1 .. gpuN)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=None, help="runs at once (default: GPUs, 1)")
    parser.add_argument("--name", default=None, help="worker name in logs (default: host:folder)")
    parser.add_argument("--checkpoint-dir", default=None,
                        help=f"shared checkpoint folder (default: ${CHECKPOINT_DIR_ENV})")  # fmt: skip
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--beat", type=float, default=10.0, help="seconds between heartbeats")
    ns = parser.parse_args(argv)
    root = Path.cwd().resolve()
    try:
        if not (root / "dvc.yaml").is_file():
            raise ConfigError(f"no dvc.yaml in {root}: start the worker in a clone of the project")
        git_head(root)
        if ns.gpus is None:
            from pipeline.core.launch import visible_gpus

            ns.gpus = visible_gpus()
        queues = ns.queues or default_queues(ns.gpus)
        bad = [q for q in queues if q != "cpu" and not (q[:3] == "gpu" and q[3:].isdigit())]
        if bad:
            raise ConfigError(f"--queue {bad[0]!r}: allowed are cpu, gpu1, gpu2, ...")
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    os.environ[WORKER_ENV] = ns.name or f"{socket.gethostname()}:{root.name}"
    os.environ[BEAT_ENV] = str(ns.beat)
    if ns.checkpoint_dir:
        os.environ[CHECKPOINT_DIR_ENV] = str(Path(ns.checkpoint_dir).expanduser().resolve())
    return serve(ns.pool, queues, ns.limit or max(ns.gpus, 1), ns.poll, ns.beat)


def serve(pool: str, queues: list[str], limit: int, poll: float, beat: float) -> int:
    """Announce this worker in the pool's work pool and serve its deployments until stopped."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.runner import Runner

    import flows.worker as this  # the flow by its module name, not __main__, for run processes

    name = os.environ[WORKER_ENV].replace(":", "-")
    try:
        with get_client(sync_client=True) as client:
            ensure_work_pool(client, pool)  # the UI's Work Pools page lists it, and us in it
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    runner = Runner(name=name, query_seconds=poll, limit=limit, pause_on_shutdown=False)
    for queue in queues:
        runner.add_deployment(
            this.stage_on_worker.to_deployment(
                name=deployment_name(pool, queue), tags=[pool, queue],
                work_pool_name=pool, work_queue_name=queue,
            )
        )  # fmt: skip
    announce_worker(pool, name, beat)
    print(f"worker {os.environ[WORKER_ENV]} serves pool {pool}, queues {', '.join(queues)}",
          flush=True)  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runner.start())
    return 0


if __name__ == "__main__":
    sys.exit(main())
