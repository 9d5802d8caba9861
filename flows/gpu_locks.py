"""GPUs of one machine held by file locks, so runs of the workers on it never share a GPU."""

from __future__ import annotations

import contextlib
import fcntl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.core.errors import ConfigError


@contextlib.contextmanager
def gpus_taken(count: int, poll_s: float = 2.0) -> Iterator[list[int] | None]:
    """``count`` GPU indices held by file locks for the run; waits while others hold them."""
    if count == 0:
        yield None
        return
    from pipeline.core.launch import visible_gpus

    visible = visible_gpus()
    if count > visible:
        raise ConfigError(f"this stage needs {count} GPUs, this worker sees {visible}")
    folder = Path(tempfile.gettempdir())
    held: list[tuple[int, object]] = []
    try:
        while len(held) < count:
            for index in range(visible):
                if len(held) == count or any(i == index for i, _ in held):
                    continue
                handle = open(folder / f"pipeline-gpu-{index}.lock", "w")  # noqa: SIM115
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held.append((index, handle))
                except BlockingIOError:
                    handle.close()
            if len(held) < count:
                for _, handle in held:  # never sit on some GPUs while waiting for more
                    handle.close()
                held.clear()
                time.sleep(poll_s)
        yield sorted(i for i, _ in held)
    finally:
        for _, handle in held:
            handle.close()
