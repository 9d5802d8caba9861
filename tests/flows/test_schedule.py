"""The flow's schedule: a finished process frees its slot while DVC records it, its dependents
wait for the record, and GPUs are never given to two stages at once (no Prefect: fake tasks
driven step by step); and when a stage's task says its process has ended."""

from __future__ import annotations

import queue
import threading
from types import SimpleNamespace

import pytest
from prefect.states import Completed

from flows.execute import execute_stage, retryable
from flows.launch import StageFailed
from flows.transfer import Schedule
from pipeline.core.errors import ArtifactError
from pipeline.plan import StageInstance


class FakeTask:
    """A submitted stage: the test ends its process (``released``) and its record (done)."""

    def __init__(self, inst, devices, released):
        self.inst, self.devices, self.released = inst, devices, released
        self.state = None
        self._callbacks = []
        self._done = threading.Event()

    def add_done_callback(self, callback) -> None:
        self._callbacks.append(callback)

    def wait(self) -> None:
        self._done.wait(10)

    def finish(self) -> None:
        self.state = Completed(data="ran")
        self._done.set()
        for callback in self._callbacks:
            callback(self)


def _run(instances, gpus: int, max_parallel: int):
    submitted: queue.Queue[FakeTask] = queue.Queue()

    def submit(inst, devices, wait_for, released):
        task = FakeTask(inst, devices, released)
        submitted.put(task)
        return task

    schedule = Schedule(instances, submit, gpus, max_parallel)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(schedule.run()), daemon=True)
    thread.start()
    return submitted, thread, result


def _next(submitted: queue.Queue, timeout: float = 5.0) -> FakeTask:
    return submitted.get(timeout=timeout)


def _none_submitted(submitted: queue.Queue) -> bool:
    try:
        submitted.get(timeout=0.3)
    except queue.Empty:
        return True
    return False


def test_a_finished_process_frees_its_slot_before_its_record_and_dependents_wait():
    a, b, c = (StageInstance(id=n, stage="s", item={}) for n in "abc")
    d = StageInstance(id="d", stage="s", item={}, upstream=["a"])
    submitted, thread, result = _run([a, b, c, d], gpus=0, max_parallel=2)
    first, second = _next(submitted), _next(submitted)
    assert {first.inst.id, second.inst.id} == {"a", "b"}
    assert _none_submitted(submitted)  # two slots, both taken
    task_a = first if first.inst.id == "a" else second
    task_b = second if task_a is first else first
    task_a.released()  # a's process ended; DVC is still recording it
    third = _next(submitted)
    assert third.inst.id == "c"  # the freed slot, while a is not done
    assert _none_submitted(submitted)  # d waits for a's record, not its process
    task_a.finish()
    task_b.released()  # b and c held both slots
    task_d = _next(submitted)
    assert task_d.inst.id == "d"
    for task in (task_b, third, task_d):
        task.released()
        task.finish()
    thread.join(timeout=5)
    assert result == {n: "ran" for n in "abcd"}


def test_gpus_stay_taken_until_the_stage_is_recorded():
    one, two = (StageInstance(id=n, stage="s", item={}, gpus=1) for n in ("g1", "g2"))
    submitted, thread, result = _run([one, two], gpus=1, max_parallel=4)
    first = _next(submitted)
    assert first.devices == [0]
    first.released()
    assert _none_submitted(submitted)  # the one GPU is first's until its record is done
    first.finish()
    second = _next(submitted)
    assert second.devices == [0]
    second.released()
    second.finish()
    thread.join(timeout=5)
    assert result == {"g1": "ran", "g2": "ran"}


class FakeRecord:
    """A workspace whose instance runs ``command``; records the order of what happened."""

    def __init__(self, root, command: str, commit_error: Exception | None = None):
        self.root, self.command, self.commit_error = root, command, commit_error
        self.events: list[str] = []

    def prepare(self, ident: str) -> str:
        return self.command

    def commit(self, ident: str) -> None:
        self.events.append("commit")
        if self.commit_error is not None:
            raise self.commit_error


class Log:
    def info(self, *args) -> None:
        pass

    error = warning = info


def _execute(record: FakeRecord) -> None:
    inst = StageInstance(id="s@0", stage="s", item={})
    execute_stage(record, inst, None, Log(), released=lambda: record.events.append("released"))


def test_a_stage_releases_its_slot_after_its_process_and_before_its_record(tmp_path):
    record = FakeRecord(tmp_path, "python -c pass")
    _execute(record)
    assert record.events == ["released", "commit"]


def test_a_failed_process_keeps_its_slot_for_the_retry(tmp_path):
    record = FakeRecord(tmp_path, "python -c 'raise SystemExit(3)'")
    with pytest.raises(StageFailed):
        _execute(record)
    assert record.events == []  # neither released nor recorded


def test_a_refused_record_is_an_error_that_is_not_retried(tmp_path):
    from dvc.exceptions import DvcException

    record = FakeRecord(tmp_path, "python -c pass", DvcException("output 'x' does not exist"))
    with pytest.raises(ArtifactError, match=r"s@0: DVC cannot record it: output 'x'") as caught:
        _execute(record)
    state = SimpleNamespace(result=lambda raise_on_failure: caught.value)
    assert not retryable(None, None, state)
    assert record.events == ["released", "commit"]
