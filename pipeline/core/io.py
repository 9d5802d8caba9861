"""Atomic file writes (temporary name, then rename): a crash never leaves half a file.

A temporary file is named ``.<name>.tmp-<pid>`` beside its target, so a later run can tell a
killed writer's leftovers (see :mod:`pipeline.core.runlock`) from a live writer's. Torch files
(models, checkpoints) are written the same way by :mod:`pipeline.models.torch_files`; this
module imports no torch, since every command, the control plane included, writes files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

TEMP_MARK = ".tmp-"


def temp_path(path: Path) -> Path:
    """Where ``path`` is written before the rename: hidden, and tagged with the writer's PID."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
