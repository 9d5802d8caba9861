"""Backbones (the small ResNet in torch, timm's ResNets), MLPs and the backbone/head split."""

from pipeline.models.factory import build_model, load_model, save_model
from pipeline.models.split import SplitModel

__all__ = ["SplitModel", "build_model", "load_model", "save_model"]
