"""What the flow's side of a pool (:mod:`flows.pool`) and its workers (:mod:`flows.worker`) agree
on: the deployment and variable names, queue names, the commit both run, and the result format.

A worker publishes its outcome as a markdown artifact of its run (readable in the UI) holding
the result as a fenced JSON block; :func:`result_markdown` writes it, :func:`parse_result`
reads it back.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

from pipeline.core.errors import ConfigError

FLOW_NAME = "pool-stage"
RESULT_FENCE = "```json"
# The Prefect work pool named after the pool is of this type: the UI lists it with its queues
# and workers, and no Prefect worker of another type (``prefect worker start``) ever takes its
# runs; only ``python -m flows.worker`` serves them.
WORK_POOL_TYPE = "flows-worker"
# A run waiting for a worker is in this Scheduled state (Prefect marks only a state named
# "Scheduled" Late): the UI shows it queued, not late.
QUEUED = "Queued"


def deployment_name(pool: str, queue: str) -> str:
    return f"{pool}-{queue}"


def beat_variable(run_id: str) -> str:
    """The Prefect variable a worker's heartbeat changes while it runs ``run_id``."""
    return f"pool-beat-{run_id}"


def queue_gpus(queue: str) -> int:
    """GPUs a run of ``queue`` takes: N for ``gpu<N>``, none for ``cpu``."""
    return int(queue[3:]) if queue.startswith("gpu") else 0


def git_head(root: Path) -> str:
    """The commit checked out at ``root``: the flow sends its own, a worker must be at it."""
    out = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise ConfigError(f"{root} is not a git checkout; a pool worker runs in a clone")
    return out.stdout.strip()


def result_markdown(ident: str, result: dict) -> str:
    """A worker's outcome (``ok``, ``worker``, ``entry`` or ``exit_code``/``message``) as the
    markdown of its artifact."""
    status = "ran" if result["ok"] else f"failed (exit {result['exit_code']})"
    body = json.dumps(result, indent=1, sort_keys=True)
    return f"**{ident}** on worker `{result['worker']}`: {status}\n\n{RESULT_FENCE}\n{body}\n```"


def parse_result(markdown: str) -> dict:
    """Inverse of :func:`result_markdown`."""
    start = markdown.index(RESULT_FENCE) + len(RESULT_FENCE)
    return json.loads(markdown[start : markdown.rindex("```")])


def ensure_work_pool(client, pool: str) -> None:
    """Create the pool's Prefect work pool unless it exists (``client``: a sync client)."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    try:
        found = client.read_work_pool(pool)
    except ObjectNotFound:
        found = None
    if found is not None:
        if found.type != WORK_POOL_TYPE:
            raise ConfigError(
                f"work pool {pool!r} exists with type {found.type!r}; a pool of flows.worker "
                f"has type {WORK_POOL_TYPE!r} (a Prefect {found.type} worker would take its "
                "runs outside the project's clones): choose another --pool name"
            )
        return
    with contextlib.suppress(ObjectAlreadyExists):  # another worker created it meanwhile
        client.create_work_pool(
            WorkPoolCreate(
                name=pool,
                type=WORK_POOL_TYPE,
                description="DVC stage instances, served by `python -m flows.worker --pool "
                f"{pool}` in clones of the project; queues: cpu, gpu1, gpu2, ...",
            )
        )
