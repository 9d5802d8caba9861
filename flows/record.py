"""DVC as the one record of what was computed from what; the flow reads and writes it here.

The flow runs DVC's own stages (the commands of ``dvc.yaml``) concurrently, which ``dvc repro``
cannot do in one workspace. Around each run it asks DVC, through DVC's Python API, the same
questions ``dvc repro`` asks, and records the answer where ``dvc repro`` would:

* :meth:`DvcRecord.changed`: DVC's own verdict (``Stage.changed``: command, params, deps, outs
  against ``dvc.lock``), asked when the instance's upstream stages have finished and been
  recorded, exactly when ``dvc repro`` would ask it;
* :meth:`DvcRecord.restore`: DVC's run-cache, so going back to an earlier parameter value
  checks out the earlier outputs instead of recomputing them;
* :meth:`DvcRecord.clear` removes the outputs before a run, as ``dvc repro`` does;
* :meth:`DvcRecord.commit` hashes deps and outs, moves the outs into DVC's cache, saves the
  run-cache entry and writes the instance's entry of ``dvc.lock``.

For a pool of workers (:mod:`flows.pool`), :meth:`DvcRecord.entry` and
:meth:`DvcRecord.write_entries` move ``dvc.lock`` entries between workspaces, and
:meth:`DvcRecord.pull` / :meth:`DvcRecord.push` move the outputs they name through the DVC remote.

Calls are serialised (one thread at a time, under DVC's repository lock, so a concurrent
``dvc`` command waits or fails cleanly), and ``dvc.lock`` is replaced atomically, so a flow
killed at any moment leaves a valid lock file.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from flows.lock_text import LockText

LOCK_FILE = "dvc.lock"
_LOCKS: dict[Path, threading.Lock] = {}  # one per workspace, shared by every DvcRecord of it
_LOCK_TEXTS: dict[Path, LockText] = {}  # likewise: dvc.lock's parsed data and entry texts


class MissingObject(RuntimeError):
    """An output a stage needs is in neither the local cache nor the remote."""


class DvcRecord:
    """Serialised access to one workspace's DVC project.

    ``overlay``: files (paths relative to the root) DVC reads with this text instead of the
    disk's, never writing them: a dry run asks DVC about another parameter file this way,
    leaving the workspace's ``params.yaml`` untouched (:func:`overlay_fs`).
    """

    def __init__(self, root: str | Path = ".", overlay: dict[str, bytes] | None = None):
        self.root = Path(root).resolve()
        self._lock = _LOCKS.setdefault(self.root, threading.Lock())
        self._lock_text = _LOCK_TEXTS.setdefault(self.root, LockText(self.root / LOCK_FILE))
        self._overlay = {str(self.root / k): v for k, v in (overlay or {}).items()}
        self.overlay_reads: set[str] = set()  # overlaid files DVC has read (relative paths)

    def _repo(self, overlay: dict | None = None):
        from dvc.repo import Repo

        overlay = {**(overlay or {}), **self._overlay}
        if not overlay:
            return Repo(str(self.root))
        repo = Repo(str(self.root), fs=overlay_fs(overlay, self.root, self.overlay_reads))
        jobs = repo.config["core"].get("checksum_jobs")
        if jobs:  # DVC applies it only to a filesystem it made itself
            repo.fs.hash_jobs = jobs
        return repo

    @contextmanager
    def _stage(self, ident: str) -> Iterator:
        """The instance's DVC stage, with DVC's repository lock held.

        DVC is shown a ``dvc.lock`` holding only this instance's entry (made when DVC opens
        the file, under its lock): judging or recording one stage needs no other entry, and
        parsing the whole file (0.3 s at 63 entries, growing with the DAG) was most of each
        call's cost. The real file is written by :meth:`_write_lock_entry`.
        """
        lock = None
        if (self.root / LOCK_FILE).is_file():
            lock = {str(self.root / LOCK_FILE): lambda: self._lock_text.excerpt(ident) or b""}
        with self._lock, self._repo(lock) as repo, repo.lock:
            stages = repo.stage.collect(ident)
            if len(stages) != 1:
                raise KeyError(f"{ident}: not a stage of {self.root / 'dvc.yaml'}")
            yield repo, stages[0]

    def command(self, ident: str) -> str:
        """The instance's command, as ``dvc.yaml`` interpolates it."""
        with self._stage(ident) as (_, stage):
            return stage.cmd

    def deps(self, ident: str) -> list[str]:
        """The instance's dependency paths, as ``dvc.yaml`` declares them."""
        with self._stage(ident) as (_, stage):
            return [d.def_path for d in stage.deps]

    def status(self, idents: list[str]) -> dict[str, bool]:
        """``changed`` for many instances, with one view of the repository."""
        with self._lock, self._repo() as repo, repo.lock:
            by_name = {s.addressing: s for s in repo.index.stages}
            return {i: bool(by_name[i].changed()) if i in by_name else True for i in idents}

    def prepare(self, ident: str, *, clear: bool = True) -> str:
        """Whether DVC would run the instance, restored from the run-cache if it can, with one
        reading of ``dvc.yaml`` and ``dvc.lock``.

        ``"up to date"`` or ``"restored"`` when there is nothing to run; otherwise the outputs are
        removed (unless ``clear`` is false) and the instance's command is returned. The flow
        serialises these calls, so a stage asks once instead of four times.
        """
        from dvc.stage.cache import RunCacheNotFoundError

        with self._stage(ident) as (repo, stage):
            if not stage.changed():
                return "up to date"
            try:
                repo.stage_cache.restore(stage)
            except RunCacheNotFoundError:
                if clear:
                    stage.remove_outs(ignore_remove=False, force=False)
                return stage.cmd
            self._save(stage)
            return "restored"

    def clear(self, ident: str) -> None:
        """Remove the instance's outputs before it runs (``dvc repro`` does the same)."""
        with self._stage(ident) as (_, stage):
            stage.remove_outs(ignore_remove=False, force=False)

    def commit(self, ident: str) -> None:
        """Cache the finished instance's outputs and write its ``dvc.lock`` entry."""
        with self._stage(ident) as (_, stage):
            self._save(stage)

    def _save(self, stage) -> None:
        stage.save(run_cache=True)
        stage.commit()
        self._write_lock_entry(stage)

    def _write_lock_entry(self, stage) -> None:
        """DVC's entry for the stage, in DVC's text, replacing the file at once."""
        from dvc.stage.serialize import to_lockfile

        self._lock_text.update(to_lockfile(stage))

    # -- a pool of workers: entries and outputs travel between workspaces ------------------------

    def entry(self, ident: str) -> dict | None:
        """The instance's entry of ``dvc.lock`` as DVC wrote it; None when it has none."""
        data = self._read_lock()
        return (data.get("stages") or {}).get(ident)

    def write_entries(self, entries: dict[str, dict]) -> None:
        """Put entries computed in another workspace into this ``dvc.lock`` (atomically)."""
        with self._lock:
            self._lock_text.update(entries)

    def _read_lock(self) -> dict:
        """``dvc.lock`` as plain data, parsed by DVC's own parser (:mod:`flows.lock_text`)."""
        return self._lock_text.read()

    def pull(self, paths: Iterable[str]) -> None:
        """Fetch outputs (paths relative to the root) from the remote and check them out.

        Raises MissingObject naming the first output whose object no cache or remote holds.
        """
        from dvc.exceptions import CheckoutError, DvcException
        from dvc.repo import Repo

        paths = sorted(set(paths))
        if not paths:
            return
        targets = [str(self.root / p) for p in paths]  # DVC reads targets against the cwd
        with self._lock, Repo(str(self.root)) as repo:  # fetch/checkout take DVC's lock
            with contextlib.suppress(DvcException):  # checkout names what is missing, one by one
                repo.fetch(targets=targets)
            try:
                repo.checkout(targets=targets, force=True)
            except CheckoutError as exc:
                raise MissingObject(self._missing_line(repo, paths, exc)) from None

    def _missing_line(self, repo, paths: list[str], exc) -> str:
        # DVC names failed outputs relative to the process's cwd
        failed = [os.path.relpath(os.path.abspath(p), self.root)
                  for p in getattr(exc, "target_infos", None) or []]  # fmt: skip
        name = failed[0] if failed else paths[0]
        md5 = None
        for entry in (self._read_lock().get("stages") or {}).values():
            for out in entry.get("outs") or []:
                if out.get("path") == name:
                    md5 = out.get("md5")
        remote = repo.config.get("core", {}).get("remote") or "(none configured)"
        what = f"{name} (md5 {md5})" if md5 else name
        more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
        return f"cannot pull {what}{more}: in neither the local DVC cache nor remote {remote!r}"

    def push(self, ident: str) -> None:
        """Push the instance's cached outputs to the default remote (a no-op for those there)."""
        from dvc.repo import Repo

        with self._lock, Repo(str(self.root)) as repo:  # push takes DVC's lock itself
            repo.push(targets=[f"{self.root / 'dvc.yaml'}:{ident}"])


