"""Subprocess for test_stream_memory: one training epoch over a shard set, then peak RSS as JSON.

The peak is the largest resident set seen during the epoch (read from ``/proc`` after every
batch), not ``ru_maxrss``: a transient peak while torch is imported would otherwise hide what the
epoch itself holds.

``python -m tests.data.stream_probe SHARD_DIR stream|memory``: ``stream`` reads the set from disk
(``ShardDataset``, what ``data.stream`` selects), ``memory`` holds every encoded sample
(``InMemoryShards``, the default for small sets) as the control.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.data.loaders import EpochBatches, SeededTransform
from pipeline.data.shards import InMemoryShards, ShardDataset
from pipeline.data.transforms import plain_tensor


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(shard_dir: str, mode: str) -> None:
    raw = (
        ShardDataset(shard_dir, shuffle_buffer=64)
        if mode == "stream"
        else InMemoryShards(shard_dir)
    )
    batches = EpochBatches(SeededTransform(raw, plain_tensor(3), seed=0), 10, seed=0)
    seen, checksum, peak = 0, 0.0, _rss_kb()
    for x, _ in batches.epoch(0):
        seen += len(x)
        checksum += float(x.sum())
        peak = max(peak, _rss_kb())
    print(json.dumps({"seen": seen, "checksum": checksum, "maxrss_kb": peak}))


if __name__ == "__main__":
    main(*sys.argv[1:])
