"""Cold start of each stage command against a bare ``import torch``, each in a fresh interpreter.

    python benchmarks/stage_start.py [--repeats 5]

For every stage of the registry, times ``python -m pipeline <stage> --help`` (imports the
stage's module and everything it imports at module level, parses, exits) and, alternating with
it so both see the same machine load, ``python -c "import torch"`` and ``python -c pass``.
Prints the median wall time of each, the ratio stage / torch (1.0: the stage costs what torch
costs; more: it imports more than it needs at start) and which heavy optional libraries the
stage's process had imported when it exited.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.stages.registry import COMMANDS  # noqa: E402  (no torch: names only)

# Libraries a stage should import only when what it runs needs them.
HEAVY = ("torch", "torchvision", "timm", "sklearn", "webdataset", "lightly", "matplotlib", "scipy")
# Runs the CLI as ``python -m pipeline`` would, then names the heavy modules it left imported.
PROBE = (
    "import runpy, sys\n"
    "sys.argv = ['pipeline', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('pipeline', run_name='__main__', alter_sys=True)\n"
    "except SystemExit:\n"
    "    pass\n"
    f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
)


def timed(argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return time.perf_counter() - t0


def imported(stage: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, stage, "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("stages", nargs="*", default=list(COMMANDS), help="default: all")
    ns = parser.parse_args()
    py = sys.executable
    bare = {"python -c pass": [py, "-c", "pass"], "import torch": [py, "-c", "import torch"]}
    times: dict[str, list[float]] = {name: [] for name in [*bare, *ns.stages]}
    timed(bare["import torch"])  # fills the file cache; not counted
    for _ in range(ns.repeats):  # interleaved: every command sees the same load over the run
        for name, argv in bare.items():
            times[name].append(timed(argv))
        for stage in ns.stages:
            times[stage].append(timed([py, "-m", "pipeline", stage, "--help"]))
    med = {name: statistics.median(t) for name, t in times.items()}
    torch_s = med["import torch"]
    print(f"{'command':<16} {'median s':>9} {'/ torch':>8}  heavy modules imported")
    for name in bare:
        print(f"{name:<16} {med[name]:9.2f} {med[name] / torch_s:8.2f}")
    for stage in ns.stages:
        label = f"{stage} --help"
        print(f"{label:<16} {med[stage]:9.2f} {med[stage] / torch_s:8.2f}  {imported(stage)}")
    print(f"repeats: {ns.repeats}, cores: {os.cpu_count()}, python: {py}")


if __name__ == "__main__":
    main()
