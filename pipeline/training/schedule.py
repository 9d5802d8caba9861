"""Learning-rate schedules as a per-step multiplier of each group's base rate."""

from __future__ import annotations

import math
from collections.abc import Callable


def lr_multiplier(spec, epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    """Map the global step to a factor; the cosine period defaults to the run's own length.

    (A fixed ``T_max`` independent of the run's length is a known trap: a shorter run would stop
    high on the curve, a longer one would restart it; ``t_max`` overrides it deliberately.)
    """
    steps_per_epoch = max(1, steps_per_epoch)
    period = (spec.t_max or epochs) * steps_per_epoch
    warmup = spec.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if spec.kind == "constant":
            return 1.0
        if spec.kind == "step":
            return spec.gamma ** ((step // steps_per_epoch) // spec.step_size)
        t = min(step - warmup, period) / max(1, period - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    return factor
