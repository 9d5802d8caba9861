"""Attack throughput (Tangent Attack, HopSkipJump): wall time against the bare forward passes paid for.

    python benchmarks/attack_throughput.py                      # small CNN + resnet18 at 32 px
    python benchmarks/attack_throughput.py --iterations 1 --init-probes 20 --repeats 2
    python benchmarks/attack_throughput.py --models small_cnn --iterations 10
    python benchmarks/attack_throughput.py --methods hsja --precision bf16

Each model is first trained for a moment on part of the embedded digits (upscaled to RGB), so
that its labels are varied and the attacked samples correctly classified. Then, on the same
model and the same ``--samples`` test digits, it reports side by side:

(a) overhead = attack wall time / (its number of queries × time per input of a bare forward pass
    at the best batch size). The bare per-input time is measured right before and after every
    attack run; the best batch size is chosen once from ``--batch-sizes`` and is also the oracle's
    chunk size. 1.0 would mean the attack costs nothing beyond the model itself.
(b) sequential / batched = wall time of attacking the samples one at a time (B = 1 calls) over
    attacking them as one batch, and the same per query (the two layouts draw different random
    probes, so their query counts may differ slightly).

The attack runs with the paper's settings except T (``--iterations``), optionally
``--init-probes``, and ``--init-tries`` (20 noise starts, then the nearest correctly classified
test digit of another class), so that starts do not dominate a short run. Runs are repeated
``--repeats`` times, interleaved (bare, batched, bare, sequential, ...), and summarized by
medians, because other processes may share the CPU. Each method in ``--methods`` is measured
the same way. The oracle runs at ``--precision`` (default fp16 on CUDA, fp32 on CPU), and
channels-last on CUDA; it and also reports samples/minute for resnet50 at 224 px with T = 40 (``--r50-*``
options; ``--resnet50`` forces that part on CPU too, for a smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from pipeline.attacks import LabelOracle, hop_skip_jump, tangent_attack

ATTACKS = {"tangent": tangent_attack, "hsja": hop_skip_jump}


def small_cnn() -> nn.Module:
    """Three 3×3 conv blocks (32-64-64 channels, max-pooled) and a linear readout, ≈ 8 MMAC."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 4 * 4, 10),
    )  # fmt: skip


