"""Skip-if-up-to-date for the flow: a stage instance's key, and the stamp that records it.

``dvc.lock`` records what each DVC stage last ran with; the flow keeps the same facts per
instance in ``artifacts/flow-stamps/<stage>/<id>.json``: a key over the values of the parameters
its contract declares (looked up in the validated config, so an explicit default equals an
omitted one) and the content hashes of its dependencies, plus the hashes of its outputs as they
were written. An instance is up to date when the key is unchanged and every output is still
there, unmodified. Content hashes are cached by file/directory metadata, like DVC's state
database, so an unchanged ImageNet folder is listed, not re-read, on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path, PurePosixPath
from typing import Any

import pipeline
from pipeline.core.io import atomic_write_text

REPO_ROOT = Path(pipeline.__file__).resolve().parents[1]
STAMPS = Path("artifacts/flow-stamps")
_SKIP_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints"}


def _skipped(name: str) -> bool:
    # Byte-code is rewritten by the interpreter and temporary files are mid-write: neither is
    # part of what a stage reads.
    return name.endswith((".pyc", ".pyo")) or (name.startswith(".") and ".tmp-" in name)


class HashCache:
    """Content digests keyed by metadata; thread-safe, persisted as one small JSON file.

    A file is keyed by (size, mtime, inode); a directory by a digest of its listing with those
    fields, so a changed, added or removed file anywhere below re-hashes the whole directory.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else STAMPS / "hash-cache.json"
        self._lock = threading.Lock()
        try:
            self._entries: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._entries = {}

    def _lookup(self, key: str, signature: str) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
        return entry[1] if entry and entry[0] == signature else None

    def _store(self, key: str, signature: str, digest: str) -> None:
        with self._lock:
            self._entries[key] = [signature, digest]

    def save(self) -> None:
        with self._lock:  # one writer at a time: the temporary name is per process
            atomic_write_text(self.path, json.dumps(self._entries, sort_keys=True))

    def file(self, path: Path) -> str:
        st = path.stat()
        signature = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
        key = f"file:{path.resolve()}"
        digest = self._lookup(key, signature)
        if digest is None:
            digest = _file_digest(path)
            self._store(key, signature, digest)
        return digest

    def directory(self, path: Path) -> str:
        files = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
            for name in sorted(names):
                if not _skipped(name):
                    p = Path(root) / name
                    st = p.stat()
                    files.append(
                        (p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns, st.st_ino)
                    )
        files.sort()
        signature = hashlib.sha256(json.dumps(files).encode()).hexdigest()
        key = f"dir:{path.resolve()}"
        digest = self._lookup(key, signature)
        if digest is None:
            h = hashlib.sha256()
            for rel, *_ in files:
                h.update(f"{rel}\0{_file_digest(path / rel)}\n".encode())
            digest = h.hexdigest()
            self._store(key, signature, digest)
        return digest

    def digest(self, path: str | Path) -> str | None:
        """Content hash of a file or directory; None when it does not exist."""
        path = Path(path)
        if path.is_file():
            return self.file(path)
        if path.is_dir():
            return self.directory(path)
        return None


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_MISSING = "<missing>"


def resolve_param(dump: dict, dotted: str) -> Any:
    """The value at ``a.b.c`` in the validated config dump (a missing key is a distinct value)."""
    node: Any = dump
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def products(contract) -> list[str]:
    """What the instance writes for others (checkpoints are private and not checked)."""
    return [*contract.outs, *contract.metrics, *contract.plots]


def locate(dep: str) -> Path:
    """Code dependencies are the imported package's files, wherever the flow runs from."""
    return REPO_ROOT / dep if PurePosixPath(dep).parts[0] == "pipeline" else Path(dep)


def stage_key(cfg, contract, cache: HashCache) -> tuple[str, dict]:
    """``(key, detail)``: the hash over declared parameter values and dependency contents."""
    dump = cfg.model_dump(mode="json")
    detail = {
        "params": {p: resolve_param(dump, p) for p in contract.params},
        "deps": {d: cache.digest(locate(d)) for d in contract.deps},
        "outs": sorted(products(contract)),
    }
    blob = json.dumps(detail, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest(), detail


def output_state(contract, cache: HashCache) -> dict[str, str | None]:
    return {p: cache.digest(p) for p in products(contract)}


def stamp_path(stage: str, ident: str) -> Path:
    return STAMPS / stage / f"{ident}.json"


def read_stamp(stage: str, ident: str) -> dict | None:
    try:
        return json.loads(stamp_path(stage, ident).read_text())
    except (OSError, ValueError):
        return None


def write_stamp(stage: str, ident: str, key: str, detail: dict, outs: dict) -> None:
    atomic_write_text(
        stamp_path(stage, ident),
        json.dumps({"key": key, "outs": outs, "detail": detail}, indent=2, sort_keys=True) + "\n",
    )


def up_to_date(stage: str, ident: str, key: str, outs: dict[str, str | None]) -> bool:
    """Same key as the last successful run, and every output present and as it was written."""
    stamp = read_stamp(stage, ident)
    return (
        stamp is not None
        and stamp.get("key") == key
        and all(h is not None for h in outs.values())
        and stamp.get("outs") == outs
    )
