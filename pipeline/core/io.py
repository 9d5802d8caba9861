"""Atomic file writes (temporary name, then rename): a crash never leaves half a file.

A temporary file is named ``.<name>.tmp-<pid>`` beside its target, so a later run can tell a
killed writer's leftovers (see :mod:`pipeline.core.runlock`) from a live writer's. Torch files
(models, checkpoints) are written the same way by :mod:`pipeline.models.torch_files`; this
module imports no torch, since every command, the control plane included, writes files.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError, ResourceError

TEMP_MARK = ".tmp-"

# Errors of the machine, not of the code or the data: each is reported as one line naming the
# path (ResourceError), never as a traceback.
RESOURCE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file-size limit (see `ulimit -f`) or the file system",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
# Those only a write meets; a denied permission can also be a read's.
WRITE_ONLY_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def resource_cause(exc: BaseException) -> OSError | None:
    """The resource ``OSError`` behind ``exc``, if any: itself, or one it was raised from
    (torch's file writer turns a failed ``write`` into a RuntimeError whose context is it)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def describe_resource_error(
    cause: OSError, path: str | Path | None, kept: str = "", writing: bool = True
) -> str:
    """``cannot write PATH: reason (ENAME[, at FILE])[; kept]``: FILE is the one the system
    refused when it is not ``path`` itself (a temporary name, a folder); ``path`` None: FILE.

    ``writing`` False: the failing call is unknown, so a denied permission (which a read can
    meet too) is ``cannot access FILE``, not blamed on ``path``.
    """
    name = errno.errorcode.get(cause.errno, str(cause.errno))
    verb = "write"
    if not writing and cause.errno not in WRITE_ONLY_ERRNOS:
        verb, path = "access", None
    file = cause.filename
    if path is None:
        path, file = file or "a file", None
    at = f", at {file}" if file is not None and str(file) != str(path) else ""
    kept = f"; {kept}" if kept else ""
    return f"cannot {verb} {path}: {RESOURCE_ERRNOS[cause.errno]} ({name}{at}){kept}"


@contextmanager
def resource_errors(path: str | Path, kept: str = "", writing: bool = True) -> Iterator[None]:
    """Turn a resource ``OSError`` raised inside (however wrapped) into a ResourceError naming
    ``path``; any other exception passes unchanged."""
    try:
        yield
    except PipelineError:  # already one line (a ResourceError naming its own file)
        raise
    except Exception as exc:
        cause = resource_cause(exc)
        if cause is None:
            raise
        raise ResourceError(describe_resource_error(cause, path, kept, writing)) from exc


def temp_path(path: Path) -> Path:
    """Where ``path`` is written before the rename: hidden, and tagged with the writer's PID."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def remove_temp(tmp: Path) -> None:
    """Best effort: a folder that refused the write may refuse the removal too."""
    with suppress(OSError):
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """A failed write (disk full, read-only, ...) is a one-line ResourceError; ``path`` keeps
    its previous content."""
    path = Path(path)
    tmp = temp_path(path)
    with resource_errors(path, kept=f"the previous {path.name} (if any) is intact"):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        finally:
            remove_temp(tmp)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(_clean(data), indent=2, sort_keys=True) + "\n")


def write_csv(path: str | Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


@contextlib.contextmanager
def staged_replace(parent: Path, outputs: Sequence[Path]) -> Iterator[Path]:
    """Write a set of outputs (files and folders named by ``outputs``) into a fresh folder beside
    them, yielded; on success each replaces its old version, files by an atomic rename, folders
    by two renames. On failure nothing old is touched and the staging folder is removed.

    Why not one rename of the parent: other stages' outputs may share it (``reports/papers``).
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staged-", dir=parent))
    try:
        yield staging
        for final in outputs:
            new = staging / Path(final).name
            if not new.exists():
                continue
            if new.is_dir():
                old = Path(str(final) + f".old-{os.getpid()}")
                if Path(final).exists():
                    os.replace(final, old)
                os.replace(new, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(new, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
