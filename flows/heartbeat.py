"""A worker's signs of life.

* Per run: a Prefect variable that changes every few seconds while the run lives. The flow's
  side (:func:`flows.pool.await_run`) reads it and declares the worker lost when it stops
  changing; the variable's name comes from :func:`flows.protocol.beat_variable`.
* Per worker: Prefect's own worker heartbeat to the pool's work pool, so the UI's Work Pools
  page lists the worker (online while it beats) under the pool's name.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from flows.protocol import beat_variable


@contextlib.contextmanager
def heartbeat(run_id: str, every_s: float) -> Iterator[None]:
    """A variable that changes every ``every_s`` seconds while this run is alive."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    name = beat_variable(run_id)
    stop = threading.Event()

    def beat() -> None:
        count = 0
        with get_client(sync_client=True) as client:
            while not stop.is_set():
                count += 1
                with contextlib.suppress(Exception):  # a missed beat is not an error
                    if count == 1:
                        client.create_variable(VariableCreate(name=name, value=count))
                    else:
                        client.update_variable(VariableUpdate(name=name, value=count))
                stop.wait(every_s)
            with contextlib.suppress(Exception):
                client.delete_variable_by_name(name)

    thread = threading.Thread(target=beat, name="pool-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def announce_worker(pool: str, name: str, every_s: float) -> threading.Thread:
    """Beat Prefect's worker heartbeat for ``name`` in work pool ``pool`` until the process
    ends (a daemon thread: nothing of it outlives the worker)."""
    from prefect.client.orchestration import get_client

    def beat() -> None:
        with get_client(sync_client=True) as client:
            while True:
                with contextlib.suppress(Exception):  # a missed beat is not an error
                    client.send_worker_heartbeat(pool, name, heartbeat_interval_seconds=every_s)
                threading.Event().wait(every_s)

    thread = threading.Thread(target=beat, name="worker-heartbeat", daemon=True)
    thread.start()
    return thread
