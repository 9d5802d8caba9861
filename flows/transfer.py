"""The transfer DAG as a Prefect flow over the same stage functions DVC runs.

``python -m flows.transfer --params configs/transfer-cifar10.yaml [--set k=v ...]``

The instances and their edges come from :func:`pipeline.plan.plan` (the matrices of
``dvc.yaml``). Each instance is one Prefect task that takes and returns only paths and config:
the parameter file and overrides, the stage name and its item. A task skips an instance that
is up to date (:mod:`flows.state`). Training stages run as ``python -m pipeline <stage> ...``
in a subprocess, under ``torchrun`` when their ``train.gpus`` > 1; the light stages (prepare,
report, and on a CPU-only machine readout and attack) call ``pipeline.stages.<stage>.run`` in
the flow process. Tasks are submitted only once their upstream tasks have finished, so a
large DAG never fills the thread pool with tasks waiting on each other, and GPUs are allotted
to concurrent stages without overlap.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import queue
import sys
import threading
import time
from contextlib import contextmanager
from fnmatch import fnmatch

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.launch import DevicePool, StageFailed, child_env, run_streaming, stage_command
from flows.state import HashCache, output_state, stage_key, up_to_date, write_stamp
from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.plan import CPU_STAGES, TRAINING_STAGES, StageInstance, cli_args, plan

DONE = ("ran", "skipped")
_CACHE_LOCK = threading.Lock()
_CACHES: dict[str, HashCache] = {}


def _cache() -> HashCache:
    """One hash cache per working directory, shared by the threads of a flow run."""
    cwd = os.getcwd()
    with _CACHE_LOCK:
        if cwd not in _CACHES:
            _CACHES[cwd] = HashCache()
        return _CACHES[cwd]


_FORWARDING = {"count": 0, "lock": threading.Lock()}


@contextmanager
def forward_logs(log, name: str = "pipeline"):
    """Send this thread's ``pipeline.*`` log records to the task's Prefect logger.

    While any task forwards, the records do not also propagate to the console handler, which
    would print each line twice.
    """
    me = threading.get_ident()

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == me:
                log.log(record.levelno, "%s: %s", record.name, record.getMessage())

    logger = logging.getLogger(name)
    handler = Forward()
    with _FORWARDING["lock"]:
        if _FORWARDING["count"] == 0:
            _FORWARDING["saved"] = (logger.level, logger.propagate)
            logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
            logger.propagate = False
        _FORWARDING["count"] += 1
        logger.addHandler(handler)
    try:
        yield
    finally:
        with _FORWARDING["lock"]:
            logger.removeHandler(handler)
            _FORWARDING["count"] -= 1
            if _FORWARDING["count"] == 0:
                logger.level, logger.propagate = _FORWARDING["saved"]


def execute_stage(
    params: str,
    overrides: list[str],
    stage: str,
    item: dict,
    ident: str,
    nproc: int = 1,
    devices: list[int] | None = None,
    inline: bool = False,
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> dict:
    """Run one stage instance unless it is up to date; returns ``{"id", "status", "seconds"}``.

    The plain function behind the task, so it can be tested and reused without Prefect.
    """
    log = log or logging.getLogger("flows")
    cfg = load_config(params, overrides)
    module = importlib.import_module(f"pipeline.stages.{stage}")
    contract = module.contract(cfg, **item)
    cache = _cache()
    key, detail = stage_key(cfg, contract, cache)
    if up_to_date(stage, ident, key, output_state(contract, cache)):
        log.info("%s: up to date, skipped", ident)
        return {"id": ident, "status": "skipped", "seconds": 0.0}
    t0 = time.perf_counter()
    if inline:
        log.info("%s: running pipeline.stages.%s.run in the flow process", ident, stage)
        with forward_logs(log):
            module.run(cfg, **item)
    else:
        cmd = stage_command(stage, cli_args(item), params, _quiet(overrides), nproc, ident)
        log.info("%s: %s", ident, " ".join(cmd))
        run_streaming(cmd, child_env(devices), log, ident)
    seconds = round(time.perf_counter() - t0, 2)
    if int(os.environ.get("PIPELINE_NODE_RANK", "0")) > 0:
        return {"id": ident, "status": "ran", "seconds": seconds}  # rank 0's node writes
    outs = output_state(contract, cache)
    missing = [p for p, h in outs.items() if h is None]
    if missing:
        raise RuntimeError(f"{ident}: finished without writing {', '.join(missing)}")
    write_stamp(stage, ident, key, detail, outs)
    cache.save()
    log.info("%s: done in %.1f s", ident, seconds)
    return {"id": ident, "status": "ran", "seconds": seconds}


def _quiet(overrides: list[str]) -> list[str]:
    """Progress bars make unreadable logs; turn them off unless the user chose otherwise."""
    if any(o.split("=", 1)[0].strip() == "run.progress" for o in overrides):
        return list(overrides)
    return [*overrides, "run.progress=false"]


def _retryable(task, task_run, state) -> bool:
    """Retry crashes and lost workers, not mistakes: a user error (exit 2) fails the same way."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, PipelineError):
        return False
    return not (isinstance(exc, StageFailed) and exc.exit_code == PipelineError.exit_code)


