"""One stage instance run in a worker's clone, as the flow that sent it asked.

Check that the clone is at the flow's commit and holds the flow's ``params.yaml``; put the
``dvc.lock`` entries of the instance's upstream instances into the clone's ``dvc.lock`` and pull
exactly the outputs of them that it reads; run the command ``dvc.yaml`` declares; record the
outputs in the clone's DVC cache and push them to the remote. The new ``dvc.lock`` entry is what
the worker sends back (:mod:`flows.worker`).
"""

from __future__ import annotations

from pathlib import Path

from flows.launch import child_env, run_streaming, stage_argv
from flows.protocol import git_head
from flows.record import DvcRecord, MissingObject
from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_write_text


def needed_outputs(deps: list[str], upstream: dict[str, dict]) -> list[str]:
    """Outputs of the upstream entries that the instance reads: a dep, inside one, or holding one."""
    needed = []
    for entry in upstream.values():
        for out in entry.get("outs") or []:
            path = out["path"]
            if any(d == path or d.startswith(path + "/") or path.startswith(d + "/") for d in deps):
                needed.append(path)
    return needed


def run_here(
    root: Path,
    ident: str,
    upstream: dict[str, dict],
    params_text: str,
    commit: str,
    devices: list[int] | None,
    log,
) -> dict:
    """Pull what ``ident`` reads, run it, cache and push its outputs; its new lock entry."""
    head = git_head(root)
    if head != commit:
        raise ConfigError(
            f"worker clone {root} is at commit {head[:12]}, the flow at {commit[:12]}: "
            f"run `git fetch && git checkout {commit[:12]}` there"
        )
    params = root / "params.yaml"
    if not params.is_file() or params.read_text() != params_text:
        atomic_write_text(params, params_text)
    record = DvcRecord(root)
    record.write_entries(upstream)
    deps = record.deps(ident)
    pulled = needed_outputs(deps, upstream)
    log.info("%s: pulling %d upstream output(s) from the DVC remote", ident, len(pulled))
    record.pull(pulled)
    missing = [d for d in deps if not (root / d).exists()]
    if missing:
        record.pull(missing)  # data tracked by a .dvc file, if that is what they are
        missing = [d for d in missing if not (root / d).exists()]
    if missing:
        raise MissingObject(f"cannot pull {missing[0]}: no upstream stage or .dvc file provides it")
    record.clear(ident)
    argv = stage_argv(record.command(ident))
    env = child_env(devices)
    env.update({"DVC_ROOT": str(root), "DVC_STAGE": ident})
    log.info("%s: %s", ident, " ".join(argv[1:]))
    run_streaming(argv, env, log, ident, cwd=str(root))
    record.commit(ident)
    record.push(ident)
    return record.entry(ident)
