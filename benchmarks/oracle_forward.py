"""The attack oracle's forward pass: plain eval model against BatchNorm folded into the convs,
channels-last, and every core, on the default DAG's model (small ResNet, 16 px, one channel).

    python benchmarks/oracle_forward.py [--batch 4096] [--repeats 7]

An attack stage spends nearly all its time in these forward passes. Variants are timed
interleaved (so machine noise hits all alike); medians and ratios to the plain one-thread pass
are printed, and whether each variant's labels equal the plain model's. Then the folded,
channels-last model on one thread at several chunk sizes (``attack.chunk_size``): time per
input, since a chunk that fits the CPU's cache is faster per input than a larger one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from pipeline.core.config import ModelSpec
from pipeline.models import build_model
from pipeline.models.fused import fuse_batchnorm


def trained_like(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096, help="the oracle's chunk size")
    parser.add_argument("--repeats", type=int, default=7)
    ns = parser.parse_args()
    torch.manual_seed(0)
    spec = ModelSpec(arch="small_resnet", widths=[8, 16, 32, 64], blocks=[1, 1, 1, 1])
    model = trained_like(build_model(spec, in_chans=1, num_classes=5, image_size=16))
    x = torch.rand(ns.batch, 1, 16, 16)
    fused = fuse_batchnorm(model, x[:8])
    fused_cl = fuse_batchnorm(model, x[:8]).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    variants = {
        "plain, 1 thread": (model, x, 1),
        "BN folded, 1 thread": (fused, x, 1),
        "BN folded + channels-last, 1 thread": (fused_cl, x_cl, 1),
        f"BN folded + channels-last, {cores} threads": (fused_cl, x_cl, cores),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    labels = {}
    with torch.no_grad():
        for _ in range(ns.repeats):
            for name, (net, inputs, threads) in variants.items():
                torch.set_num_threads(threads)
                net(inputs[:64])
                t0 = time.perf_counter()
                out = net(inputs)
                times[name].append(time.perf_counter() - t0)
                labels[name] = out.argmax(1)
    base = statistics.median(times["plain, 1 thread"])
    for name, ts in times.items():
        same = torch.equal(labels[name], labels["plain, 1 thread"])
        print(f"{name:<42} {statistics.median(ts) * 1e3:8.1f} ms per {ns.batch}   "
              f"speed-up {base / statistics.median(ts):5.2f}x   same labels: {same}")  # fmt: skip
    torch.set_num_threads(1)
    per_input = {}
    with torch.no_grad():
        for _ in range(ns.repeats):
            for chunk in (256, 1024, 4096):
                t0 = time.perf_counter()
                for part in x_cl.split(chunk):
                    fused_cl(part)
                per_input.setdefault(chunk, []).append((time.perf_counter() - t0) / len(x_cl))
    for chunk, ts in per_input.items():
        print(f"chunk {chunk:>5}: {statistics.median(ts) * 1e6:6.1f} us per input (1 thread)")


if __name__ == "__main__":
    main()
