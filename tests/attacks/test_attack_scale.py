"""Peak host memory of the attack stage's core does not grow with the size of the test split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _probe(*args: str) -> dict:
    # A fixed mmap threshold makes glibc return freed batches to the OS at once, so peak RSS
    # reflects memory held rather than how the allocator's dynamic threshold happened to adapt.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run(
        [sys.executable, "-m", "tests.attacks.scale_probe", *args],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=600, env=env,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_rss_is_flat_from_1x_to_20x_the_split_and_distances_agree():
    small, large = _probe("1"), _probe("20")
    print(f"peak RSS 1x {small['maxrss_kb'] / 1024:.0f} MB, 20x {large['maxrss_kb'] / 1024:.0f} MB")
    assert large["correct"] > small["correct"]  # the large split really was predicted
    assert large["maxrss_kb"] <= 1.10 * small["maxrss_kb"]
    assert large["samples"] == small["samples"]
    assert large["distances"] == small["distances"]
    # Control: holding the whole 20x split (what the stage used to do) is clearly visible.
    naive = _probe("20", "--load-all")
    print(f"peak RSS 20x holding the whole split: {naive['maxrss_kb'] / 1024:.0f} MB")
    assert naive["maxrss_kb"] > 1.3 * small["maxrss_kb"]
    assert naive["distances"] == small["distances"]
