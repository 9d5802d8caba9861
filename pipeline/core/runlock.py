"""One process per run directory: an exclusive ``flock`` held for the life of a stage instance.

Two runs of the same stage instance (a DVC repro and a Prefect flow, or a retry launched while
the first attempt still runs) would interleave writes to the same checkpoint and outputs. The
lock is advisory and tied to an open file descriptor, so the kernel drops it when its holder
dies, however it dies: a killed run never leaves a lock that blocks the next one.

Once the lock is held, no other live process can be writing in the directory, so temporary
files left by killed writers (``.<name>.tmp-<pid>``, see :mod:`pipeline.core.io`) whose PID is gone
are removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.core.errors import RunLockedError
from pipeline.core.io import TEMP_MARK

# Left out of every stage's code deps (pipeline.core.codedeps):
NOT_A_STAGE_DEPENDENCY = "when a stage instance may run (one at a time), not what it computes"

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
# ``.<name>.tmp-<pid>`` (atomic file writes) or ``.<name>.tmp-<pid>-<hex>`` (directories).
_TEMP = re.compile(rf"^\..+{re.escape(TEMP_MARK)}(\d+)(-[0-9a-f]+)?$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (signal 0 checks without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_temp_files(directory: Path) -> list[Path]:
    """Temporary files and folders in ``directory`` whose writer process is no longer alive."""
    stale = []
    for entry in sorted(directory.iterdir()):
        match = _TEMP.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not pid_alive(int(match.group(1))):
            stale.append(entry)
    return stale


@contextlib.contextmanager
def hold_run_lock(directory: str | Path, clean: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Hold ``<directory>/.lock`` exclusively, or raise RunLockedError naming the holder's PID.

    On entry, leftovers of killed writers in ``directory`` and in the folders ``clean`` (where
    the instance writes its outputs and checkpoints) are deleted (and logged).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock_path = directory / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunLockedError(
                f"{directory} is in use by another run (PID {holder}, lock {lock_path}); "
                "wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        folders = [directory, *(Path(c) for c in clean if Path(c).is_dir())]
        for path in (p for folder in folders for p in stale_temp_files(folder)):
            log.info("removing %s, left by a killed run", path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        yield lock_path
    finally:
        os.close(fd)  # releases the lock; the file stays (deleting it would race a new holder)
