"""The flow's side of a pool of workers: each stage instance as its own run on some worker.

``python -m flows.transfer --pool NAME`` runs the DAG as before (DVC decides what is up to date,
:mod:`flows.record` keeps ``dvc.lock``), but a stage instance that needs a model (training,
readout, attacks) is started as a run of the deployment ``pool-stage/<pool>-<queue>``, which
every worker of the pool serves (:mod:`flows.worker`); ``prepare`` and ``report`` run in the
flow's process. The queue is the instance's GPU need: ``gpu<N>`` for ``train.gpus`` = N, ``gpu1``
for the other model stages, ``cpu`` for everything when ``run.device`` is ``cpu``.

What travels: the flow's git commit and ``params.yaml`` text, and the ``dvc.lock`` entries of
the instance's upstream instances (parameters of the run); outputs go through the project's DVC
remote. The worker answers with the instance's new ``dvc.lock`` entry, which the flow writes
into its own ``dvc.lock`` (atomically) before pulling the outputs it names, so its workspace is
complete and ``dvc status`` stays clean. Outputs made in the flow's process are pushed, so the
workers can pull them.

A worker that stops sending heartbeats for ``lost_after_s`` seconds is declared lost: its run
is marked Crashed and the task is retried, i.e. the stage runs again on whichever worker takes
it, resuming from its checkpoint if checkpoints are shared.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.execute import execute_stage, retryable, stage_state
from flows.launch import StageFailed
from flows.protocol import (
    FLOW_NAME,
    QUEUED,
    beat_variable,
    deployment_name,
    git_head,
    parse_result,
)
from flows.record import DvcRecord
from pipeline.core.errors import ConfigError
from pipeline.plan import StageInstance


class WorkerLost(RuntimeError):
    """The worker running a stage stopped answering; the stage is retried elsewhere."""


@dataclass(frozen=True)
class PoolJob:
    """What every run on the pool needs from the flow (plain values: it travels to threads)."""

    pool: str
    commit: str
    params_text: str
    device: str
    lost_after_s: float = 60.0
    poll_s: float = 1.0


def runs_in_flow(inst: StageInstance) -> bool:
    """``prepare`` and ``report`` (no model, no GPU) stay in the flow's process."""
    return inst.gpus == 0


def queue_for(inst: StageInstance, device: str) -> str:
    if device == "cpu" or inst.gpus == 0:
        return "cpu"
    return f"gpu{inst.gpus}"


def _changed_code(root: Path) -> list[str]:
    """Tracked files that differ from HEAD, but for those the flow itself writes."""
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    own = {"params.yaml", "dvc.lock", ".gitignore"}
    paths = [line[3:] for line in out.stdout.splitlines() if line[3:]]
    return [p for p in paths if p not in own and not p.endswith("/.gitignore")]


def pool_job(pool: str, root: Path, instances: list[StageInstance], device: str,
             lost_after_s: float) -> PoolJob:  # fmt: skip
    """Check the pool can run ``instances`` and collect what its runs need; ConfigError if not."""
    commit = git_head(root)
    changed = _changed_code(root)
    if changed:
        raise ConfigError(
            f"workers run the committed code, and {changed[0]} has uncommitted changes: "
            "commit them (and check that commit out on every worker)"
        )
    device = pool_device(pool, instances, device)
    params_text = (root / "params.yaml").read_text()
    return PoolJob(pool, commit, params_text, device, lost_after_s)


def pool_device(
    pool: str, instances: list[StageInstance], device: str, served: set[str] | None = None
) -> str:
    """The device the pool's runs use: ``run.device``, except that ``auto`` on a pool no GPU
    worker has ever served runs on the workers' CPUs, as ``auto`` does on a machine without
    GPUs (the flow logs it). ConfigError naming the queue, and the setting, otherwise.
    ``served``: the queues some worker has served (default: asked of the Prefect server)."""
    served = _served_queues(pool) if served is None else served
    needed = {queue_for(i, device) for i in instances if not runs_in_flow(i)}
    missing = sorted(needed - served)
    cpu_pool = "cpu" in served and not any(q.startswith("gpu") for q in served)
    if missing and device == "auto" and cpu_pool:
        return "cpu"
    if missing:
        hint = "" if missing[0] == "cpu" or not cpu_pool else (
            f" (run.device is {device}, and this pool's workers have no GPUs: "
            "--set run.device=cpu runs the stages on them)"
        )  # fmt: skip
        raise ConfigError(
            f"--pool {pool}: no worker has served queue {missing[0]!r} "
            f"(deployment {FLOW_NAME}/{deployment_name(pool, missing[0])}){hint}; start one in "
            f"a clone with `python -m flows.worker --pool {pool}`"
        )
    return device


