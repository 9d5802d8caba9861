"""torch.distributed helpers: a stage launched under torchrun joins the process group here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when torchrun set WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        # On CUDA, NCCL for GPU tensors and gloo for CPU ones (the loop's metric sums and the
        # checkpoint broadcast are CPU objects; NCCL alone rejects them).
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # Rank 0 evaluates and writes diagnostics alone while the others wait in the next
        # collective; allow that longer than NCCL's 10-minute default.
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=60))
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world
    return value


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Make every rank start from rank 0's buffers (e.g. power-iteration vectors)."""
    if info.enabled:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)
        for p in module.parameters():
            dist.broadcast(p.data, src=0)


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank (pickled; e.g. the checkpoint only rank 0 has read)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
