"""The transfer DAG as a Prefect flow: DVC's own stages, run in parallel, recorded in DVC.

``python -m flows.transfer [--params FILE] [--set k=v ...] [--only PATTERN] [--dry-run]``

DVC is the one record; Prefect is the executor DVC lacks (``dvc repro`` runs one stage at a
time in a workspace). The instances and edges come from the stage declarations
(:mod:`pipeline.plan`, the same ones that generate ``dvc.yaml``). For each instance, once its
upstream instances are done, a task asks DVC whether it changed (:mod:`flows.record`); if not,
it is *Up to date*; if DVC's run-cache holds it, it is *Restored*; otherwise the task runs the
command ``dvc.yaml`` declares for it, on its own GPUs, and records it in DVC's cache and
``dvc.lock``. Afterwards ``dvc status`` is clean, ``dvc repro`` runs nothing, and the run is
saved as a DVC experiment (``dvc exp show`` lists it with its metrics).

Parameters follow DVC's model: the workspace's ``params.yaml`` *is* the experiment.
``--params FILE`` and ``--set`` are written into ``params.yaml`` before anything runs (as
``dvc exp run -S`` does); uncommitted edits to ``params.yaml`` are never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

from prefect import allow_failure, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.execute import execute_stage, retry_options, retryable, stage_state
from flows.launch import DevicePool, StageFailed, temporary_prefect_server
from flows.publish import experiment_name, publish_report, run_label, save_experiment_as, stamp
from flows.record import DvcRecord
from pipeline.core.cli import (
    add_params_options,
    make_parser,
    one_line,
    quiet_broken_pipe,
    report,
)
from pipeline.core.config import load_config
from pipeline.core.errors import ArtifactError, ConfigError, PipelineError
from pipeline.core.workspace import WORKSPACE_PARAMS, apply_params, composed_params
from pipeline.plan import StageInstance, plan, problems

REPORT = Path("reports/transfer.md")
DONE = ("ran", "up to date", "restored")


# -- one stage instance -----------------------------------------------------------------------


@task(name="stage", cache_policy=NO_CACHE, persist_result=False, retry_condition_fn=retryable)
def run_stage(
    root: str,
    inst: StageInstance,
    devices: list[int] | None = None,
    cpus: int | None = None,
    released=None,
):
    """Prefect task: one stage instance; its state says whether it ran, was up to date or restored.

    A failed stage is a Failed state whose message is the stage's own error line: the UI and
    the terminal show that line, not a traceback of the flow's code. ``released``: called when
    the stage's process has ended (:func:`flows.execute.execute_stage`).
    """
    log = get_run_logger()
    try:
        status, message = execute_stage(DvcRecord(root), inst, devices, log, cpus, released)
    except StageFailed as exc:
        return Failed(message=str(exc), data=exc)
    return stage_state(inst, status, message, log)


@task(name="not run", cache_policy=NO_CACHE, persist_result=False)
def not_run(ident: str, reason: str):
    """A visible placeholder for an instance that never ran because an upstream one failed."""
    return Cancelled(name="Upstream failed", message=f"{ident}: not run: {reason}")


# -- the flow ---------------------------------------------------------------------------------


def select(instances: list[StageInstance], only: list[str] | None) -> list[StageInstance]:
    """Instances whose id (glob), DVC stage or command matches an entry of ``only`` (all if none)."""
    if not only:
        return instances

    def chosen(i: StageInstance, pattern: str) -> bool:
        return fnmatch(i.id, pattern) or pattern in (i.stage, i.id.split("@")[0])

    return [i for i in instances if any(chosen(i, p) for p in only)]


def _visible_gpus() -> int:
    from pipeline.core.launch import visible_gpus

    return visible_gpus()


def run_name() -> str:
    """``params.yaml a.b=1 · 2025-05-01 03:56:12Z · 6c7eead``: which parameters, which run."""
    params = flow_run.parameters or {}
    return run_label(params.get("params"), params.get("overrides"), stamp())


def check_plan(instances: list[StageInstance], device: str, gpus: int) -> None:
    """Missing raw data and GPU shortfalls for the whole plan, before any stage starts."""
    found = problems(instances, device, visible=gpus)
    if found:
        raise ConfigError("cannot run the plan: " + "; ".join(found))


def preflight(params, overrides, only, gpus, pool, log=None) -> tuple:
    """``(cfg, instances, gpus)`` of the run, every check done and ``params.yaml`` written.

    Everything a user can get wrong fails here, before any stage starts: ``main`` calls it
    before Prefect starts (one ``error:`` line, no traceback), the flow again (a no-op then;
    the check for a run started from a deployment).
    """
    cfg = load_config(params, overrides)  # a bad parameter fails here, before any work
    chosen = select(plan(cfg), only)  # the plan's rules too, before params.yaml is written
    if apply_params(params, overrides) and log is not None:
        log.info("params.yaml now holds %s %s (DVC's model: the workspace is the experiment)",
                 params, " ".join(overrides))  # fmt: skip
    gpus = (0 if pool else _visible_gpus()) if gpus is None else gpus
    check_plan(chosen, "cpu" if pool else cfg.run.device, gpus)  # a pool's GPUs are its own
    return cfg, chosen, gpus


class Schedule:
    """Runs each instance once its upstream instances are done and GPUs are free for it.

    Each task is submitted with its upstream tasks' futures as ``wait_for`` (done by then,
    so nothing waits twice): Prefect records the dependencies and its UI draws the DAG's edges.
    ``submit(inst, devices, wait_for, released)`` returns the task's future; the task calls
    ``released()`` when its process has ended well, and the next stage is submitted then,
    while the finished one is recorded and its task finalised (a failed record is never
    retried, so the process never runs again outside its slot; its GPUs stay taken until the
    task ends; a stage's dependents wait for the record).
    """

    def __init__(self, chosen: list[StageInstance], submit, gpus: int, max_parallel: int):
        self.pending = {i.id: i for i in chosen}
        self.ids = set(self.pending)
        self.submit, self.gpus, self.max_parallel = submit, gpus, max_parallel
        self.devices = DevicePool(gpus)
        self.status: dict[str, str] = {}
        self.errors: dict[str, str] = {}  # id: the failed task's message
        self.futures: dict[str, object] = {}
        self.running: dict[str, list[int] | None] = {}  # tasks not finished: their GPUs
        self.holding: set[str] = set()  # of those, the ones whose process may still run
        self.events: queue.Queue[tuple[str, str]] = queue.Queue()  # ("released"|"done", id)

    def run(self) -> dict[str, str]:
        """``{id: status}``: ran, up to date, restored, failed or upstream failed."""
        while self.pending or self.running:
            for inst in list(self.pending.values()):
                self._consider(inst)
            if not self.running:
                break
            self._handle(*self.events.get())
        return self.status

    def _consider(self, inst: StageInstance) -> None:
        ups = [u for u in inst.upstream if u in self.ids]
        failed = [u for u in ups if self.status.get(u) not in (None, *DONE)]
        if failed:
            self._skip(inst, ups, failed)
        elif len(self.holding) < self.max_parallel and all(self.status.get(u) in DONE for u in ups):
            self._start(inst, ups)

    def _skip(self, inst: StageInstance, ups: list[str], failed: list[str]) -> None:
        self.status[inst.id] = "upstream failed"
        del self.pending[inst.id]
        # allow_failure: the placeholder runs after a failed upstream, and the edge is drawn.
        wait = [allow_failure(self.futures[u]) for u in ups if u in self.futures]
        reason = f"upstream {', '.join(failed)} did not complete"
        future = not_run.with_options(task_run_name=inst.id).submit(inst.id, reason, wait_for=wait)
        future.wait()
        self.futures[inst.id] = future

    def _start(self, inst: StageInstance, ups: list[str]) -> None:
        devices = self.devices.acquire(inst.gpus if (self.gpus and inst.gpus) else 0)
        if devices is None:
            return
        self.running[inst.id] = devices
        self.holding.add(inst.id)
        del self.pending[inst.id]

        def released(i: str = inst.id) -> None:  # called from the task's thread
            self.events.put(("released", i))

        future = self.submit(inst, devices, [self.futures[u] for u in ups], released)
        future.add_done_callback(lambda _f, i=inst.id: self.events.put(("done", i)))
        self.futures[inst.id] = future

    def _handle(self, event: str, ident: str) -> None:
        self.holding.discard(ident)  # its process ended (or it never started one)
        if event == "done":
            self._collect(ident)

    def _collect(self, ident: str) -> None:
        self.devices.release(self.running.pop(ident))
        future = self.futures[ident]
        future.wait()
        state = future.state
        if state.is_completed():
            self.status[ident] = state.result(raise_on_failure=False)
        else:
            self.status[ident] = "failed"
            self.errors[ident] = state.message or state.name


def _submitter(root: str, job, gpus: int, cpus: int, options: dict):
    """How the schedule submits an instance: here, or to a pool's workers (``job``)."""

    def submit(inst: StageInstance, devices: list[int] | None, wait_for: list, released=None):
        task_options = dict(task_run_name=inst.id, **options)
        if job is not None:
            from flows.pool import pool_stage

            return pool_stage.with_options(**task_options).submit(root, inst, job,
                                                                  wait_for=wait_for)  # fmt: skip
        return run_stage.with_options(**task_options).submit(
            root, inst, devices if gpus else None, cpus, released, wait_for=wait_for
        )

    return submit


_USER_ERROR = f": exited with status {PipelineError.exit_code}: error: "


def failure_summary(status: dict[str, str], errors: dict[str, str]) -> str | None:
    """One line naming what did not complete and why (the first failures' own messages)."""
    bad = [i for i, s in status.items() if s not in DONE]
    if not bad:
        return None
    # A user error's own line says it all ("exited with status 2: error:" adds nothing).
    failed = [one_line(errors.get(i, i)).replace(_USER_ERROR, ": ")[:300]
              for i in bad if status[i] == "failed"]  # fmt: skip
    skipped = len(bad) - len(failed)
    shown = "; ".join(failed[:3]) + (f"; {len(failed) - 3} more failed" if len(failed) > 3 else "")
    tail = f"{'; ' if shown else ''}{skipped} not run (upstream failed)" if skipped else ""
    return f"{len(bad)} stage instance(s) did not complete: {shown}{tail}"


def finish(log, chosen: list[StageInstance], schedule: Schedule, save_experiment: bool):
    """Log the tally, publish the report, save the DVC experiment; the flow's return value."""
    status = schedule.status
    counts = {s: sum(v == s for v in status.values()) for s in sorted(set(status.values()))}
    log.info("finished: %s", ", ".join(f"{n} {s}" for s, n in counts.items()))
    if status.get("report", "ran") in DONE:  # not an earlier run's report when this one failed
        publish_report(REPORT, log)
    summary = failure_summary(status, schedule.errors)
    if summary:
        # A state, not a raise: the message is the failure, with no traceback of this code.
        return Failed(message=summary, data=RuntimeError(summary))
    if save_experiment and counts.get("ran", 0) + counts.get("restored", 0):
        save_experiment_as(log, experiment_name(flow_run.name or run_name()))
    return {i.id: status[i.id] for i in chosen}


@flow(name="transfer", flow_run_name=run_name, task_runner=ThreadPoolTaskRunner(max_workers=32))
def transfer(
    params: str = WORKSPACE_PARAMS,
    overrides: list[str] | None = None,
    only: list[str] | None = None,
    max_parallel: int | None = None,
    gpus: int | None = None,
    retries: int = 2,
    retry_delay_seconds: float = 10.0,
    save_experiment: bool = True,
    pool: str | None = None,
    lost_after_s: float = 60.0,
) -> dict[str, str]:
    """Run (or skip) every stage instance of the parameters; returns ``{id: status}``.

    ``only``: glob patterns of ids or stage names to run. ``gpus``: GPUs this worker may use
    (default: all visible). ``max_parallel``: stages at once (default: the GPU count, or the CPU
    count on a CPU-only machine). ``retries``: attempts after a crash (user errors never retry).
    ``pool``: run the model stages on the workers of this pool (:mod:`flows.pool`) instead of
    here; ``lost_after_s``: seconds without a worker's heartbeat before its stage runs elsewhere.
    """
    log = get_run_logger()
    try:
        cfg, chosen, gpus = preflight(params, list(overrides or []), only, gpus, pool, log)
        job = None
        if pool:
            from flows.pool import pool_job

            job = pool_job(pool, Path.cwd(), chosen, cfg.run.device, lost_after_s)
            if job.device != cfg.run.device:
                log.info("pool %s: no worker has served a GPU queue, so its stages run on the "
                         "workers' CPUs (run.device %s)", pool, cfg.run.device)  # fmt: skip
            max_parallel = max_parallel or 32  # the workers' limits decide how many really run
    except PipelineError as exc:  # expected: its one line is the run's failure, no traceback
        return Failed(message=one_line(exc), data=exc)
    max_parallel = max_parallel or gpus or os.cpu_count() or 2
    cpus = max(1, (os.cpu_count() or 1) // max_parallel)  # each stage's share of the cores
    log.info("%d stage instances; %d GPU(s); up to %d at once", len(chosen), gpus, max_parallel)
    submit = _submitter(str(Path.cwd()), job, gpus, cpus,
                        retry_options(retries, retry_delay_seconds))  # fmt: skip
    schedule = Schedule(chosen, submit, gpus, max_parallel)
    schedule.run()
    return finish(log, chosen, schedule, save_experiment)


def dry_run(params: str, overrides: list[str], only: list[str] | None = None) -> list[tuple]:
    """``(id, verdict, launcher)`` per instance, from DVC's own status; runs and writes nothing.

    DVC is asked about the parameters the run would write into ``params.yaml`` by reading
    them in place of the file (:func:`flows.record.overlay_fs`): the workspace's
    ``params.yaml`` is never replaced, so no signal at any moment can leave it changed.
    """
    cfg = load_config(params, overrides)
    chosen = select(plan(cfg), only)
    check_plan(chosen, cfg.run.device, _visible_gpus())
    text = composed_params(params, overrides)
    overlay = {WORKSPACE_PARAMS: text.encode()} if text is not None else None
    record = DvcRecord(overlay=overlay)
    _test_pause("dry-run")
    changed = _dvc_answer(lambda: record.status([i.id for i in chosen]))
    if overlay and WORKSPACE_PARAMS not in record.overlay_reads:
        # Not silently wrong: the answer would be about the workspace's own params.yaml.
        raise PipelineError(
            f"DVC did not read {WORKSPACE_PARAMS} through its filesystem, so the dry run cannot "
            f"answer for {params}; run `python -m pipeline use-params {params}` and then "
            "`dvc status`"
        )
    stale: set[str] = set()
    rows = []
    for inst in chosen:
        if changed[inst.id]:
            verdict = "stale (dvc status)"
        elif any(u in stale for u in inst.upstream):
            verdict = "runs if its upstream changes its outputs"
        else:
            verdict = "up to date"
        if verdict != "up to date":
            stale.add(inst.id)
        launcher = f"torchrun x{inst.gpus}" if inst.trains and inst.gpus > 1 else "python"
        rows.append((inst.id, verdict, launcher))
    return rows


def _dvc_answer(ask):
    """DVC's answer, or a one-line error naming the file DVC could not read (``dvc.lock``)."""
    from dvc.exceptions import DvcException

    try:
        return ask()
    except DvcException as exc:
        causes, cause = [], exc
        while cause is not None and len(causes) < 4:
            causes.append(" ".join(str(cause).split()))
            cause = cause.__cause__ or cause.__context__
        root = str(Path.cwd()) + os.sep
        detail = ": ".join(dict.fromkeys(c for c in causes if c)).replace(root, "")
        raise ArtifactError(f"DVC cannot read this project: {detail}") from None


def _test_pause(point: str) -> None:
    """Tests stop the process here (``PIPELINE_TEST_PAUSE=<point>``) to signal it mid-way."""
    if os.environ.get("PIPELINE_TEST_PAUSE") == point:
        print(f"paused at {point}", file=sys.stderr, flush=True)
        time.sleep(float(os.environ.get("PIPELINE_TEST_PAUSE_S", "60")))


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m flows.transfer", __doc__.split("\n")[0], params=False)
    add_params_options(parser)
    parser.add_argument("--only", action="append", metavar="PATTERN", help="ids/stages (glob)")
    parser.add_argument("--max-parallel", type=int, default=None)
    parser.add_argument("--gpus", type=int, default=None, help="GPUs to use (default: all visible)")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--no-experiment", action="store_true", help="do not dvc exp save")
    parser.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    parser.add_argument("--pool", default=None, help="run model stages on this pool's workers")
    parser.add_argument("--lost-after", type=float, default=60.0, metavar="S",
                        help="seconds without a worker's heartbeat before its stage moves")  # fmt: skip
    try:
        ns = parser.parse_args(argv)
        plan(load_config(ns.params, ns.overrides))  # fail in a second, before Prefect starts
        if ns.dry_run:
            for ident, verdict, launcher in dry_run(ns.params, ns.overrides, ns.only):
                print(f"{ident:<60} {launcher:<11} {verdict}")
            sys.stdout.flush()  # a closed pipe shows here, inside the handler below
            return 0
        from prefect.logging import get_logger

        log = get_logger("flows.transfer")
        preflight(ns.params, ns.overrides, ns.only, ns.gpus, ns.pool, log)  # before Prefect
        with temporary_prefect_server(log), _log_above_bars():  # the server dies with us
            transfer(
                params=ns.params,
                overrides=ns.overrides,
                only=ns.only,
                max_parallel=ns.max_parallel,
                gpus=ns.gpus,
                retries=ns.retries,
                save_experiment=not ns.no_experiment,
                pool=ns.pool,
                lost_after_s=ns.lost_after,
            )
    except PipelineError as exc:
        return report(exc)
    except BrokenPipeError:
        return quiet_broken_pipe()
    except RuntimeError as exc:  # failed stages: the line names them and their own errors
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _log_above_bars():
    """On a terminal, where running stages draw progress bars (:mod:`flows.progress`), log
    lines are written above the bars instead of through them."""
    if not sys.stderr.isatty():
        yield
        return
    import logging

    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[logging.getLogger()]):  # Prefect's console handler
        yield


if __name__ == "__main__":
    sys.exit(main())
