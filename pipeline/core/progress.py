"""Progress of a long stage, shown to whoever runs it: a bar, plain lines, or lines for the flow.

One :class:`Progress` per stage, fed ``update(done, total, **fields)`` as often as is convenient
(every training step); it decides what to show and how often:

* **Under the flow** (``PIPELINE_PROGRESS=<instance id>`` in the environment, set by
  :mod:`flows.progress`): one machine-readable line on stderr,
  ``PROGRESS <id> <done> <total> <unit> [key=value ...]``, at most every
  ``PIPELINE_PROGRESS_EVERY`` seconds (default 1), plus the first and the last. The flow's task
  reads them from the stage's output and turns them into a Prefect progress artifact and its
  own terminal display; the stage itself never talks to Prefect.
* **On a terminal** (stderr is a TTY, ``run.progress``): a tqdm bar with the total and the time
  left.
* **Otherwise** (``dvc repro > log``, ``run.progress``): a plain log line at each tenth of the
  total, or after a minute without one, never two within 10 s (the last one always).

Showing progress reads no device value a stage would not read anyway and draws no random number:
results are the same with it on or off.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable

# Left out of every stage's code deps (pipeline.core.codedeps):
NOT_A_STAGE_DEPENDENCY = "how progress is shown: never what a stage computes"

ENV = "PIPELINE_PROGRESS"  # the instance id the lines are for; set by the flow
EVERY_ENV = "PIPELINE_PROGRESS_EVERY"  # seconds between machine lines (default 1)
PREFIX = "PROGRESS"

log = logging.getLogger("pipeline.progress")


def format_line(ident: str, done: int, total: int, unit: str, fields: dict) -> str:
    """``PROGRESS <id> <done> <total> <unit> k=v ...``: one line, split on spaces."""
    extra = "".join(f" {k}={_value(v)}" for k, v in fields.items() if v is not None)
    return f"{PREFIX} {_token(ident)} {int(done)} {int(total)} {_token(unit)}{extra}"


def _value(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return _token(str(v))


def _token(text: str) -> str:
    return "_".join(str(text).split()) or "-"


def describe(done: int, total: int, unit: str, fields: dict, left_s: float | None = None) -> str:
    """``40% 120/300 steps, 2m05s left, epoch=2/5 loss=0.43``: one plain progress line."""
    pct = f"{100 * done / total:.0f}% " if total > 0 else ""
    eta = f", {_duration(left_s)} left" if left_s is not None else ""
    extra = " ".join(f"{k}={_value(v) if not isinstance(v, str) else v}" for k, v in fields.items())
    return f"{pct}{done}/{total} {unit}{eta}" + (f", {extra}" if extra else "")


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class LineSchedule:
    """When a plain line is due: each new tenth of the total, or ``quiet_s`` without a line,
    never two within ``min_s`` (the final one always): a bounded rate for any stage length."""

    def __init__(self, min_s: float = 10.0, quiet_s: float = 60.0, clock=time.monotonic):
        self.min_s, self.quiet_s, self.clock = min_s, quiet_s, clock
        self.last_t: float | None = None
        self.last_tenth = -1

    def due(self, done: int, total: int) -> bool:
        now = self.clock()
        tenth = int(10 * done / total) if total > 0 else 0
        final = total > 0 and done >= total
        if self.last_t is None or (final and tenth > self.last_tenth):
            ok = True  # the first line, and the last one once
        else:
            waited = now - self.last_t
            ok = waited >= self.min_s and (tenth > self.last_tenth or waited >= self.quiet_s)
        if ok:
            self.last_t, self.last_tenth = now, tenth
        return ok


class Rate:
    """Time left, from the rate since the first update (resumed work does not count)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.start: tuple[float, int] | None = None

    def left(self, done: int, total: int) -> float | None:
        now = self.clock()
        if self.start is None:
            self.start = (now, done)
            return None
        t0, d0 = self.start
        if done <= d0 or now <= t0:
            return None
        return (total - done) * (now - t0) / (done - d0)


class Progress:
    """The progress of one stage (see the module docstring for where it goes).

    ``enabled``: the terminal display (``run.progress``; False on ranks other than 0). Lines
    for the flow are written whenever the flow asks for them, on rank 0 only (``main``).
    """

    def __init__(
        self,
        desc: str,
        total: int,
        unit: str = "it",
        *,
        enabled: bool = True,
        main: bool = True,
        initial: int = 0,
        stream=None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.desc, self.total, self.unit, self.clock = desc, int(total), unit, clock
        self.stream = stream if stream is not None else sys.stderr
        self.ident = os.environ.get(ENV) if main else None
        self.every = float(os.environ.get(EVERY_ENV) or 1.0)
        self.done, self.fields = int(initial), {}
        self._sent: float | None = None  # when the last machine line went out
        self._pending = False  # an update not yet sent
        self.bar = None
        self.lines: LineSchedule | None = None
        self.rate = Rate(clock)
        if self.ident or not (enabled and main):
            return
        if _isatty(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, desc=desc, unit=unit,
                            leave=False, dynamic_ncols=True, file=self.stream)  # fmt: skip
        else:
            self.lines = LineSchedule(clock=clock)

    @property
    def active(self) -> bool:
        """Whether anyone watches: callers skip work (a host read) only progress needs."""
        return bool(self.ident or self.bar is not None or self.lines is not None)

    def update(self, done: int, total: int | None = None, **fields) -> None:
        """``done`` of ``total`` (unchanged if None), with ``fields`` to show beside it."""
        if total is not None:
            self.total = int(total)
        self.fields.update(fields)
        step, self.done = int(done) - self.done, int(done)
        if self.ident:
            self._machine()
        elif self.bar is not None:
            if self.bar.total != self.total:
                self.bar.total = self.total
            self.bar.set_postfix({k: _value(v) for k, v in self.fields.items()}, refresh=False)
            self.bar.update(step)
        elif self.lines is not None:
            left = self.rate.left(self.done, self.total)
            if self.lines.due(self.done, self.total):
                line = describe(self.done, self.total, self.unit, self.fields, left)
                log.info("%s: %s", self.desc, line)

    def _machine(self) -> None:
        now = self.clock()
        last = self.total > 0 and self.done >= self.total
        if self._sent is None or last or now - self._sent >= self.every:
            self._write()
            self._sent = now
        else:
            self._pending = True

    def _write(self) -> None:
        line = format_line(self.ident, self.done, self.total, self.unit, self.fields)
        self.stream.write(line + "\n")
        self.stream.flush()
        self._pending = False

    def close(self) -> None:
        """The last state is always shown (a throttled update is sent now)."""
        if self.ident and self._pending:
            self._write()
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
