"""The label oracle as an attack sees it: "is this row adversarial for its sample?", counted.

Counting lives here, in one place, so every row the model answers is attributed to the sample
that asked (``owners``) and no code path of any attack can forget to count.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Predict = Callable[..., torch.Tensor]

#: Budget of a sample without a query limit: large, yet far from overflowing when added to.
NO_BUDGET = torch.iinfo(torch.long).max // 4


class AdversarialQueries:
    """Wraps ``predict`` for a batch with labels ``y`` and per-sample input ``shape``.

    ``predict`` gets ``owners=`` (the sample index of each row) when its ``takes_owners``
    attribute is true, so an independent counter such as
    :class:`~pipeline.attacks.oracle.LabelOracle` can audit ``count``.
    """

    def __init__(self, predict: Predict, y: torch.Tensor, shape: tuple[int, ...]):
        self.predict = predict
        self.takes_owners = bool(getattr(predict, "takes_owners", False))
        self.y = y
        self.shape = shape
        self.count = torch.zeros_like(y)

    def labels(self, rows: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        inputs = rows.reshape(rows.shape[0], *self.shape)
        out = self.predict(inputs, owners=owners) if self.takes_owners else self.predict(inputs)
        out = torch.as_tensor(out).to(rows.device).long().reshape(-1)
        if out.shape[0] != rows.shape[0]:
            raise ValueError(f"predict returned {out.shape[0]} labels for {rows.shape[0]} inputs")
        self.count.index_add_(0, owners, torch.ones_like(owners))
        return out

    def adversarial(self, rows: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        return self.labels(rows, owners) != self.y[owners]


def query_budget(
    max_queries: int | torch.Tensor | None, batch: int, device: torch.device
) -> torch.Tensor:
    """Per-sample query budget as a long tensor (:data:`NO_BUDGET` when there is none)."""
    if max_queries is None:
        return torch.full((batch,), NO_BUDGET, dtype=torch.long, device=device)
    b = torch.as_tensor(max_queries, device=device).long()
    if b.dim() == 0:
        b = b.expand(batch)
    if b.shape != (batch,) or bool((b < 0).any()):
        raise ValueError("max_queries must be a non-negative int or a (B,) tensor")
    return b.clone()
