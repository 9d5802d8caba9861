"""Thread count for the regularizers' own CPU work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_threaded(device: torch.device) -> Iterator[None]:
    """Run CPU work on one intra-op thread; no effect on other devices.

    The regularizers' CPU work is many short, memory-bound products and small SVDs. A second
    thread gains little there, while an OpenMP team on a shared machine stalls at every barrier
    whenever another process holds a core. Measured on a 2-core machine shared with other jobs:
    17-40 ms instead of 1.2 ms for one 512×4608 product, 11 s instead of 0.9 s for the SVDs of
    ten complex 512×512 blocks. Switching the thread count is free; it is restored on exit.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
