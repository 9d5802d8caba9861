"""Ground truths for the attack tests: classifiers whose exact l2 distance to the boundary is known,
an independent query counter, and a quickly trained MLP on the embedded digits."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The attack issues many small tensor ops; on a shared 2-core CPU a second intra-op thread
    made each of them wait for the pool (a 30x slowdown measured), so these tests use one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class LinearBinary:
    """``1[wᵀx + b > 0]``: the exact l2 distance of ``x`` to the boundary is ``|wᵀx + b| / ‖w‖``."""

    def __init__(self, d: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(d, generator=g)
        self.b = float(-0.5 * self.w.sum())  # the box centre lies on the boundary
        self.unit = self.w / self.w.norm()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.reshape(x.shape[0], -1) @ self.w + self.b > 0).long()

    def signed_distance(self, x: torch.Tensor) -> torch.Tensor:
        return (x.reshape(x.shape[0], -1) @ self.w + self.b) / self.w.norm()

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        return self.signed_distance(x).abs()

    def points(self, n: int, dist: float, seed: int = 1) -> torch.Tensor:
        """``n`` points at distance ``dist`` on alternating sides, whose nearest boundary point
        lies inside the unit box (so the box does not bind and the exact distance is the truth)."""
        g = torch.Generator().manual_seed(seed)
        p = 0.5 + 0.2 * (torch.rand(n, self.w.numel(), generator=g) - 0.5)
        p = p - self.signed_distance(p).unsqueeze(1) * self.unit  # on the boundary
        side = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
        x = p + (side * dist).unsqueeze(1) * self.unit
        assert float(p.min()) >= 0 and float(p.max()) <= 1, "nearest boundary point left the box"
        assert float(x.min()) >= 0 and float(x.max()) <= 1
        return x


class Ball:
    """Class 1 outside the ball ``‖x − c‖ ≤ r`` (c the box centre), class 0 inside."""

    def __init__(self, d: int, radius: float):
        self.c = torch.full((d,), 0.5)
        self.r = radius

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.linalg.vector_norm(x.reshape(x.shape[0], -1) - self.c, dim=1) > self.r).long()

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.linalg.vector_norm(x.reshape(x.shape[0], -1) - self.c, dim=1) - self.r).abs()

    def points(self, n: int, rho: tuple[float, float], seed: int = 2) -> torch.Tensor:
        """Points at radii uniform in ``rho`` around the centre, in random directions."""
        g = torch.Generator().manual_seed(seed)
        u = torch.nn.functional.normalize(torch.randn(n, self.c.numel(), generator=g), dim=1)
        radii = rho[0] + (rho[1] - rho[0]) * torch.rand(n, 1, generator=g)
        x = self.c + radii * u
        assert float(x.min()) >= 0 and float(x.max()) <= 1
        return x


class CountingPredict:
    """An independent query counter in front of ``fn``: counts the rows it is actually asked
    about, in total and per owner (the sample index the attack attributes each row to)."""

    takes_owners = True

    def __init__(self, fn, batch: int):
        self.fn = fn
        self.per_sample = torch.zeros(batch, dtype=torch.long)
        self.total = 0
        self.calls = 0

    def __call__(self, x: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        assert owners.shape == (x.shape[0],)
        self.per_sample += torch.bincount(owners.cpu(), minlength=self.per_sample.numel())
        self.total += x.shape[0]
        self.calls += 1
        return self.fn(x)


@pytest.fixture
def linear_binary():
    return LinearBinary


@pytest.fixture
def ball():
    return Ball


@pytest.fixture
def counting_predict():
    return CountingPredict


@pytest.fixture(scope="module")
def digits_mlp():
    """A 64-128-10 MLP trained on sklearn digits (pixels in [0, 1]) in about a second; returns
    the model and the held-out inputs and labels it classifies correctly."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
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
    assert correct.float().mean() > 0.9
    return model, x[test][correct], y[test][correct]
