"""Per-stage start-up: a stage command run cold (a fresh interpreter importing torch, torchvision
and timm) against the same command started warm (forked by pipeline.core.warm's server).

    python benchmarks/stage_start.py [--repeats 5]

Works in a fresh copy of the committed tree. Runs ``prepare`` and a 7-epoch ``pretrain`` of
the default DAG, alternating cold and warm runs so both see the same machine load, and prints
the median wall time of each, the ratio warm / cold and the time saved over the default DAG's
stage count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "prepare": ["prepare", "--dataset", "digits_0to4"],
    "pretrain (7 epochs)": ["pretrain", "--variant", "none", "--set", "pretrain.train.epochs=7"],
}


def run(root: Path, argv: list[str], env: dict) -> float:
    shutil.rmtree(root / "artifacts" / "checkpoints", ignore_errors=True)  # no resume: real work
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *argv], cwd=root, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    ns = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="stage-start-"))
    try:
        root = tmp / "repo"
        root.mkdir()
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True)
        subprocess.run(["tar", "-x"], cwd=root, input=archive.stdout, check=True)
        base = {**os.environ, "PYTHONPATH": str(root), "PIPELINE_WARM_DIR": str(tmp / "warm")}
        cold = {**base, "PIPELINE_WARM": "0"}
        warm = {**base, "PIPELINE_WARM": "1", "PIPELINE_WARM_IDLE": "60"}
        run(root, COMMANDS["prepare"], cold)  # the pretrain command reads its output
        run(root, COMMANDS["prepare"], warm)  # starts the server in the background
        deadline = time.monotonic() + 120
        while not list((tmp / "warm").glob("*.sock")) and time.monotonic() < deadline:
            time.sleep(0.2)
        saved = []
        for name, argv in COMMANDS.items():
            times = {"cold": [], "warm": []}
            for _ in range(ns.repeats):
                times["cold"].append(run(root, argv, cold))
                times["warm"].append(run(root, argv, warm))
            c, w = statistics.median(times["cold"]), statistics.median(times["warm"])
            saved.append(c - w)
            print(f"{name:<20} cold {c:6.2f} s   warm {w:6.2f} s   warm / cold {w / c:.3f}")
        served = sum(len(p.read_text().splitlines()) for p in (tmp / "warm").glob("*.log"))
        print(f"warm runs served by the server: {served} of {ns.repeats * len(COMMANDS)}")
        print(f"saved per stage (median over commands): {statistics.median(saved):.2f} s; "
              f"over the default DAG's 66 stages: {66 * statistics.median(saved):.0f} s")  # fmt: skip
        print(f"cores: {os.cpu_count()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
