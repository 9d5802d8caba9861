"""Row gather/scatter for ``(B, d)`` tensors through ``index_select``/``index_copy_``.

Advanced indexing (``t[idx]``, ``t[idx] = v``, ``t[mask]``) on 2-D tensors goes through a kernel
that parallelizes even tiny copies; on a busy multi-threaded CPU each such call waited tens of
milliseconds for the thread pool, which dominated whole attacks. These two are cheap everywhere.
"""

from __future__ import annotations

import torch


def take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` of ``t`` (a long tensor of indices or a bool mask over the rows)."""
    if idx.dtype == torch.bool:
        idx = idx.nonzero().squeeze(1)
    return t.index_select(0, idx)


def put(t: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor) -> None:
    """Write ``rows`` into rows ``idx`` of ``t`` in place (``idx`` long, or a bool mask)."""
    if idx.dtype == torch.bool:
        idx = idx.nonzero().squeeze(1)
    t.index_copy_(0, idx, rows.to(t.dtype))
