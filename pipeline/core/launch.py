"""Multi-process launch: a training stage with ``train.gpus: N > 1`` relaunches itself under
torchrun with N processes, whoever started it (``dvc repro``, the flow, or a person).

On ``run.device: cpu`` the N processes use gloo (how the tests exercise DDP). On ``cuda`` or
``auto`` with fewer than N visible GPUs the stage stops before any work with one line. A user
error in a child reaches the launcher through ``PIPELINE_ERROR_FILE`` and leaves it with
status 2 and the child's own message, not torchrun's traceback.

Multi-node: set ``PIPELINE_NNODES`` (> 1), ``PIPELINE_RDZV_ENDPOINT`` (``host:port``) and
optionally ``PIPELINE_RDZV_BACKEND`` (default ``c10d``), ``PIPELINE_RDZV_ID`` (prefix of the
rendezvous id; the stage instance id is appended) and ``PIPELINE_NODE_RANK`` on every node.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.core.errors import ConfigError, PipelineError

# Left out of every stage's code deps (pipeline.core.codedeps):
NOT_A_STAGE_DEPENDENCY = (
    "starts a stage's processes under torchrun; the process group they form is set up by "
    "pipeline.runtime.distributed, which is a dependency"
)

ERROR_FILE = "PIPELINE_ERROR_FILE"


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_devices(nproc: int, device: str, visible: int | None = None, what: str = "") -> None:
    """Fail before any work when ``nproc`` processes cannot each have a GPU."""
    if device == "cpu" or nproc <= 1:
        return
    visible = visible_gpus() if visible is None else visible
    if visible < nproc:
        raise ConfigError(
            f"{what or 'this stage'} needs {nproc} GPUs (train.gpus) but {visible} are visible "
            f"with run.device: {device}; use fewer GPUs or run.device: cpu for {nproc} gloo "
            "processes"
        )


def torchrun_args(nproc: int, ident: str, env: dict[str, str] | None = None) -> list[str]:
    """``torchrun`` options: one standalone node (free port), or a multi-node rendezvous."""
    env = os.environ if env is None else env
    nnodes = int(env.get("PIPELINE_NNODES", "1"))
    args = [f"--nproc_per_node={nproc}"]
    if nnodes <= 1:
        return ["--standalone", *args]
    endpoint = env.get("PIPELINE_RDZV_ENDPOINT")
    if not endpoint:
        raise ConfigError("PIPELINE_NNODES > 1 needs PIPELINE_RDZV_ENDPOINT=host:port")
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


def relaunch(argv: list[str], nproc: int, ident: str) -> int:
    """Run ``python -m pipeline <argv>`` as ``nproc`` torchrun processes; their exit status."""
    with tempfile.TemporaryDirectory(prefix="pipeline-launch-") as tmp:
        error_file = Path(tmp) / "error"
        env = {**os.environ, ERROR_FILE: str(error_file), "PYTHONUNBUFFERED": "1"}
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            *torchrun_args(nproc, ident),
            "-m",
            "pipeline",
            *argv,
        ]
        print(f"launching {nproc} processes: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        code = subprocess.call(cmd, env=env)
        if code != 0 and error_file.is_file():
            raise PipelineError(error_file.read_text().strip())
        return code


def record_child_error(exc: PipelineError) -> None:
    """In a torchrun child: hand a user error to the launcher (the first child's message wins)."""
    path = os.environ.get(ERROR_FILE)
    if not path:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(str(exc))
