"""One torch thread for these tests: the models are tiny, and with two threads on a loaded
two-core machine each small op waits for the other thread (tens of times slower)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
