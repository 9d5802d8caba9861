"""Datasets for the pipeline: sources on local disk, transforms, webdataset shards, loaders.

Every source returns a ``LabeledDataset`` of ``(PIL.Image, int)`` pairs; nothing downloads.
"""

from pipeline.data.base import ArrayDataset, FileListDataset, LabeledDataset, load_image
from pipeline.data.loaders import (
    EpochSampler,
    SeededTransform,
    load_tensors,
    make_loader,
    mix_seed,
)
from pipeline.data.shard_writer import write_shards
from pipeline.data.shards import InMemoryShards, ShardDataset, open_shards, read_meta
from pipeline.data.sources import SOURCES, available_sources, open_source, source_options
from pipeline.data.transforms import (
    AUGMENTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_normalize,
    build_transform,
    default_stats,
    denormalize,
    plain_tensor,
    to_pixel_tensor,
)

__all__ = [
    "AUGMENTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SOURCES",
    "ArrayDataset",
    "EpochSampler",
    "FileListDataset",
    "InMemoryShards",
    "LabeledDataset",
    "SeededTransform",
    "ShardDataset",
    "available_sources",
    "build_normalize",
    "build_transform",
    "default_stats",
    "denormalize",
    "load_image",
    "load_tensors",
    "make_loader",
    "mix_seed",
    "open_shards",
    "open_source",
    "plain_tensor",
    "read_meta",
    "source_options",
    "to_pixel_tensor",
    "write_shards",
]
