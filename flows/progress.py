"""A running stage's progress, in the Prefect UI and on the flow's terminal.

The flow asks a stage for progress by setting ``PIPELINE_PROGRESS=<instance id>`` in its
environment; the stage then prints ``PROGRESS <id> <done> <total> <unit> [key=value ...]`` lines
on stderr (:mod:`pipeline.core.progress`), at most one a second. The task that runs the stage
reads them from its output (:func:`flows.launch.run_streaming`) and shows them:

* in the UI, as one Prefect progress artifact per running instance, created at the first line
  and updated at most every :data:`ARTIFACT_EVERY_S` seconds (and at the end), its description
  saying what the numbers are (``120/300 steps, 1m20s left, epoch=2/5 loss=0.43``);
* on the flow's terminal, as a tqdm bar per running stage with its total and time left when
  stderr is a TTY, otherwise as plain lines in the task's log at a bounded rate (each tenth,
  or a minute without one, never two within 10 s).

Why lines on stderr and not Prefect calls in the stage: the stage is an ordinary process that
``dvc repro`` and a person at a shell run the same way, with no Prefect and no API server to
reach; the task that started it holds the Prefect task-run context the artifact belongs to,
and already reads the stage's output line by line.
"""

from __future__ import annotations

import re
import sys
import threading
from dataclasses import dataclass, field

from pipeline.core.progress import ENV, PREFIX, LineSchedule, Rate, describe

__all__ = ["ENV", "ARTIFACT_EVERY_S", "Update", "parse", "StageProgress", "artifact_key"]

ARTIFACT_EVERY_S = 5.0  # seconds between updates of a progress artifact (the API's load)


@dataclass
class Update:
    ident: str
    done: int
    total: int
    unit: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def percent(self) -> float:
        return min(100.0, 100.0 * self.done / self.total) if self.total > 0 else 0.0


def parse(line: str) -> Update | None:
    """The progress update a ``PROGRESS ...`` line carries; None for any other line."""
    parts = line.split()
    if len(parts) < 5 or parts[0] != PREFIX:
        return None
    try:
        done, total = int(parts[2]), int(parts[3])
    except ValueError:
        return None
    fields = dict(p.split("=", 1) for p in parts[5:] if "=" in p)
    return Update(parts[1], done, total, parts[4], fields)


def artifact_key(ident: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for an instance id."""
    return "progress-" + re.sub(r"[^a-z0-9]+", "-", ident.lower()).strip("-")


class _Slots:
    """Terminal rows for concurrent bars, so two running stages never draw on one row."""

    def __init__(self):
        self._lock, self._used = threading.Lock(), set()

    def take(self) -> int:
        with self._lock:
            slot = next(i for i in range(len(self._used) + 1) if i not in self._used)
            self._used.add(slot)
            return slot

    def give(self, slot: int) -> None:
        with self._lock:
            self._used.discard(slot)


_SLOTS = _Slots()


class StageProgress:
    """Shows the ``PROGRESS`` lines of one stage process (see the module docstring).

    ``line(text)`` returns True for a progress line (consumed: not logged as output).
    Showing progress never fails the stage: an API error is logged once and the artifact
    is given up.
    """

    def __init__(self, ident: str, log, *, tty: bool | None = None, clock=None):
        import time

        self.ident, self.log = ident, log
        self.clock = clock or time.monotonic
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.artifact_id = None
        self.last: Update | None = None
        self._sent_at: float | None = None
        self._sent: Update | None = None
        self._broken = False
        self._rate = Rate(self.clock)
        self._lines = LineSchedule(clock=self.clock)
        self._bar = self._slot = None

    def line(self, text: str) -> bool:
        update = parse(text)
        if update is None:
            return False
        self.last = update
        left = self._rate.left(update.done, update.total)
        self._artifact(update, left)
        self._terminal(update, left)
        return True

    def close(self) -> None:
        """The last update reaches the artifact; the terminal bar goes."""
        if self.last is not None and self._sent is not self.last:
            self._artifact(self.last, None, force=True)
        if self._bar is not None:
            self._bar.close()
            _SLOTS.give(self._slot)
            self._bar = None

    # -- the UI ---------------------------------------------------------------------------------

    def _artifact(self, update: Update, left: float | None, force: bool = False) -> None:
        now = self.clock()
        if self._broken:
            return
        if not force and self._sent_at is not None and now - self._sent_at < ARTIFACT_EVERY_S:
            return
        text = f"{self.ident}: " + describe(update.done, update.total, update.unit,
                                            update.fields, left)  # fmt: skip
        try:
            if self.artifact_id is None:
                from prefect.artifacts import create_progress_artifact

                self.artifact_id = create_progress_artifact(
                    update.percent, key=artifact_key(self.ident), description=text
                )
            else:
                from prefect.artifacts import update_progress_artifact

                update_progress_artifact(self.artifact_id, update.percent, description=text)
        except Exception as exc:  # the UI is a view: never fail the stage for it
            self._broken = True
            self.log.warning("%s: progress not shown in the UI: %s", self.ident, exc)
            return
        self._sent_at, self._sent = now, update

    # -- the terminal ---------------------------------------------------------------------------

    def _terminal(self, update: Update, left: float | None) -> None:
        if not self.tty:
            if self._lines.due(update.done, update.total):
                line = describe(update.done, update.total, update.unit, update.fields, left)
                self.log.info("[%s] %s", self.ident, line)
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            self._slot = _SLOTS.take()
            self._bar = tqdm(total=update.total, desc=self.ident, unit=update.unit,
                             position=self._slot, leave=False, dynamic_ncols=True)  # fmt: skip
        bar = self._bar
        bar.total = update.total
        bar.set_postfix(update.fields, refresh=False)
        bar.update(update.done - bar.n)
