"""Training-step time of rep-spectral relative to no regularizer, measured side by side.

    python benchmarks/regularizer_overhead.py                      # both models, CPU or CUDA
    python benchmarks/regularizer_overhead.py --models resnet18_32 --steps 8 --repeats 5

For each model the configurations (none, rep-spectral refreshing every step, rep-spectral
refreshing every 160 steps) are run in interleaved blocks of ``--steps`` optimizer steps, the
order rotating every repeat, so load from other processes hits all of them alike. Reported:
the ratio of median step times, and the median over repeats of the ratio of blocks that ran
back to back. A run is far shorter than 160 steps, so for the refresh-160 case one refresh is
timed separately (also interleaved) and amortized: ``(median step + refresh / 160) / median
step of none``. Last, the regularizer's own work (penalty and its backward, timed alone) plus
refresh/160, relative to the plain step: the least noisy figure on a shared machine. On CUDA it
uses bf16 autocast and channels-last.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import timm
import torch
from torch import nn

from pipeline.models.split import SplitModel
from pipeline.regularizers import RepSpectral, StepContext

MODELS = {
    # name: (timm architecture, input size, small-input stem)
    "resnet18_32": ("resnet18", 32, True),
    "resnet50_224": ("resnet50", 224, False),
}


def build_model(arch: str, small_stem: bool, num_classes: int = 10) -> SplitModel:
    """A timm backbone without classifier; CIFAR-style stem (3×3 stride-1 conv1, no maxpool)."""
    backbone = timm.create_model(arch, pretrained=False, num_classes=0)
    if small_stem:
        backbone.conv1 = nn.Conv2d(3, backbone.conv1.out_channels, 3, 1, 1, bias=False)
        backbone.maxpool = nn.Identity()
    return SplitModel(backbone, backbone.num_features, num_classes)


class Runner:
    """One model + optimizer (+ optional regularizer) stepping on a fixed random batch."""

    def __init__(self, model, regularizer, inputs, targets, device):
        self.model, self.regularizer = model, regularizer
        self.inputs, self.targets, self.device = inputs, targets, device
        params = list(model.parameters())
        if regularizer is not None:
            regularizer.attach(model, inputs)
            regularizer.to(device)
            params += list(regularizer.parameters())
        self.optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)
        self.step_count = 0

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def step(self) -> float:
        self.sync()
        start = time.perf_counter()
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.device.type == "cuda"):
            features = self.model.representation(self.inputs)
            logits = self.model.head(features)
            loss = nn.functional.cross_entropy(logits.float(), self.targets)
        ctx = StepContext(step=self.step_count, epoch=0, features=features, logits=logits)
        if self.regularizer is not None:
            loss = loss + self.regularizer.penalty(ctx)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.regularizer is not None:
            self.regularizer.after_step(ctx)
        self.step_count += 1
        self.sync()
        return time.perf_counter() - start

    def time_refresh(self) -> float:
        self.sync()
        start = time.perf_counter()
        self.regularizer.refresh()
        self.sync()
        return time.perf_counter() - start

    def time_penalty(self) -> float:
        """The regularizer's own per-step work alone: penalty and its backward, no refresh."""
        self.optimizer.zero_grad(set_to_none=True)
        # the step of the last refresh: no refresh is due, so none is timed
        ctx = StepContext(step=int(self.regularizer.last_refresh), epoch=0)
        self.sync()
        start = time.perf_counter()
        self.regularizer.penalty(ctx).backward()
        self.sync()
        elapsed = time.perf_counter() - start
        self.optimizer.zero_grad(set_to_none=True)
        return elapsed


def bench_model(name: str, batch: int, steps: int, repeats: int, device: torch.device) -> None:
    arch, size, small_stem = MODELS[name]
    torch.manual_seed(0)
    base = build_model(arch, small_stem)
    inputs = torch.randn(batch, 3, size, size, device=device)
    targets = torch.randint(0, 10, (batch,), device=device)
    if device.type == "cuda":
        base = base.to(device, memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    else:
        base = base.to(device)
    configs = {
        "none": None,
        "refresh=1": RepSpectral(strength=1e-3, refresh_every=1),
        "refresh=160": RepSpectral(strength=1e-3, refresh_every=160),
    }
    runners = {
        key: Runner(copy.deepcopy(base), reg, inputs, targets, device)
        for key, reg in configs.items()
    }
    for runner in runners.values():  # warm-up; the regularizers' first (long) refresh
        runner.step()
    times: dict[str, list[float]] = {key: [] for key in runners}
    ratios: dict[str, list[float]] = {key: [] for key in runners}
    refresh_times: list[float] = []
    penalty_times: list[float] = []
    keys = list(runners)
    for rep in range(repeats):
        order = keys[rep % len(keys) :] + keys[: rep % len(keys)]
        block = {}
        for key in order:
            block[key] = [runners[key].step() for _ in range(steps)]
            times[key].extend(block[key])
        for key in keys:  # this repeat's blocks ran back to back: pair them
            ratios[key].append(statistics.mean(block[key]) / statistics.mean(block["none"]))
        refresh_times.append(runners["refresh=160"].time_refresh())
        penalty_times.append(runners["refresh=160"].time_penalty())
    base_t = statistics.median(times["none"])
    refresh_t = statistics.median(refresh_times)
    penalty_t = statistics.median(penalty_times)
    print(f"{name}  batch={batch}  device={device.type}  steps/block={steps}  repeats={repeats}")
    print(f"  none         median step {base_t:8.4f} s")
    for key in ("refresh=1", "refresh=160"):
        t = statistics.median(times[key])
        print(
            f"  {key:<12} median step {t:8.4f} s  ratio {t / base_t:.3f}  "
            f"(median of paired ratios {statistics.median(ratios[key]):.3f})"
        )
    amortized = statistics.median(times["refresh=160"]) + refresh_t / 160
    print(
        f"  refresh=160 amortized: one refresh {refresh_t:.4f} s -> "
        f"{amortized:8.4f} s per step, ratio {amortized / base_t:.3f}"
    )
    alone = penalty_t + refresh_t / 160
    print(
        f"  refresh=160 regularizer alone: penalty+backward {penalty_t:.4f} s + refresh/160 -> "
        f"overhead ratio {(base_t + alone) / base_t:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch18", type=int, default=64, help="batch for resnet18_32")
    parser.add_argument("--batch50", type=int, default=8, help="batch for resnet50_224")
    parser.add_argument("--steps", type=int, default=1, help="steps per interleaved block")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name in args.models:
        batch = args.batch18 if name == "resnet18_32" else args.batch50
        bench_model(name, batch, args.steps, args.repeats, device)


if __name__ == "__main__":
    main()
