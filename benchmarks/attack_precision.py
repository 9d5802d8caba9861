"""Oracle precision: mean adversarial distance with an fp32 and a bf16 (or fp16) label oracle.

    python benchmarks/attack_precision.py                    # 32 digits, 5000 queries, CPU
    python benchmarks/attack_precision.py --samples 16 --queries 2000 --other fp16

A small conv net is trained for a moment on the embedded digits (RGB, 16 px). The attacked samples
are held-out digits that both oracles classify correctly, so both attack the same samples from
the same seed; each method runs with the same per-sample query budget. Reported per method: the
mean distance under each precision, their relative difference, the mean per-sample relative
difference, and the wall time of each (autocast on CPU is often slower, not faster).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from pipeline.attacks import LabelOracle
from pipeline.attacks.methods import METHODS


def digits(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x.expand(-1, 3, -1, -1).contiguous(), torch.tensor(labels)


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--queries", type=int, default=5000, help="per-sample budget of each method")
    p.add_argument("--other", default="bf16", choices=["bf16", "fp16"])
    p.add_argument("--methods", default="tangent,hsja")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = digits(16)
    perm = torch.randperm(len(x))
    train, test = perm[:1200], perm[1200:]
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        for idx in train.split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    oracles = {
        name: LabelOracle(model, chunk_size=512, precision=name) for name in ("fp32", args.other)
    }
    correct = torch.ones(len(test), dtype=torch.bool)
    for oracle in oracles.values():
        correct &= oracle(x[test]) == y[test]
        oracle.reset_counts()
    chosen = test[correct][: args.samples]
    xs, ys = x[chosen], y[chosen]
    print(
        f"cpu, torch {torch.__version__}, {len(chosen)} samples correct under both precisions "
        f"({int(correct.sum())}/{len(test)}), {args.queries} queries per sample"
    )
    print(f"{'method':<9}{'fp32':>9}{args.other:>9}{'rel diff':>10}{'per-sample':>12}"
          f"{'fp32 s':>9}{args.other + ' s':>9}")  # fmt: skip
    for method in args.methods.split(","):
        dist, secs = {}, {}
        for name, oracle in oracles.items():
            oracle.reset_counts()
            t0 = time.perf_counter()
            res = METHODS[method](
                oracle, xs, ys, iterations=10_000, max_queries=args.queries, seed=0
            )
            secs[name] = time.perf_counter() - t0
            assert bool(res.success.all())
            dist[name] = res.distances.double()
        a, b = dist["fp32"], dist[args.other]
        rel = float(b.mean() / a.mean() - 1)
        per = float(((b - a).abs() / a).mean())
        print(
            f"{method:<9}{float(a.mean()):>9.4f}{float(b.mean()):>9.4f}{rel:>+10.2%}{per:>12.2%}"
            f"{secs['fp32']:>9.1f}{secs[args.other]:>9.1f}"
        )


if __name__ == "__main__":
    main()