@task(
    name="stage",
    cache_policy=NO_CACHE,
    persist_result=False,
    retry_condition_fn=_retryable,
)
def run_stage(
    params: str,
    overrides: list[str],
    stage: str,
    item: dict,
    ident: str,
    nproc: int = 1,
    devices: list[int] | None = None,
    inline: bool = False,
) -> dict:
    """Prefect task: one stage instance (paths and config in, a small status dict out)."""
    return execute_stage(
        params, overrides, stage, item, ident, nproc, devices, inline, get_run_logger()
    )


def select(instances: list[StageInstance], only: list[str] | None) -> list[StageInstance]:
    """Instances whose id or stage matches one of the glob patterns in ``only`` (all if none)."""
    if not only:
        return instances
    return [i for i in instances if any(fnmatch(i.id, p) or i.stage == p for p in only)]


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@flow(name="transfer", task_runner=ThreadPoolTaskRunner(max_workers=32))
def transfer(
    params: str = "params.yaml",
    overrides: list[str] | None = None,
    only: list[str] | None = None,
    max_parallel: int | None = None,
    gpus: int | None = None,
    isolate: bool = False,
    retries: int = 2,
    retry_delay_seconds: float = 10.0,
) -> dict[str, str]:
    """Run (or skip) every stage instance of the parameter file; returns ``{id: status}``.

    ``only``: glob patterns of ids or stage names to run (the others are not run, so the
    outputs the selected ones read must exist). ``gpus``: GPUs this worker may use (default: all visible). ``max_parallel``: stages
    at once (default: the GPU count, or 2 on a CPU-only machine). ``isolate``: run every stage
    in its own process. ``retries``: attempts after a crash (user errors are never retried).
    """
    log = get_run_logger()
    overrides = list(overrides or [])
    cfg = load_config(params, overrides)  # a bad parameter fails here, before any work
    chosen = select(plan(cfg), only)
    gpus = _visible_gpus() if gpus is None else gpus
    pool = DevicePool(gpus)
    max_parallel = max_parallel or (gpus or 2)
    log.info(
        "%d stage instances from %s; %d GPU(s), up to %d at once",
        len(chosen),
        params,
        gpus,
        max_parallel,
    )
    ids = {i.id for i in chosen}
    pending = {i.id: i for i in chosen}
    status: dict[str, str] = {}
    running: dict[str, tuple] = {}
    futures: dict = {}  # every submitted task, so the UI can draw the edges
    finished: queue.Queue[str] = queue.Queue()
    while pending or running:
        for inst in list(pending.values()):
            ups = [u for u in inst.upstream if u in ids]
            if any(status.get(u) not in (None, *DONE) for u in ups):
                status[inst.id] = "upstream failed"
                del pending[inst.id]
                continue
            if len(running) >= max_parallel or any(status.get(u) not in DONE for u in ups):
                continue
            need = inst.gpus if (gpus and inst.stage not in CPU_STAGES) else 0
            if need > gpus:
                log.error("%s needs %d GPUs; this worker has %d", inst.id, need, gpus)
                status[inst.id] = "failed"
                del pending[inst.id]
                continue
            devices = pool.acquire(need)
            if devices is None:
                continue
            inline = (
                not isolate
                and inst.stage not in TRAINING_STAGES
                and (inst.stage in CPU_STAGES or not gpus)
            )
            future = run_stage.with_options(
                task_run_name=inst.id, retries=retries, retry_delay_seconds=retry_delay_seconds
            ).submit(
                params, overrides, inst.stage, inst.item, inst.id,
                nproc=max(1, inst.gpus), devices=devices if gpus else None, inline=inline,
                wait_for=[futures[u] for u in ups if u in futures],
            )  # fmt: skip
            future.add_done_callback(lambda _f, i=inst.id: finished.put(i))
            running[inst.id] = (future, devices)
            futures[inst.id] = future
            del pending[inst.id]
        if not running:
            break
        ident = finished.get()
        future, devices = running.pop(ident)
        pool.release(devices)
        future.wait()
        if future.state.is_completed():
            status[ident] = future.result()["status"]
        else:
            status[ident] = "failed"
    counts = {s: sum(v == s for v in status.values()) for s in sorted(set(status.values()))}
    log.info("finished: %s", ", ".join(f"{n} {s}" for s, n in counts.items()))
    bad = {i: s for i, s in status.items() if s not in DONE}
    if bad:
        raise RuntimeError(
            f"{len(bad)} stage instance(s) did not complete: "
            + ", ".join(f"{i} ({s})" for i, s in bad.items())
        )
    return {i.id: status[i.id] for i in chosen}


