"""How the flow starts a stage: the same ``python -m pipeline <stage>`` command DVC runs, under
``torchrun`` when the stage trains on several GPUs, with its output forwarded line by line.

Multi-node: set ``PIPELINE_NNODES`` (> 1), ``PIPELINE_RDZV_ENDPOINT`` (``host:port`` of the
rendezvous) and optionally ``PIPELINE_RDZV_BACKEND`` (default ``c10d``), ``PIPELINE_RDZV_ID``
(prefix of the rendezvous id; the stage id is appended so stages never share one) and
``PIPELINE_NODE_RANK`` on every node; each node then starts its share of the processes.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading

from flows.state import REPO_ROOT


class StageFailed(RuntimeError):
    """A stage process exited non-zero; ``exit_code`` 2 is a user error (no point retrying)."""

    def __init__(self, ident: str, exit_code: int, tail: list[str]):
        self.exit_code = exit_code
        last = "\n".join(tail)
        super().__init__(f"{ident}: exited with status {exit_code}; last output:\n{last}")


def torchrun_args(nproc: int, ident: str, env: dict[str, str] | None = None) -> list[str]:
    """``torchrun`` options: one standalone node (free port), or a multi-node rendezvous."""
    env = os.environ if env is None else env
    nnodes = int(env.get("PIPELINE_NNODES", "1"))
    args = [f"--nproc_per_node={nproc}"]
    if nnodes <= 1:
        return ["--standalone", *args]
    endpoint = env.get("PIPELINE_RDZV_ENDPOINT")
    if not endpoint:
        raise ValueError("PIPELINE_NNODES > 1 needs PIPELINE_RDZV_ENDPOINT=host:port")
    run_id = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{env.get('PIPELINE_RDZV_ID', 'pipeline')}-{ident}")
    args += [
        f"--nnodes={nnodes}",
        f"--rdzv-backend={env.get('PIPELINE_RDZV_BACKEND', 'c10d')}",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={run_id}",
    ]
    if "PIPELINE_NODE_RANK" in env:
        args.append(f"--node-rank={env['PIPELINE_NODE_RANK']}")
    return args


def stage_command(
    stage: str,
    cli_args: list[str],
    params: str,
    overrides: list[str],
    nproc: int = 1,
    ident: str = "",
) -> list[str]:
    """``python -m pipeline <stage> ...``, or ``torchrun --nproc_per_node=N -m pipeline ...``.

    ``torchrun`` is invoked as ``python -m torch.distributed.run`` (its entry point), so the
    workers use the flow's interpreter and environment.
    """
    sets = [a for o in overrides for a in ("--set", o)]
    body = ["-m", "pipeline", stage, "--params", str(params), *sets, *cli_args]
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", *torchrun_args(nproc, ident), *body]
    return [sys.executable, *body]


def child_env(devices: list[int] | None) -> dict[str, str]:
    """The flow's environment, with this checkout importable and the allotted GPUs visible."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), path) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, devices))
    return env


def run_streaming(cmd: list[str], env: dict[str, str], log, ident: str, tail: int = 40) -> None:
    """Run ``cmd``, logging every output line as ``[ident] line``; raise StageFailed on error.

    The child gets its own process group so an interrupted flow stops all of its workers.
    """
    last: collections.deque[str] = collections.deque(maxlen=tail)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
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
