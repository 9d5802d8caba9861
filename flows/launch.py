"""How the flow starts a stage: the command ``dvc.yaml`` declares for it, in a subprocess with
its allotted GPUs, its output forwarded line by line to the Prefect task's log.

A training stage with ``train.gpus`` > 1 relaunches itself under torchrun
(:mod:`pipeline.core.launch`), so the flow and ``dvc repro`` launch it the same way.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pipeline

REPO_ROOT = Path(pipeline.__file__).resolve().parents[1]


class StageFailed(RuntimeError):
    """A stage process exited non-zero; ``exit_code`` 2 is a user error (no point retrying).

    The message is the stage's own ``error: ...`` line when it printed one, else its last lines.
    """

    def __init__(self, ident: str, exit_code: int, tail: list[str]):
        self.exit_code = exit_code
        errors = [line for line in tail if line.startswith("error: ")]
        detail = errors[-1] if errors else "last output:\n" + "\n".join(tail[-10:])
        super().__init__(f"{ident}: exited with status {exit_code}: {detail}")


def stage_argv(cmd: str) -> list[str]:
    """``dvc.yaml``'s command as an argument list, on this interpreter."""
    argv = shlex.split(cmd)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def child_env(devices: list[int] | None, cpus: int | None = None) -> dict[str, str]:
    """The flow's environment, with this checkout importable, the allotted GPUs visible and,
    when several stages share the machine, each one's share of the CPU cores
    (``PIPELINE_CPUS``: the threads of work whose results do not depend on them)."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), path) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, devices))
    if cpus is not None:
        env["PIPELINE_CPUS"] = str(cpus)
    return env


def run_streaming(
    cmd: list[str], env: dict[str, str], log, ident: str, cwd: str | None = None, tail: int = 40
) -> None:
    """Run ``cmd``, logging every output line as ``[ident] line``; raise StageFailed on error.

    The child gets its own process group so an interrupted flow stops all of its workers.
    """
    last: collections.deque[str] = collections.deque(maxlen=tail)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:  # bytes, split on \n only
            # tqdm redraws with carriage returns; keep the last state of each line.
            text = raw.decode("utf-8", errors="replace").rstrip("\n")
            line = text.rstrip("\r").rsplit("\r", 1)[-1].rstrip()
            if line:
                last.append(line)
                log.info("[%s] %s", ident, line)
        code = proc.wait()
    except BaseException:
        _kill(proc)
        raise
    if code != 0:
        raise StageFailed(ident, code, list(last))


def _die_with_parent() -> None:
    """In the child: be killed when the flow dies, even by SIGKILL (Linux), never orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


class DevicePool:
    """GPU indices handed to stages so concurrent stages never share a GPU."""

    def __init__(self, count: int):
        self.total = count
        self._free = list(range(count))
        self._lock = threading.Lock()

    def acquire(self, n: int) -> list[int] | None:
        with self._lock:
            if n > len(self._free):
                return None
            taken, self._free = self._free[:n], self._free[n:]
            return taken

    def release(self, devices: list[int] | None) -> None:
        if devices:
            with self._lock:
                self._free = sorted(self._free + list(devices))
