"""Peak host memory of a streamed training epoch does not grow with the size of the shard set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import write_shards
from pipeline.data.base import LabeledDataset

ROOT = Path(__file__).resolve().parents[2]
SIZE = 128  # px of random noise: PNG barely compresses it, about 49 KB a sample


class Noise(LabeledDataset):
    """``n`` random RGB images made on demand (the parent never holds the set either)."""

    def __init__(self, n: int):
        self.name, self.classes, self.channels = "noise", ["a", "b"], 3
        self.targets = [i % 2 for i in range(n)]

    def __getitem__(self, i: int):
        rng = np.random.default_rng(i)
        return Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)), i % 2


def _probe(shard_dir: Path, mode: str) -> dict:
    # A fixed mmap threshold makes glibc return freed batches to the OS at once, so peak RSS
    # reflects memory held rather than how the allocator's dynamic threshold happened to adapt.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "tests.data.stream_probe", str(shard_dir), mode],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=600, env=env,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_streamed_epoch_peak_rss_is_flat_from_1x_to_10x_the_set(tmp_path: Path):
    small, large = tmp_path / "small", tmp_path / "large"
    write_shards(Noise(200), small, maxcount=100)
    write_shards(Noise(2000), large, maxcount=100)  # about 98 MB of encoded samples
    s, big = _probe(small, "stream"), _probe(large, "stream")
    print(
        f"streamed peak RSS 1x {s['maxrss_kb'] / 1024:.0f} MB, 10x {big['maxrss_kb'] / 1024:.0f} MB"
    )
    assert (s["seen"], big["seen"]) == (200, 2000)  # batches of 10: every sample was read
    assert big["maxrss_kb"] <= 1.10 * s["maxrss_kb"]
    # Control: holding the encoded set in memory (the path for small sets) is clearly visible.
    held = _probe(large, "memory")
    print(f"in-memory peak RSS 10x {held['maxrss_kb'] / 1024:.0f} MB")
    assert held["maxrss_kb"] > big["maxrss_kb"] + 60 * 1024
    assert held["checksum"] == pytest.approx(big["checksum"], rel=1e-6)  # same samples
