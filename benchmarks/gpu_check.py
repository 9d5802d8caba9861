"""One GPU check: training, rep-spectral overhead, the real loader, the attack oracle, Tangent Attack.

    python benchmarks/gpu_check.py            # ResNet50 at 224 px on one GPU (< 8 minutes)
    python benchmarks/gpu_check.py --small    # tiny sizes on the CPU (CI; < 60 s on 2 cores)

Needs only torch, torchvision, timm and numpy: the project modules it uses are imported as
leaves, without their package ``__init__`` (which pulls pydantic / webdataset). It prints, each
measured side by side in this run, with the peak GPU memory of each part:

1. training images/s (bf16 autocast, channels-last, synthetic data on the device, SGD), without
   and with rep-spectral (``refresh_every`` 160), and their ratio (target <= 1.05);
2. the real loader (class-folder JPEGs it writes, ``SeededTransform`` + ``EpochSampler`` +
   ``make_loader`` on all CPU cores) in images/s;
3. the label oracle against bare inference at the best batch, images/s (target >= 0.9);
4. samples per minute of the full Tangent Attack (T = 40) against the same model.

Targets on H100/H200: training >= 2500 images/s per GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _bare_packages(*names: str) -> None:
    """Register packages without running their ``__init__``, so leaf modules import alone."""
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        module = types.ModuleType(name)
        module.__path__ = list(spec.submodule_search_locations)
        sys.modules[name] = module


_bare_packages("pipeline.data", "pipeline.regularizers")

from pipeline.attacks import LabelOracle, tangent_attack  # noqa: E402
from pipeline.data.image_folder import scan_class_folders  # noqa: E402
from pipeline.data.loaders import EpochSampler, SeededTransform, make_loader  # noqa: E402
from pipeline.data.transforms import to_pixel_tensor  # noqa: E402
from pipeline.models.split import SplitModel  # noqa: E402
from pipeline.regularizers.base import StepContext  # noqa: E402
from pipeline.regularizers.rep_spectral import RepSpectral  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (CPU)"
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"


def _model(arch: str, classes: int, device: torch.device) -> SplitModel:
    torch.manual_seed(0)
    backbone = timm.create_model(arch, pretrained=False, num_classes=0)
    model = SplitModel(backbone, backbone.num_features, classes, mean=MEAN, std=STD).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast(device: torch.device, dtype: torch.dtype, enabled: bool = True):
    on = enabled and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=on)


def train_rate(args, device, regularized: bool) -> tuple[float, str]:
    """Images/s of SGD steps on synthetic data, optionally with rep-spectral."""
    model = _model(args.arch, args.classes, device).train()
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device, generator=g)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, args.classes, (args.batch,), device=device, generator=g)
    reg = None
    params = list(model.parameters())
    if regularized:
        reg = RepSpectral(strength=1e-3, refresh_every=160)
        reg.attach(model, x[:2])
        reg.to(device)
        params += list(reg.parameters())
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()

    def step(i: int) -> None:
        with _autocast(device, torch.bfloat16):
            feats = model.representation(x)
            logits = model.head(feats)
            loss = criterion(logits, y).float()
        if reg is not None:
            ctx = StepContext(
                step=i, epoch=0, features=feats.float(), logits=logits.float(), inputs=x
            )
            loss = loss + reg.penalty(ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if reg is not None:
            reg.after_step(ctx)

    for i in range(args.warmup):
        step(i)
    _sync(device)
    _reset_peak(device)
    t0 = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
        step(i)
    _sync(device)
    return args.batch * args.steps / (time.perf_counter() - t0), _peak_gib(device)


def write_jpegs(root: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / "train" / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = size + int(rng.integers(0, size // 2)), size + int(rng.integers(0, size // 2))
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)


def loader_rate(args) -> tuple[float, int]:
    """Images/s of the training loader over generated JPEGs, on all CPU cores."""
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jpegs(root, args.jpegs, max(args.size * 8 // 7, 8))
        raw = scan_class_folders("gpu_check", root, "train", ["train"], "class folders")
        data = SeededTransform(raw, to_pixel_tensor(True, args.size, 3, "standard"), seed=0)
        sampler = EpochSampler(len(data), seed=0)
        loader = make_loader(data, args.batch, sampler=sampler, num_workers=workers)
        seen, t0 = 0, None
        for i, (x, _) in enumerate(loader):
            if i == 0:  # worker start-up is not the loader's steady rate
                t0 = time.perf_counter()
                continue
            seen += x.shape[0]
        rate = seen / (time.perf_counter() - t0) if seen else float("nan")
    return rate, workers


@torch.no_grad()
def inference_rates(args, device) -> dict:
    """Bare forward images/s per batch size, then the oracle at the best one."""
    model = _model(args.arch, args.classes, device).eval()
    normalize = (torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1))
    mean, std = (t.to(device) for t in normalize)
    n = max(args.infer_batches) * args.infer_rounds
    x = torch.rand(n, 3, args.size, args.size, device=device)
    # The oracle's precision (attack.precision); bare inference runs at the same one.
    dtype = PRECISIONS[args.precision]

    def bare(batch: int) -> float:
        def once():
            for chunk in x.split(batch):
                chunk = ((chunk - mean) / std).contiguous(
                    memory_format=torch.channels_last
                    if device.type == "cuda"
                    else torch.contiguous_format
                )
                with _autocast(device, dtype or torch.float32, enabled=dtype is not None):
                    model(chunk).argmax(1)
            _sync(device)

        once()
        t0 = time.perf_counter()
        once()
        return n / (time.perf_counter() - t0)

    _reset_peak(device)
    rates = {b: bare(b) for b in args.infer_batches}
    best = max(rates, key=rates.get)
    bare_peak = _peak_gib(device)
    oracle = LabelOracle(
        model,
        MEAN,
        STD,
        chunk_size=best,
        device=device,
        precision=args.precision,
        channels_last=device.type == "cuda",
    )
    oracle(x)
    _sync(device)
    _reset_peak(device)
    t0 = time.perf_counter()
    oracle(x)
    _sync(device)
    oracle_rate = n / (time.perf_counter() - t0)
    return {
        "rates": rates,
        "best": best,
        "bare": rates[best],
        "bare_peak": bare_peak,
        "oracle": oracle_rate,
        "oracle_peak": _peak_gib(device),
    }


def attack_rate(args, device, best_batch: int) -> tuple[float, int, str]:
    """Samples per minute of Tangent Attack (T iterations) on correctly classified inputs."""
    model = _model(args.arch, args.classes, device).eval()
    oracle = LabelOracle(
        model, MEAN, STD, chunk_size=best_batch, device=device, channels_last=device.type == "cuda"
    )
    g = torch.Generator().manual_seed(1)
    pool = torch.rand(args.attack_samples * 8, 3, args.size, args.size, generator=g).to(device)
    labels = oracle(pool)  # the model's own labels: every sample starts correctly classified
    x, y = pool[: args.attack_samples], labels[: args.attack_samples]
    _sync(device)
    _reset_peak(device)
    t0 = time.perf_counter()
    result = tangent_attack(
        oracle, x, y, iterations=args.iterations, init_tries=50, fallback_pool=(pool, labels)
    )
    _sync(device)
    minutes = (time.perf_counter() - t0) / 60
    return args.attack_samples / minutes, int(result.queries.sum()), _peak_gib(device)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="tiny model and sizes, for CPU / CI")
    p.add_argument(
        "--precision", choices=sorted(PRECISIONS), default="fp32",
        help="oracle and bare-inference precision (attack.precision; fp32 is the default)",
    )  # fmt: skip
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.small else "cpu")
    if args.small:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        sizes = dict(arch="test_resnet", size=32, classes=10, batch=16, warmup=2, steps=6, jpegs=64)
        sizes.update(infer_batches=(16, 64), infer_rounds=2, attack_samples=2, iterations=40)
    else:
        torch.backends.cudnn.benchmark = True
        sizes = dict(arch="resnet50", size=224, classes=1000, batch=256, warmup=15, steps=60)
        sizes.update(jpegs=2048, infer_batches=(128, 256, 512, 1024), infer_rounds=4)
        sizes.update(attack_samples=16, iterations=40)
    vars(args).update(sizes)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; {args.arch} at {args.size} px, batch {args.batch}")

    # plain, rep-spectral, plain again: one-time start-up costs and drifting load hit both sides
    first, plain_mem = train_rate(args, device, regularized=False)
    reg, reg_mem = train_rate(args, device, regularized=True)
    second, _ = train_rate(args, device, regularized=False)
    plain = (first + second) / 2
    print(f"plain runs: {first:.1f} and {second:.1f} images/s")
    print(
        f"train images/s: plain {plain:.1f} (peak {plain_mem}); "
        f"rep-spectral {reg:.1f} (peak {reg_mem})"
    )
    print(f"rep-spectral step-time ratio: {plain / reg:.3f}x (target <= 1.05)")
    if device.type == "cuda":
        print(f"training target >= 2500 images/s/GPU: {'met' if plain >= 2500 else 'NOT met'}")

    rate, workers = loader_rate(args)
    print(f"real loader (JPEG, {workers} workers, augment 'standard'): {rate:.1f} images/s")

    inf = inference_rates(args, device)
    per_batch = ", ".join(f"{b}: {r:.1f}" for b, r in inf["rates"].items())
    print(
        f"bare inference images/s by batch: {per_batch}; best batch {inf['best']} "
        f"(peak {inf['bare_peak']})"
    )
    print(
        f"oracle images/s: {inf['oracle']:.1f} (peak {inf['oracle_peak']}); "
        f"oracle / bare: {inf['oracle'] / inf['bare']:.3f}x (target >= 0.9)"
    )

    spm, queries, attack_mem = attack_rate(args, device, inf["best"])
    print(
        f"Tangent Attack T={args.iterations}: {spm:.2f} samples/minute "
        f"({args.attack_samples} samples, {queries} queries, peak {attack_mem})"
    )


if __name__ == "__main__":
    main()
