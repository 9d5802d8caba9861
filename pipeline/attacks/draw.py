"""Which test samples an attack stage attacks: a draw that does not depend on the model.

A fixed permutation of the test split comes from ``(attack seed, run seed)``; each model attacks
the first ``n_samples`` entries of it that it classifies correctly. Two models of the same run
seed therefore attack the same samples wherever both are right, and the draw is reproducible
without storing it. The fallback pool (starting points of another class, used where noise never
fools the model) is the first ``pool_size`` correctly classified entries of the same permutation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.core.errors import ConfigError


@dataclass
class SampleDraw:
    samples: np.ndarray  # (n,) int64 positions in the test split, in permutation order
    pool: np.ndarray  # (m,) int64 positions of the fallback pool, in permutation order
    available: int  # correctly classified test samples


def split_permutation(size: int, attack_seed: int, run_seed: int) -> np.ndarray:
    """The fixed order of a test split of ``size`` samples for these two seeds."""
    g = torch.Generator().manual_seed(int(attack_seed) * 1_000_003 + int(run_seed))
    return torch.randperm(size, generator=g).numpy()


def draw_samples(
    correct: np.ndarray,
    n_samples: int,
    *,
    attack_seed: int,
    run_seed: int,
    pool_size: int,
    allow_fewer: bool = False,
) -> SampleDraw:
    """The first ``n_samples`` (and ``pool_size``) correct entries of the split's permutation.

    ``correct`` is a bool per test sample. Fewer correct samples than ``n_samples`` is a
    :class:`~pipeline.core.errors.ConfigError` naming ``attack.n_samples``, unless ``allow_fewer``.
    """
    correct = np.asarray(correct, dtype=bool)
    order = split_permutation(correct.size, attack_seed, run_seed)
    right = order[correct[order]]
    available = int(right.size)
    if available == 0:
        raise ConfigError("attack: the model classifies no test sample correctly")
    if n_samples > available and not allow_fewer:
        raise ConfigError(
            f"attack.n_samples: {n_samples} exceeds the {available} correctly classified test "
            "samples; lower it or set attack.allow_fewer: true"
        )
    return SampleDraw(
        samples=right[:n_samples].astype(np.int64),
        pool=right[:pool_size].astype(np.int64),
        available=available,
    )
