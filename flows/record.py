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

Calls are serialised (one thread at a time, under DVC's repository lock, so a concurrent
``dvc`` command waits or fails cleanly), and ``dvc.lock`` is replaced atomically, so a flow
killed at any moment leaves a valid lock file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.core.io import atomic_write_text

LOCK_FILE = "dvc.lock"


class DvcRecord:
    """Serialised access to one workspace's DVC project."""

    def __init__(self, root: str | Path = "."):
        self.root = Path(root).resolve()
        self._lock = threading.Lock()

    @contextmanager
    def _stage(self, ident: str) -> Iterator:
        from dvc.repo import Repo

        with self._lock, Repo(str(self.root)) as repo, repo.lock:
            stages = repo.stage.collect(ident)
            if len(stages) != 1:
                raise KeyError(f"{ident}: not a stage of {self.root / 'dvc.yaml'}")
            yield repo, stages[0]

    def command(self, ident: str) -> str:
        """The instance's command, as ``dvc.yaml`` interpolates it."""
        with self._stage(ident) as (_, stage):
            return stage.cmd

    def changed(self, ident: str) -> bool:
        """DVC's verdict: would ``dvc repro`` run this instance now?"""
        with self._stage(ident) as (_, stage):
            return bool(stage.changed())

    def status(self, idents: list[str]) -> dict[str, bool]:
        """``changed`` for many instances, with one view of the repository."""
        from dvc.repo import Repo

        with self._lock, Repo(str(self.root)) as repo, repo.lock:
            by_name = {s.addressing: s for s in repo.index.stages}
            return {i: bool(by_name[i].changed()) if i in by_name else True for i in idents}

    def restore(self, ident: str) -> bool:
        """Check the outputs out of DVC's run-cache and record them; False when not cached."""
        from dvc.stage.cache import RunCacheNotFoundError

        with self._stage(ident) as (repo, stage):
            try:
                repo.stage_cache.restore(stage)
            except RunCacheNotFoundError:
                return False
            self._save(stage)
            return True

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
        """DVC's entry for the stage, written with DVC's serialiser, replacing the file at once."""
        from dvc.stage.serialize import to_lockfile
        from dvc.utils.serialize import dumps_yaml, parse_yaml_for_update

        path = self.root / LOCK_FILE
        data = parse_yaml_for_update(path.read_text(), str(path)) if path.is_file() else None
        if not data:
            data = {"schema": "2.0", "stages": {}}
        data.setdefault("stages", {})
        data["stages"].update(to_lockfile(stage))
        atomic_write_text(path, dumps_yaml(data))