def overlay_fs(files: dict, root: Path, reads: set[str]):
    """DVC's local filesystem, except that ``files`` (absolute paths) read as the given bytes
    (or what a callable given instead returns when the file is opened).

    DVC reads parameter files, ``dvc.yaml`` and ``dvc.lock`` through its repository's
    filesystem (``fs.open``); everything else (hashing deps and outs, its state database) is
    the workspace's own, so the answer costs what ``dvc status`` costs. Writing an overlaid
    file is refused. ``reads`` collects the overlaid files DVC opened (relative to ``root``),
    so a caller can tell that DVC really read them.
    """
    import io

    from dvc.fs import LocalFileSystem

    names = {os.path.basename(p) for p in files}
    real = {os.path.realpath(p): data for p, data in files.items()}

    class OverlayFileSystem(LocalFileSystem):
        def open(self, path, mode="r", **kwargs):
            key = os.path.realpath(path) if os.path.basename(path) in names else None
            if key not in real:
                return super().open(path, mode, **kwargs)
            if set(mode) & set("wax+"):
                raise PermissionError(f"{path}: read-only here (an overlaid file)")
            reads.add(os.path.relpath(key, os.path.realpath(root)))
            data = real[key]() if callable(real[key]) else real[key]
            if "b" in mode:
                return io.BytesIO(data)
            return io.StringIO(data.decode(kwargs.get("encoding") or "utf-8"))

    return OverlayFileSystem()
