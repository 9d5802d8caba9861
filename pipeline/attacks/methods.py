"""Several hard-label attacks on the same samples, for a fair comparison.

Every method gets the same inputs, seed and fallback pool, so each finds the same starting
points (the start phase is shared code and draws first from the seeded generator), and its own
full query budget; a :class:`~pipeline.attacks.oracle.LabelOracle` is reset between methods so
its counts audit one method at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from pipeline.attacks.boundary import AttackResult, AttackStatus
from pipeline.attacks.hsja import hop_skip_jump
from pipeline.attacks.oracle import LabelOracle
from pipeline.attacks.queries import Predict
from pipeline.attacks.tangent import tangent_attack

#: Attack methods by the name used in ``attack.methods``.
METHODS = {"tangent": tangent_attack, "hsja": hop_skip_jump}


def run_methods(
    predict: Predict,
    x: torch.Tensor,
    y: torch.Tensor,
    methods: list[str],
    progress: Callable[[str, AttackStatus], None] | None = None,
    **settings: Any,
) -> dict[str, AttackResult]:
    """Each method of ``methods`` (names of :data:`METHODS`) on ``x``, with the same
    ``settings`` (keyword arguments of the attack functions), in the order given.
    ``progress(name, status)`` follows each method (``run_boundary_attack(progress=)``)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown attack methods {unknown}; allowed: {', '.join(METHODS)}")
    results = {}
    for name in methods:
        if isinstance(predict, LabelOracle):
            predict.reset_counts()
        report = None if progress is None else partial(progress, name)
        result = METHODS[name](predict, x, y, progress=report, **settings)
        if isinstance(predict, LabelOracle) and not torch.equal(
            predict.counts(len(x)).to(result.queries.device), result.queries
        ):
            raise RuntimeError(f"{name}: the oracle and the attack disagree on the query counts")
        results[name] = result
    return results
