"""One stage instance run in a workspace, and what its Prefect task reports.

Shared by the flow's own tasks (:mod:`flows.transfer`) and the pool's (:mod:`flows.pool`):
:func:`execute_stage` runs an instance the way ``dvc repro`` would, :func:`stage_state` names
the task's final state for what happened, :func:`retryable` is the one rule for which
failures a task retries and :func:`retry_options` the task options that apply it.
"""

from __future__ import annotations

from prefect.states import Completed

from flows.launch import StageFailed, child_env, run_streaming, stage_argv
from flows.progress import ENV as PROGRESS_ENV
from flows.progress import StageProgress
from flows.record import DvcRecord
from pipeline.core.cli import one_line
from pipeline.core.errors import ArtifactError, PipelineError
from pipeline.plan import StageInstance


def execute_stage(
    record: DvcRecord,
    inst: StageInstance,
    devices: list[int] | None,
    log,
    cpus: int | None = None,
    released=None,
) -> tuple[str, str]:
    """Run one instance the way ``dvc repro`` would; ``(status, message)``.

    The plain function behind the task, so it can be tested without Prefect. The stage reports
    its progress on its output (``PIPELINE_PROGRESS``), shown by :mod:`flows.progress`.
    ``released()`` is called when the stage's process has ended well, before DVC records it:
    the schedule submits the next stage then, so its task starts while this one is recorded
    and finalised (DVC's calls themselves take turns under the record's lock).
    """
    command = record.prepare(inst.id)
    if command == "up to date":
        return "up to date", "unchanged since dvc.lock; not run"
    if command == "restored":
        return "restored", "restored from DVC's run-cache; not run"
    argv = stage_argv(command)
    env = child_env(devices, cpus)
    env.update({"DVC_ROOT": str(record.root), "DVC_STAGE": inst.id, PROGRESS_ENV: inst.id})
    log.info("%s: %s", inst.id, " ".join(argv[1:]))
    progress = StageProgress(inst.id, log)
    try:
        run_streaming(argv, env, log, inst.id, cwd=str(record.root), on_line=progress.line)
    finally:
        progress.close()
    if released is not None:  # not after a failed process: Prefect may run it again
        released()
    _record(record, inst.id)
    return "ran", "ran and recorded in dvc.lock"


def _record(record: DvcRecord, ident: str) -> None:
    """Commit the finished instance; DVC's refusal (a declared output the stage did not write)
    is an ArtifactError: it would fail the same way again, so it is never retried (and the
    process, its slot already released, never runs a second time)."""
    from dvc.exceptions import DvcException

    try:
        record.commit(ident)
    except DvcException as exc:
        raise ArtifactError(f"{ident}: DVC cannot record it: {one_line(exc)}") from None


def retryable(task, task_run, state) -> bool:
    """Retry crashes and lost workers, not mistakes: a user error (exit 2) fails the same way."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, PipelineError):
        return False
    return not (isinstance(exc, StageFailed) and exc.exit_code == PipelineError.exit_code)


def retry_options(retries: int, delay: float) -> dict:
    """Task options for ``retries`` attempts after a crash, none after a user error.

    Prefect itself always gets at least one retry, the count being kept by the condition: with
    ``retries=0`` Prefect would log a failed state with an empty traceback, a second copy of
    the task's one-line failure.
    """

    def condition(task, task_run, state) -> bool:
        return task_run.run_count <= retries and retryable(task, task_run, state)

    return dict(retries=max(1, retries), retry_delay_seconds=delay, retry_condition_fn=condition)


def stage_state(inst: StageInstance, status: str, message: str, log):
    """The task's final state, named for what happened: ran, *Up to date* or *Restored*."""
    log.info("%s: %s", inst.id, message)
    if status == "ran":
        return Completed(message=message, data=status)
    name = "Up to date" if status == "up to date" else "Restored"
    return Completed(name=name, message=message, data=status)
