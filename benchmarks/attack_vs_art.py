"""Mean l2 distance at fixed query budgets: our Tangent Attack and HopSkipJump against ART's HSJA.

    python benchmarks/attack_vs_art.py                     # 30 digits, budgets 1K/2K/5K/10K
    python benchmarks/attack_vs_art.py --samples 10
    python benchmarks/attack_vs_art.py --model artifacts/finetune/digits_5to9/none/backbone_seed0/none/seed0/model.pt \
        --shards artifacts/prepared/digits_5to9/test      # a model of the default DAG

A 64-128-10 MLP is trained on scikit-learn's digits (pixels in [0, 1]); the attacked samples are
held-out digits it classifies correctly, and every attack starts from the same adversarial noise
point per sample (given, so it costs no search). For ours the distance at a budget is the best
boundary point whose search had finished within that many queries of its sample
(``AttackResult.at_queries``). ART reports no query count, so its predict function counts and
logs every row it is asked about; ART's distance at a budget is the closest *adversarial row it
queried* within that many queries — never worse than the point ART itself would have returned
then (that point is one of those rows), so the comparison favours ART.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from art.attacks.evasion import HopSkipJump
from art.estimators.classification import BlackBoxClassifier
from sklearn.datasets import load_digits
from torch import nn

from pipeline.attacks import hop_skip_jump, tangent_attack


def digits_mlp(seed: int = 0):
    torch.manual_seed(seed)
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images / 16.0, dtype=torch.float32)
    y = torch.tensor(labels)
    perm = torch.randperm(len(x))
    train, test = perm[:1400], perm[1400:]
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[train]), y[train]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        correct = model(x[test]).argmax(1) == y[test]
    return model, x[test][correct], y[test][correct]


def dag_model(path: str, shards: str, samples: int):
    """A model the DAG wrote, as a function of flat pixel rows, and correct test samples."""
    from pipeline.data.shards import open_shards
    from pipeline.data.transforms import to_pixel_tensor
    from pipeline.models import load_model

    net, meta = load_model(path)
    net.eval()
    data = open_shards(shards)
    to_pixels = to_pixel_tensor(False, meta["image_size"], data.channels, "none")
    xs, ys = [], []
    for i in range(len(data)):
        image, label = data[i]
        pixels = to_pixels(image)
        with torch.no_grad():
            if int(net(pixels[None]).argmax(1)) == label:
                xs.append(pixels)
                ys.append(label)
        if len(xs) == samples:
            break
    shape = xs[0].shape

    class Flat(nn.Module):
        def forward(self, rows):
            return net(rows.view(-1, *shape))

    return Flat(), torch.stack(xs).flatten(1), torch.tensor(ys), net.num_classes


def noise_starts(model, x, y, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    starts, need = torch.empty_like(x), torch.ones(len(x), dtype=torch.bool)
    while need.any():
        cand = torch.rand(x.shape, generator=g)
        with torch.no_grad():
            adv = model(cand).argmax(1) != y
        starts[need & adv] = cand[need & adv]
        need &= ~adv
    return starts


def art_at_budgets(model, x, y, starts, budgets, iterations: int, classes: int) -> np.ndarray:
    """(samples, budgets): closest adversarial row ART queried within each budget."""
    out = np.full((len(x), len(budgets)), math.inf)
    for i in range(len(x)):
        seen = [0]
        best = out[i]

        def predict_fn(a: np.ndarray, i=i, seen=seen, best=best) -> np.ndarray:
            t = torch.as_tensor(a, dtype=torch.float32)
            with torch.no_grad():
                logits = model(t)
            adv = (logits.argmax(1) != y[i]).numpy()
            dist = torch.linalg.vector_norm(t - x[i], dim=1).numpy()
            number = seen[0] + 1 + np.arange(len(a))  # query number of each row
            for k, b in enumerate(budgets):
                ok = adv & (number <= b)
                if ok.any():
                    best[k] = min(best[k], float(dist[ok].min()))
            seen[0] += len(a)
            return torch.softmax(logits, 1).numpy()

        art = HopSkipJump(
            BlackBoxClassifier(predict_fn, (x.shape[1],), classes, clip_values=(0.0, 1.0)),
            targeted=False, norm=2, max_iter=iterations, max_eval=10_000, init_eval=100,
            init_size=100, verbose=False,
        )  # fmt: skip
        art.generate(
            x[i : i + 1].numpy(), y=y[i : i + 1].numpy(), x_adv_init=starts[i : i + 1].numpy()
        )
        if seen[0] < budgets[-1]:
            print(f"  note: ART used {seen[0]} queries on sample {i} (< {budgets[-1]})")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--budgets", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    p.add_argument("--art-iterations", type=int, default=40, help="ART max_iter (enough for 10K)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", help="a model.pt the DAG wrote (default: a digits MLP)")
    p.add_argument("--shards", help="with --model: the prepared test split it is attacked on")
    args = p.parse_args()
    torch.set_num_threads(1)
    np.random.seed(args.seed)
    if args.model:
        model, x, y, classes = dag_model(args.model, args.shards, args.samples)
        name = args.model
    else:
        model, xs, ys = digits_mlp()
        x, y, classes, name = xs[: args.samples], ys[: args.samples], 10, "digits MLP"
    starts = noise_starts(model, x, y, args.seed)
    rows = {}
    for attack in (tangent_attack, hop_skip_jump):
        res = attack(
            lambda z: model(z).argmax(1), x, y, iterations=10_000, max_queries=max(args.budgets),
            starts=starts, checkpoints=args.budgets, seed=args.seed,
        )  # fmt: skip
        rows[attack.__name__] = res.at_queries.mean(0).tolist()
    rows["ART HopSkipJump"] = art_at_budgets(
        model, x, y, starts, args.budgets, args.art_iterations, classes
    ).mean(0)
    print(f"{name}, {len(x)} samples, mean l2 distance at query budgets (same starts)")
    print(f"{'attack':<18}" + "".join(f"{b:>10}" for b in args.budgets))
    for name, values in rows.items():
        print(f"{name:<18}" + "".join(f"{v:>10.4f}" for v in values))


if __name__ == "__main__":
    main()