def timm_resnet(arch: str, small_stem: bool) -> nn.Module:
    """A timm ResNet with 10 classes; the small-input stem is a 3×3 stride-1 conv, no max-pool."""
    net = timm.create_model(arch, pretrained=False, num_classes=10)
    if small_stem:
        net.conv1 = nn.Conv2d(3, net.conv1.out_channels, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    return net


MODELS = {
    # name: (constructor, input size, default training epochs; 0 = fit only the readout)
    "small_cnn": (small_cnn, 32, 3),
    "resnet18_32": (lambda: timm_resnet("resnet18", True), 32, 0),
}


def digits_rgb(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedded 8×8 digits as RGB pixels in [0, 1] at ``size`` px (bilinear), on CPU."""
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x.expand(-1, 3, -1, -1).contiguous(), torch.tensor(labels)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(model, x, y, epochs: int, device, batch: int = 32) -> None:
    """A few epochs of Adam: enough for varied, mostly correct labels (the attack needs both)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch):
            xb, yb = x[idx].to(device), y[idx].to(device)
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


@torch.no_grad()
def fit_readout(model, x, y, device, batch: int = 64, steps: int = 300) -> None:
    """Random timm features plus a fitted readout, for models too slow to train here: one pass
    in train mode sets the BatchNorm statistics (cumulative average), one pass in eval mode
    caches the pooled features, then only the classifier is fitted on standardized features
    (the standardization folded into its weights afterwards)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    for xb in x.split(batch):
        model(xb.to(device))
    model.eval()
    feats = torch.cat(
        [model.forward_head(model.forward_features(xb.to(device)), True) for xb in x.split(batch)]
    ).float()
    mu, sd = feats.mean(0), feats.std(0).clamp_min(1e-6)
    z, y = (feats - mu) / sd, y.to(device)
    head = model.get_classifier()
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(head(z), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    head.weight.div_(sd)
    head.bias.sub_(head.weight @ mu)


def forward_seconds_per_input(model, shape, batch: int, device, min_seconds: float) -> float:
    """Bare forward time per input at ``batch`` (no_grad, autocast + channels-last on CUDA)."""
    x = torch.rand(batch, *shape, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
        model(x)  # warm-up
        sync(device)
        n, t0 = 0, time.perf_counter()
        while True:
            model(x)
            n += 1
            sync(device)
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                return elapsed / (n * batch)


def run_attack(model, x, y, pool, args, chunk: int, device, one_at_a_time: bool, method: str):
    """Wall time, total queries and success rate of one attack on all samples."""
    d = x[0].numel()
    attack = ATTACKS[method]
    oracle = LabelOracle(
        model, chunk_size=chunk, device=device, channels_last=device.type == "cuda",
        precision=args.precision,
    )  # fmt: skip
    kwargs = dict(
        iterations=args.iterations, init_probes=args.init_probes, seed=0, fallback_pool=pool,
        init_tries=args.init_tries,
        max_probe_elements=min(max(2**25, chunk * d), 2**28),
    )  # fmt: skip
    sync(device)
    t0 = time.perf_counter()
    if one_at_a_time:
        results = [attack(oracle, x[i : i + 1], y[i : i + 1], **kwargs) for i in range(len(x))]
        queries = sum(int(r.queries.sum()) for r in results)
        success = sum(int(r.success.sum()) for r in results) / len(x)
    else:
        r = attack(oracle, x, y, **kwargs)
        queries, success = int(r.queries.sum()), float(r.success.float().mean())
    sync(device)
    seconds = time.perf_counter() - t0
    assert oracle.total_queries == queries, "oracle and attack disagree on the query count"
    return seconds, queries, success


def prepare(name: str, build, size: int, args, device):
    """Model trained on digits at ``size`` px, plus the attacked samples and the start pool."""
    torch.manual_seed(0)
    x_all, y_all = digits_rgb(size)
    perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(0))
    train_idx, test_idx = perm[:1400], perm[1400:]
    model = build().to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    train_idx = train_idx[: args.train_images]
    if args.train_epochs:
        train(model, x_all[train_idx], y_all[train_idx], args.train_epochs, device)
    else:
        fit_readout(model, x_all[train_idx], y_all[train_idx], device)
    oracle = LabelOracle(model, chunk_size=256, device=device)
    pred = oracle(x_all[test_idx].to(device)).cpu()
    correct = test_idx[pred == y_all[test_idx]]
    acc = float((pred == y_all[test_idx]).float().mean())
    print(
        f"[{name}] {f'trained {args.train_epochs} epochs' if args.train_epochs else 'fitted readout'}"
        f" on {len(train_idx)} digits in {time.perf_counter() - t0:.0f}s, "
        f"test accuracy {acc:.3f}, {len(correct)} correct"
    )
    samples = correct[: args.samples]
    pool = correct[args.samples :]
    return (
        model,
        x_all[samples].to(device),
        y_all[samples].to(device),
        (x_all[pool].to(device), y_all[pool].to(device)),
    )


def benchmark_model(name: str, build, size: int, args, device) -> dict:
    """Per method in ``args.methods``: medians over repeats, keyed ``"<model>/<method>"``."""
    model, x, y, pool = prepare(name, build, size, args, device)
    shape = tuple(x.shape[1:])
    per_batch = {
        b: forward_seconds_per_input(model, shape, b, device, args.min_seconds)
        for b in args.batch_sizes
    }
    best = min(per_batch, key=per_batch.get)
    print(
        f"[{name}] bare forward µs/input by batch: "
        + ", ".join(f"{b}: {s * 1e6:.0f}" for b, s in per_batch.items())
        + f" -> best {best}"
    )
    out = {}
    for method in args.methods:
        out[f"{name}/{method}"] = _repeats(
            f"{name}/{method}", model, x, y, pool, best, args, device, method
        )
    return out


def _repeats(name, model, x, y, pool, best, args, device, method) -> dict:
    shape = tuple(x.shape[1:])
    rows = []
    for rep in range(args.repeats):
        order = [False, True] if rep % 2 == 0 else [True, False]
        runs = {}
        for one_at_a_time in order:
            if one_at_a_time and args.skip_sequential:
                continue
            before = forward_seconds_per_input(model, shape, best, device, args.min_seconds)
            secs, queries, success = run_attack(
                model, x, y, pool, args, best, device, one_at_a_time, method
            )
            after = forward_seconds_per_input(model, shape, best, device, args.min_seconds)
            bare = queries * (before + after) / 2
            runs[one_at_a_time] = (secs, queries, success, bare)
        secs, queries, success, bare = runs[False]
        row = dict(seconds=secs, queries=queries, success=success, bare=bare, overhead=secs / bare)
        line = (
            f"[{name}] rep {rep}: batched {secs:.1f}s, {queries} queries, success {success:.2f}, "
            f"bare {bare:.1f}s -> overhead {secs / bare:.2f}"
        )
        if True in runs:
            s_secs, s_queries, s_success, s_bare = runs[True]
            row.update(
                seq_seconds=s_secs, seq_queries=s_queries, seq_overhead=s_secs / s_bare,
                seq_ratio=s_secs / secs, seq_ratio_per_query=(s_secs / s_queries) / (secs / queries),
            )  # fmt: skip
            line += (
                f"; one at a time {s_secs:.1f}s, {s_queries} queries -> "
                f"ratio {row['seq_ratio']:.2f} ({row['seq_ratio_per_query']:.2f} per query)"
            )
        print(line, flush=True)
        rows.append(row)
    summary = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    summary["best_batch"] = best
    return summary


def resnet50_samples_per_minute(args, device) -> None:
    """Attack throughput at ImageNet scale: resnet50 at 224 px, T = ``--r50-iterations``."""
    sub = argparse.Namespace(**vars(args))
    sub.samples, sub.iterations = args.r50_samples, args.r50_iterations
    sub.train_epochs = args.r50_train_epochs
    model, x, y, pool = prepare(
        "resnet50_224", lambda: timm_resnet("resnet50", False), 224, sub, device
    )
    chunk = args.r50_batch
    per_input = forward_seconds_per_input(
        model, tuple(x.shape[1:]), chunk, device, args.min_seconds
    )
    for method in args.methods:
        secs, queries, success = run_attack(
            model, x, y, pool, sub, chunk, device, one_at_a_time=False, method=method
        )
        bare = queries * per_input
        print(
            f"[resnet50_224/{method}] T={sub.iterations}, {len(x)} samples, batch {chunk}: {secs:.1f}s, "
            f"{queries} queries ({queries / len(x):.0f}/sample), success {success:.2f}, "
            f"overhead {secs / bare:.2f} -> {len(x) / secs * 60:.1f} samples/minute"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--models", default="small_cnn,resnet18_32", help="comma-separated: " + ", ".join(MODELS)
    )
    p.add_argument("--iterations", type=int, default=2, help="T of the attack (paper: 40)")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--init-probes", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--init-tries", type=int, default=20, help="noise starts before the pool")
    p.add_argument("--train-epochs", type=int, default=None, help="default: per model")
    p.add_argument("--train-images", type=int, default=512)
    p.add_argument(
        "--batch-sizes", default="64,128,256,512", help="candidates for the bare forward"
    )
    p.add_argument("--min-seconds", type=float, default=1.0, help="per bare-forward measurement")
    p.add_argument("--skip-sequential", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument(
        "--resnet50", action="store_true", help="run the resnet50 part even without CUDA"
    )
    p.add_argument("--methods", default="tangent,hsja", help="comma-separated: tangent, hsja")
    p.add_argument("--precision", default=None, help="fp32 | bf16 | fp16 (fp16 on CUDA, else fp32)")
    p.add_argument("--r50-samples", type=int, default=32)
    p.add_argument("--r50-iterations", type=int, default=40)
    p.add_argument("--r50-batch", type=int, default=256)
    p.add_argument("--r50-train-epochs", type=int, default=0, help="0: fit only the readout")
    args = p.parse_args()
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.methods = args.methods.split(",")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.precision is None:
        args.precision = "fp16" if device.type == "cuda" else "fp32"
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"T={args.iterations}, {args.samples} samples, {args.repeats} repeats"
    )
    results = {}
    for name in args.models.split(","):
        build, size, epochs = MODELS[name]
        model_args = argparse.Namespace(**vars(args))
        model_args.train_epochs = epochs if args.train_epochs is None else args.train_epochs
        results.update(benchmark_model(name, build, size, model_args, device))
    print("\nmedians over repeats")
    print(
        f"{'model/method':<22}{'batch':>6}{'attack s':>10}{'queries':>9}{'bare s':>8}"
        f"{'(a) overhead':>14}{'seq s':>8}{'(b) seq/batched':>17}{'per query':>11}"
    )
    for name, r in results.items():
        seq = (
            f"{r['seq_seconds']:>8.1f}{r['seq_ratio']:>17.2f}{r['seq_ratio_per_query']:>11.2f}"
            if "seq_seconds" in r
            else ""
        )
        print(
            f"{name:<22}{r['best_batch']:>6}{r['seconds']:>10.1f}{r['queries']:>9.0f}"
            f"{r['bare']:>8.1f}{r['overhead']:>14.2f}{seq}"
        )
    if device.type == "cuda" or args.resnet50:
        resnet50_samples_per_minute(args, device)


if __name__ == "__main__":
    main()
