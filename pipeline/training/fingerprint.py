"""A run's fingerprint: the content of everything it reads, hashed the way DVC hashes it.

A checkpoint is resumed only by a run with the same fingerprint. It covers the values of the
parameters the stage declares (from the validated config, so an explicit default equals an
omitted one) and the content hash of every declared dependency: code folders, raw data,
prepared shards and upstream models. Hashes come from DVC's own hashing (``dvc_data``), so a
file or folder hashes here exactly as it does in ``dvc.lock``; files that ``.dvcignore``
excludes (byte-code) are excluded here too. Inside a DVC project the hashes are memoised in
DVC's state database, so an unchanged ImageNet folder is listed, not re-read.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pipeline.stages.spec import Contract, StageSpec, contract, lookup


def _hasher(root: Path):
    """``(path) -> md5`` with DVC's state and ignore rules when ``root`` is a DVC project."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    state = ignore = None
    stack = ExitStack()
    if (root / ".dvc").is_dir():
        from dvc.repo import Repo

        repo = stack.enter_context(Repo(str(root), uninitialized=True))
        state, ignore = repo.state, repo.dvcignore
    odb = HashFileDB(fs, str(root / ".dvc" / "tmp" / "fingerprint-odb"))

    def digest(path: str) -> str | None:
        full = root / path
        if not full.exists():
            return None
        _, meta, obj = build(odb, str(full), fs, "md5", state=state, ignore=ignore, dry_run=True)
        return obj.hash_info.value if obj is not None else meta.md5

    return digest, stack


def dependency_hashes(contract: Contract, root: str | Path = ".") -> dict[str, str | None]:
    """DVC's md5 of every dependency (``None`` for one that does not exist)."""
    digest, stack = _hasher(Path(root))
    with stack:
        return {dep: digest(dep) for dep in contract.deps}


def run_fingerprint(spec: StageSpec, item: dict, cfg, root: str | Path = ".") -> str:
    """sha256 over the instance's declared parameter values and its dependencies' hashes."""
    dump = cfg.model_dump(mode="json")
    declared = contract(spec, item, dump)
    params: dict[str, Any] = {}
    for key in declared.params:
        try:
            params[key] = lookup(dump, key)
        except KeyError:
            params[key] = "<missing>"
    blob = {"params": params, "deps": dependency_hashes(declared, root)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()
