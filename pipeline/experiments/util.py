"""Small helpers shared by the experiments, the summary stage included.

torch is imported only where threads are set, so a command that needs only :func:`cpu_seconds`
(the summary) does not load it.
"""

from __future__ import annotations

import resource


def set_threads(threads: int) -> None:
    import torch  # here, so that importing this module (summary does) imports no torch

    torch.set_num_threads(threads)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (imports included), for the cost report."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 1)
