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
import time
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
    cmd: list[str],
    env: dict[str, str],
    log,
    ident: str,
    cwd: str | None = None,
    tail: int = 40,
    on_line=None,
) -> None:
    """Run ``cmd``, logging every output line as ``[ident] line``; raise StageFailed on error.

    ``on_line(line)`` sees each line first; a line it returns True for is its own (progress)
    and is not logged. The stage's ``error: ...`` line is not logged either: it becomes the
    message of StageFailed, the task's failure, so it is shown once. The child gets its own
    process group so an interrupted flow stops all of its workers.
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
            if not line or (on_line is not None and on_line(line)):
                continue
            last.append(line)
            if not line.startswith("error: "):
                log.info("[%s] %s", ident, line)
        code = proc.wait()
    except BaseException:
        _kill(proc)
        raise
    if code != 0:
        raise StageFailed(ident, code, list(last))


def _die_with_parent(sig: int = signal.SIGKILL) -> None:
    """In the child: get ``sig`` when the flow dies, even by SIGKILL (Linux), never orphaned.

    The kernel sends it when the thread that started the child ends, so a child meant to
    outlive a worker thread must be started from the main thread.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG


def _die_with(parent: int, sig: int):
    """A ``preexec_fn``: :func:`_die_with_parent`, and die at once if ``parent`` is already
    gone (it died between the fork and the prctl, so the signal would never come)."""

    def preexec() -> None:
        _die_with_parent(sig)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


@contextlib.contextmanager
def temporary_prefect_server(log=None):
    """Prefect's temporary API server as a child that dies with this process; yields its URL
    (None when ``PREFECT_API_URL`` names a server, or Prefect is told to start none).

    Without an API URL Prefect starts this server itself (``SubprocessASGIServer``) as a plain
    subprocess stopped by ``atexit``, which SIGKILL and an unhandled SIGTERM skip: the server
    would outlive the flow. Started here instead (the same uvicorn command and environment),
    it gets SIGTERM from the kernel when the flow dies however it dies (``PR_SET_PDEATHSIG``:
    the simplest mechanism that needs no cooperation from the dying process), and it runs in
    its own session, so a Ctrl-C stops the flow first and the server after it.
    """
    import httpx
    import prefect
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        get_current_settings,
        temporary_settings,
    )

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        yield None
        return
    env = {
        **os.environ,
        # As Prefect starts its temporary server: no UI, no background services.
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }
    timeout = float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    proc = url = None
    try:
        for _ in range(3):  # a port taken between choosing and binding it: another one
            proc, url = _start_server(env, Path(prefect.__file__).parent.parent)
            if _wait_healthy(proc, url, timeout, httpx):
                break
            _stop(proc)
        else:
            raise RuntimeError("the temporary Prefect server did not start")
        if log is not None:
            log.info("temporary Prefect server on %s (pid %d), stopped with this flow",
                     url, proc.pid)  # fmt: skip
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _drain_prefect_queues()
    finally:
        if proc is not None:
            _stop(proc)


def _start_server(env: dict, app_dir: Path) -> tuple[subprocess.Popen, str]:
    """Prefect's API server (uvicorn) on a free local port, killed by the kernel with us."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port",
         str(port), "--log-level", "error", "--lifespan", "on"],
        env=env,
        start_new_session=True,
        preexec_fn=_die_with(os.getpid(), signal.SIGTERM),
    )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}/api"


def _drain_prefect_queues() -> None:
    """Send the logs and events Prefect still queues while its server is up: sent after, each
    fails ("Error logging to API") and holds the exit for a minute of retries."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=10)


def _free_port() -> int:
    import socket

    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen, url: str, timeout: float, httpx) -> bool:
    """Whether the server answers its health check (False: it exited). ``timeout`` counts the
    pauses between checks only, as Prefect counts it for its own temporary server."""
    with httpx.Client() as client:
        for _ in range(max(1, round(timeout / 0.1))):
            if proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/health", timeout=2).status_code == 200:
                    return True
            time.sleep(0.1)
    raise RuntimeError(f"the temporary Prefect server at {url} did not answer in {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
