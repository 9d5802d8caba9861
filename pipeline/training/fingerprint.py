"""A run's fingerprint: the content of everything it reads, hashed the way DVC hashes it.

A checkpoint is resumed only by a run with the same fingerprint. It covers the values of the
parameters the stage declares (from the validated config, so an explicit default equals an
omitted one) and the content hash of every dependency of its contract, the list ``dvc.yaml``
declares: the code files its module imports (derived, :mod:`pipeline.core.codedeps`), raw
data, prepared shards and upstream models. Hashes come from DVC's own hashing (``dvc_data``), so a
file or folder hashes here exactly as it does in ``dvc.lock``; files that ``.dvcignore``
excludes (byte-code) are excluded here too. Inside a DVC project the hashes are memoised in
DVC's state database, so an unchanged ImageNet folder is listed, not re-read.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from contextlib import ExitStack
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from pipeline.core.params_file import lookup


class Declared(Protocol):
    """A stage declaration (``pipeline.stages.spec.StageSpec``): what an instance reads."""

    def contract(self, item: dict, dump: dict) -> Any: ...  # .params, .deps: lists of str


# The code that runs is the imported package, wherever the stage runs from.
CODE_ROOT = Path(__file__).resolve().parents[2]


def _locate(dep: str, root: Path) -> Path:
    return (CODE_ROOT if PurePosixPath(dep).parts[0] == "pipeline" else root) / dep


class _Hasher:
    """DVC's md5 of files and folders, with the state and ignore rules of the DVC project
    that holds each path (none outside a project)."""

    def __init__(self):
        from dvc_data.hashfile.db import HashFileDB
        from dvc_objects.fs.local import LocalFileSystem

        self.fs = LocalFileSystem()
        self.stack = ExitStack()
        # build() wants an object store; with dry_run nothing is written to it.
        scratch = self.stack.enter_context(tempfile.TemporaryDirectory(prefix="fingerprint-"))
        self.odb = HashFileDB(self.fs, scratch)
        self.repos: dict[Path, object] = {}

    def _repo(self, path: Path):
        for top in (path, *path.parents):
            if (top / ".dvc").is_dir():
                if top not in self.repos:
                    from dvc.repo import Repo

                    self.repos[top] = self.stack.enter_context(Repo(str(top), uninitialized=True))
                return self.repos[top]
        return None

    def __call__(self, path: Path) -> str | None:
        from dvc_data.hashfile.build import build

        if not path.exists():
            return None
        repo = self._repo(path.resolve())
        state = repo.state if repo is not None else None
        ignore = repo.dvcignore if repo is not None else None
        _, meta, obj = build(
            self.odb, str(path.resolve()), self.fs, "md5", state=state, ignore=ignore, dry_run=True
        )
        return obj.hash_info.value if obj is not None else meta.md5


def dependency_hashes(deps: list[str], root: str | Path = ".") -> dict[str, str | None]:
    """DVC's md5 of every dependency (``None`` for one that does not exist)."""
    hasher = _Hasher()
    with hasher.stack:
        return {dep: hasher(_locate(dep, Path(root))) for dep in deps}


def run_fingerprint(spec: Declared, item: dict, cfg, root: str | Path = ".") -> str:
    """sha256 over the instance's declared parameter values and its dependencies' hashes."""
    dump = cfg.model_dump(mode="json")
    declared = spec.contract(item, dump)
    params: dict[str, Any] = {}
    for key in declared.params:
        try:
            params[key] = lookup(dump, key)
        except KeyError:
            params[key] = "<missing>"
    blob = {"params": params, "deps": dependency_hashes(declared.deps, root)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()
