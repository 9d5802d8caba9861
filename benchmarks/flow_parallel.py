"""Wall time of the default DAG from clean: ``dvc repro`` (one stage at a time) against the
Prefect flow (independent stages at once), side by side in one run on the same machine.

    python benchmarks/flow_parallel.py [--params params.yaml] [--max-parallel N] [--order repro,flow]

Each run gets its own fresh copy of the committed tree (``git archive HEAD``) with an empty DVC
cache, so neither can reuse the other's results. The flow's time includes starting Prefect's
temporary server, as a user without a server would see it; the line ``flow work`` subtracts
it (measured from the flow run's own start). Prints both wall times and the ratio flow / repro.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIT = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}


def fresh_copy(root: Path, params: Path | None) -> Path:
    """The committed tree as a new git repository, with an empty DVC cache."""
    root.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x"], cwd=root, input=archive.stdout, check=True)
    if params is not None:
        shutil.copy(params, root / "params.yaml")
    env = {**os.environ, **GIT}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return root


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": str(cwd),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    t0 = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}); see {log}")
    return seconds


def flow_start_offset(log: Path) -> float:
    """Seconds from the first log line to the flow run's first task (server start-up)."""
    stamps = [m for m in re.finditer(r"^(\d\d):(\d\d):(\d\d)\.(\d+) \|", log.read_text(), re.M)]
    first_task = re.search(
        r"^(\d\d):(\d\d):(\d\d)\.(\d+) \| INFO    \| Task run", log.read_text(), re.M
    )
    if not stamps or not first_task:
        return 0.0

    def sec(m) -> float:
        return int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) + float("0." + m[4])

    return max(0.0, sec(first_task) - sec(stamps[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=None, help="params file (default: HEAD's)")
    parser.add_argument("--max-parallel", type=int, default=None)
    parser.add_argument("--order", default="repro,flow", help="which runs first")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    ns = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flow-parallel-"))
    times: dict[str, float] = {}
    try:
        for name in ns.order.split(","):
            root = fresh_copy(tmp / name, ns.params)
            if name == "repro":
                cmd = [sys.executable, "-m", "dvc", "repro"]
            else:
                cmd = [sys.executable, "-m", "flows.transfer", "--no-experiment"]
                if ns.max_parallel:
                    cmd += ["--max-parallel", str(ns.max_parallel)]
            log = tmp / f"{name}.log"
            times[name] = timed(cmd, root, log)
            print(f"{name:<6} {times[name]:8.1f} s   ({' '.join(cmd[1:])})", flush=True)
            if name == "flow":
                start = flow_start_offset(log)
                times["flow work"] = times["flow"] - start
                print(
                    f"flow work {times['flow work']:5.1f} s   (without {start:.1f} s of server start)"
                )
        print(f"cores: {os.cpu_count()}")
        if {"flow", "repro"} <= set(times):
            print(f"ratio flow / repro: {times['flow'] / times['repro']:.3f}")
            print(f"ratio flow work / repro: {times['flow work'] / times['repro']:.3f}")
    finally:
        if not ns.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


if __name__ == "__main__":
    main()
