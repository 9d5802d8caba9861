"""The flow's schedule: a finished process frees its slot while DVC records it, its dependents
wait for the record, and GPUs are never given to two stages at once (no Prefect: fake tasks
driven step by step)."""

from __future__ import annotations

import queue
import threading

from prefect.states import Completed

from flows.transfer import Schedule
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
