"""Self-supervised objectives (SimCLR, Barlow Twins) from lightly, as TrainModules for ``fit``.

The projection head lives in the TrainModule, not in the model's backbone: regularizers walk
``model.backbone`` only, so the projector is never regularized, and it is discarded after
pretraining like a readout. The model's classification head is frozen and unused.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.training.loop import StepOutput, TrainModule


class TwoViews:
    """Apply a lightly multi-view transform and stack the two views: ``(2, C, H, W)``."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image) -> torch.Tensor:
        views = self.transform(image)
        return torch.stack(views[:2])


def view_transform(method: str, image_size: int, channels: int, aug) -> TwoViews:
    """lightly's SimCLR views, or BYOL's two asymmetric views for Barlow Twins (as its paper).

    Normalization stays in the model (inputs are [0, 1] pixels everywhere), so lightly's own
    normalization is switched off. Colour jitter and grayscale are skipped for 1-channel data.
    """
    from lightly.transforms import (
        BYOLTransform,
        BYOLView1Transform,
        BYOLView2Transform,
        SimCLRTransform,
    )

    color = channels == 3
    common = {
        "input_size": image_size,
        "cj_prob": aug.cj_prob if color else 0.0,
        "min_scale": aug.min_scale,
        "random_gray_scale": aug.gray_scale if color else 0.0,
        "hf_prob": aug.hf_prob,
        "normalize": None,
    }
    if method == "simclr":
        return TwoViews(SimCLRTransform(gaussian_blur=aug.gaussian_blur, **common))
    if method == "barlow_twins":
        return TwoViews(
            BYOLTransform(
                view_1_transform=BYOLView1Transform(gaussian_blur=aug.gaussian_blur, **common),
                view_2_transform=BYOLView2Transform(
                    gaussian_blur=aug.gaussian_blur * 0.1,
                    solarization_prob=0.2 if color else 0.0,
                    **common,
                ),
            )
        )
    raise ValueError(f"unknown SSL method {method!r}")


class SSLModule(TrainModule):
    """Backbone → projector → lightly loss on two views of each image."""

    def __init__(self, model: nn.Module, method: str, spec, distributed: bool = False):
        super().__init__(model)
        from lightly.loss import BarlowTwinsLoss, NTXentLoss
        from lightly.models.modules import BarlowTwinsProjectionHead, SimCLRProjectionHead

        model.head.requires_grad_(False)  # labels are never used in SSL
        dim = model.feature_dim
        if method == "simclr":
            self.projector = SimCLRProjectionHead(
                dim, spec.simclr.hidden_dim, spec.simclr.projection_dim
            )
            self.criterion = NTXentLoss(
                temperature=spec.simclr.temperature, gather_distributed=distributed
            )
        elif method == "barlow_twins":
            bt = spec.barlow_twins
            self.projector = BarlowTwinsProjectionHead(dim, bt.hidden_dim, bt.projection_dim)
            self.criterion = BarlowTwinsLoss(
                lambda_param=bt.lambda_offdiag, gather_distributed=distributed
            )
        else:
            raise ValueError(f"unknown SSL method {method!r}")

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> StepOutput:
        batch = inputs.shape[0]
        both = (
            inputs.flatten(0, 1) if inputs.dim() == 5 else inputs
        )  # (2B, C, H, W), views interleaved
        features = self.model.representation(both)
        z = self.projector(features)
        z = z.view(batch, 2, -1)
        loss = self.criterion(z[:, 0], z[:, 1])
        return StepOutput(loss=loss, features=features.view(batch, 2, -1)[:, 0])
