"""The classifier ``F = softmax ∘ f ∘ Φ`` as a module with an explicit backbone/head split."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SplitModel(nn.Module):
    """``backbone`` (Φ) maps inputs to a ``(batch, feature_dim)`` representation; ``head`` (f) is linear.

    Inputs are always pixel tensors in ``[0, 1]``; the per-channel normalization lives in the
    model (buffers ``input_mean``/``input_std``), so the attack, the readout and training all
    see the same function of pixels. Regularizers that act on "feature layers" walk
    ``backbone`` only; the head is a separate attribute so it can be replaced for a new target.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_classes: int,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
    ):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, num_classes)
        self.register_buffer("input_mean", torch.tensor(list(mean)).view(1, -1, 1, 1))
        self.register_buffer("input_std", torch.tensor(list(std)).view(1, -1, 1, 1))

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def replace_head(self, num_classes: int) -> None:
        """A fresh head for a new target; callers must build the optimizer *after* this."""
        device = self.head.weight.device
        self.head = nn.Linear(self.feature_dim, num_classes).to(device)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return (x - self.input_mean) / self.input_std
        return x  # flat inputs (MLPs on toy data) are used as they are

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """Φ(x): the pooled `(batch, feature_dim)` representation the head reads (not timm's
        unpooled ``forward_features`` feature map)."""
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.representation(x))
