"""Subprocess for test_stream_memory: one training epoch over a shard set, then peak RSS as JSON.

``python -m tests.data.stream_probe SHARD_DIR stream|memory``: ``stream`` reads the set from disk
(``ShardDataset``, what ``data.stream`` selects), ``memory`` holds every encoded sample
(``InMemoryShards``, the default for small sets) as the control.
"""

from __future__ import annotations

import json
import resource
import sys

from pipeline.data.loaders import EpochBatches, SeededTransform
from pipeline.data.shards import InMemoryShards, ShardDataset
from pipeline.data.transforms import plain_tensor


def main(shard_dir: str, mode: str) -> None:
    raw = (
        ShardDataset(shard_dir, shuffle_buffer=64)
        if mode == "stream"
        else InMemoryShards(shard_dir)
    )
    batches = EpochBatches(SeededTransform(raw, plain_tensor(3), seed=0), 10, seed=0)
    seen, checksum = 0, 0.0
    for x, _ in batches.epoch(0):
        seen += len(x)
        checksum += float(x.sum())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seen": seen, "checksum": checksum, "maxrss_kb": peak}))


if __name__ == "__main__":
    main(*sys.argv[1:])