def _served_queues(pool: str) -> set[str]:
    """The queues of ``pool`` some worker has served (their deployments exist)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    prefix = deployment_name(pool, "")
    with get_client(sync_client=True) as client:
        found = client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME]))
        )
    queues = {d.name[len(prefix) :] for d in found if d.name.startswith(prefix)}
    return {q for q in queues if q == "cpu" or (q[:3] == "gpu" and q[3:].isdigit())}


def _outs(entry: dict) -> list[str]:
    return [out["path"] for out in entry.get("outs") or []]


# -- one instance on the pool ---------------------------------------------------------------------


def await_run(client, run_id, ident: str, job: PoolJob, log):
    """The run's final state; WorkerLost when its worker's heartbeat stops."""
    from prefect.states import Crashed

    name = beat_variable(str(run_id))
    seen = None
    alive_at = None
    waiting_logged = False
    while True:
        state = client.read_flow_run(run_id).state
        if state is not None and state.is_final():
            return state
        now = time.monotonic()
        if state is None or state.is_scheduled():
            if not waiting_logged:
                log.info("%s: waiting for a worker of pool %s", ident, job.pool)
                waiting_logged = True
            time.sleep(job.poll_s)
            continue
        alive_at = alive_at or now  # taken: the heartbeat must start within lost_after_s
        beat = client.read_variable_by_name(name)
        if beat is not None and beat.value != seen:
            seen, alive_at = beat.value, now
        if now - alive_at > job.lost_after_s:
            message = f"worker lost: no heartbeat for {job.lost_after_s:.0f} s"
            client.set_flow_run_state(run_id, Crashed(message=message), force=True)
            with contextlib.suppress(Exception):  # clean-up only
                client.delete_variable_by_name(name)
            raise WorkerLost(f"{ident}: {message}; running it again on the pool")
        time.sleep(job.poll_s)


def read_result(client, run_id) -> dict | None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    )
    for artifact in found:
        if isinstance(artifact.data, str) and "```json" in artifact.data:
            return parse_result(artifact.data)
    return None


def submit_run(client, ident: str, pool: str, queue: str, parameters: dict):
    """A run of the pool's deployment for ``queue``, *Queued* until a worker takes it.

    What ``run_deployment`` does, but for two things: the run waits in a Scheduled state named
    :data:`~flows.protocol.QUEUED` (Prefect turns only a state named "Scheduled" Late, and a
    stage waiting for a free worker is not late), and its parent is this stage's task run, so
    the UI draws the worker's run inside the stage that waits for it.
    """
    from prefect.runtime import task_run
    from prefect.states import Scheduled

    deployment = client.read_deployment_by_name(f"{FLOW_NAME}/{deployment_name(pool, queue)}")
    return client.create_flow_run_from_deployment(
        deployment.id,
        parameters=parameters,
        state=Scheduled(name=QUEUED),
        name=ident,
        tags=[pool, queue],
        parent_task_run_id=task_run.get_id(),
    )


def run_on_pool(root: str, inst: StageInstance, job: PoolJob, log) -> tuple[str, str]:
    """Like :func:`flows.execute.execute_stage`, with the run on a worker; ``(status, message)``."""
    from prefect.client.orchestration import get_client

    record = DvcRecord(root)
    verdict = record.prepare(inst.id, clear=False)  # the worker runs it, in its own clone
    if verdict in ("up to date", "restored"):
        record.push(inst.id)  # workers downstream pull it from the remote
        why = (
            "unchanged since dvc.lock"
            if verdict == "up to date"
            else "restored from DVC's run-cache"
        )
        return verdict, f"{why}; not run"
    upstream = {}
    for up in inst.upstream:
        entry = record.entry(up)
        if entry is None:
            raise ConfigError(f"{inst.id}: upstream {up} has no dvc.lock entry; run it first")
        upstream[up] = entry
    queue = queue_for(inst, job.device)
    parameters = {"ident": inst.id, "upstream": upstream, "params_text": job.params_text,
                  "commit": job.commit, "queue": queue}  # fmt: skip
    with get_client(sync_client=True) as client:
        run = submit_run(client, inst.id, job.pool, queue, parameters)
        log.info("%s: submitted to pool %s, queue %s (flow run %s)", inst.id, job.pool, queue,
                 run.name)  # fmt: skip
        state = await_run(client, run.id, inst.id, job, log)
        result = read_result(client, run.id)
    if result is None:
        raise WorkerLost(f"{inst.id}: the worker's run ended {state.name} without a result")
    if not result["ok"]:
        raise StageFailed(inst.id, result["exit_code"], [f"error: {result['message']}"])
    entry = result["entry"]
    record.write_entries({inst.id: entry})
    record.pull(_outs(entry))  # this workspace holds every output, as after dvc repro
    return "ran", f"ran on worker {result['worker']}; recorded in dvc.lock"


@task(name="stage on pool", cache_policy=NO_CACHE, persist_result=False,
      retry_condition_fn=retryable)  # fmt: skip
def pool_stage(root: str, inst: StageInstance, job: PoolJob):
    """Prefect task: one instance, run on a worker of the pool (or in the flow if it has no model)."""
    log = get_run_logger()
    try:
        if runs_in_flow(inst):
            status, message = execute_stage(DvcRecord(root), inst, None, log)
            DvcRecord(root).push(inst.id)
        else:
            status, message = run_on_pool(root, inst, job, log)
    except (StageFailed, WorkerLost) as exc:
        log.error("%s", exc)
        raise
    return stage_state(inst, status, message, log)
