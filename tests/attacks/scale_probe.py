"""Subprocess for test_attack_scale: the attack stage's library core on a test split of
``factor`` times the base size; prints peak RSS and the distances as JSON.

Run as ``python -m tests.attacks.scale_probe FACTOR [--load-all]``. Item ``i`` of the split is
generated on demand (the first ``BASE`` are upsampled digits, the rest deterministic noise images),
so the split itself costs no memory; ``--load-all`` stacks the whole split first, the naive
implementation, as a control that the measurement can tell the two apart.
"""

from __future__ import annotations

import json
import resource
import sys

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset

from pipeline.attacks import LabelOracle
from pipeline.attacks.draw import draw_samples
from pipeline.attacks.methods import run_methods
from pipeline.attacks.streaming import gather, predict_split

BASE = 224  # the size of the default test split (embedded digits, 5 classes)
SIZE = 96  # px: 108 KB a sample, so holding a 20x split (480 MB) would show clearly


class GeneratedSplit(Dataset):
    def __init__(self, length: int):
        images, labels = load_digits(return_X_y=True)
        self.digits = torch.tensor(images[:BASE] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
        self.labels = labels[:BASE].tolist()
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        if i < BASE:
            x = F.interpolate(self.digits[i : i + 1], size=(SIZE, SIZE), mode="bilinear")
            return x[0].clamp(0, 1).expand(3, -1, -1).contiguous(), self.labels[i]
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, SIZE, SIZE, generator=g), i % 10


def model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.AvgPool2d(12), nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    x = torch.stack([GeneratedSplit(BASE)[i][0] for i in range(BASE)])
    y = torch.tensor(GeneratedSplit(BASE).labels)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def main() -> None:
    torch.set_num_threads(1)
    factor, load_all = int(sys.argv[1]), "--load-all" in sys.argv
    split = GeneratedSplit(BASE * factor)
    oracle = LabelOracle(model(), chunk_size=256)
    if load_all:
        everything = torch.stack([split[i][0] for i in range(len(split))])
        labels = torch.tensor([split[i][1] for i in range(len(split))]).numpy()
        preds = oracle(everything).numpy()
    else:
        labels, preds = predict_split(oracle, split, batch_size=32)  # several batches at 1x too
    correct = labels == preds
    draw_samples(correct, 16, attack_seed=0, run_seed=0, pool_size=64)  # over the whole split
    # The same samples at every size: drawn among the digits all sizes share.
    draw = draw_samples(correct[:BASE], 16, attack_seed=0, run_seed=0, pool_size=64)
    x, y = gather(split, draw.samples)
    pool = gather(split, draw.pool)
    results = run_methods(
        oracle, x, y, ["tangent", "hsja"], iterations=3, max_queries=1000, seed=0,
        fallback_pool=pool, checkpoints=[500], max_probe_elements=2**22,
    )  # fmt: skip
    print(
        json.dumps(
            {
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "correct": int(correct.sum()),
                "samples": draw.samples.tolist(),
                "distances": {m: r.distances.tolist() for m, r in results.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