def dry_run(params: str, overrides: list[str], only: list[str] | None = None) -> list[tuple]:
    """``(id, what would happen)`` for each instance, without running anything or Prefect."""
    cfg = load_config(params, overrides)
    cache = HashCache()
    chosen = select(plan(cfg), only)
    would_run: set[str] = set()
    rows = []
    for inst in chosen:
        if any(u in would_run for u in inst.upstream):
            verdict = "run (an upstream stage runs)"
        else:
            key, _ = stage_key(cfg, inst.contract, cache)
            current = up_to_date(inst.stage, inst.id, key, output_state(inst.contract, cache))
            verdict = "up to date" if current else "run"
        if verdict != "up to date":
            would_run.add(inst.id)
        launcher = f"torchrun x{inst.gpus}" if inst.gpus > 1 else "python"
        rows.append((inst.id, verdict, launcher))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.transfer", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--only", action="append", metavar="PATTERN", help="ids/stages to run (glob)"
    )
    parser.add_argument("--max-parallel", type=int, default=None)
    parser.add_argument("--gpus", type=int, default=None, help="GPUs to use (default: all visible)")
    parser.add_argument("--isolate", action="store_true", help="every stage in its own process")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    ns = parser.parse_args(argv)
    try:
        load_config(ns.params, ns.overrides)  # fail in a second, before Prefect starts
        if ns.dry_run:
            for ident, verdict, launcher in dry_run(ns.params, ns.overrides, ns.only):
                print(f"{ident:<60} {launcher:<11} {verdict}")
            return 0
        transfer(
            params=ns.params,
            overrides=ns.overrides,
            only=ns.only,
            max_parallel=ns.max_parallel,
            gpus=ns.gpus,
            isolate=ns.isolate,
            retries=ns.retries,
        )
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except RuntimeError as exc:  # failed stages; Prefect has logged the details
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
