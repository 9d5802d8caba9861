"""Volume element of a feature map and decision maps over a 2-D input grid (rep-spectral Fig. 3).

For a feature map ``Φ: R^m → R^d`` the pull-back of the Euclidean metric is ``g(x) = J(x)ᵀ J(x)``
with ``J = ∂Φ/∂x`` (``d × m``); the **volume element** ``√det g(x)`` measures how much ``Φ``
stretches a small input area around ``x`` (rep-spectral paper Fig. 3b, after Zavatone-Veth et
al. 2023). It equals the product of the singular values of ``J``, which is how it is computed
here (more accurate than forming ``JᵀJ``), and is 0 when ``d < m``. Fig. 3 uses the 2-D XOR task,
so the helpers below build a 2-D grid and a map of predicted labels (Fig. 3a) on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import jacrev, vmap

from pipeline.analysis._arrays import labels_from_output


@torch.no_grad()
def volume_element(
    feature_map: Callable[[torch.Tensor], torch.Tensor],
    grid_points: torch.Tensor,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``√det(J(x)ᵀ J(x))`` of ``feature_map`` at each of the ``n`` points (rep-spectral Fig. 3b).

    ``feature_map`` is a *batched* function, e.g. a backbone module: it maps ``(B, m)`` inputs to
    ``(B, d)`` features (extra feature dims are flattened). Jacobians are taken with
    ``torch.func.jacrev`` and batched over points with ``vmap`` (each point is passed as a batch
    of one), ``chunk_size`` points at a time (default: all at once). The caller puts the module
    in eval mode; random layers (dropout in train mode) are rejected by ``vmap``. The parameters
    are constants here: no graph is kept. ``grid_points`` is ``(n, m)`` (``m = 2`` for the
    figure), on the module's device and dtype. Returns a detached ``(n,)`` tensor.
    """
    points = torch.as_tensor(grid_points)
    if points.ndim != 2:
        raise ValueError(f"grid_points must be (n, m); got shape {tuple(points.shape)}")
    if not torch.is_floating_point(points):
        raise ValueError(f"grid_points must be floating point; got dtype {points.dtype}")

    def features_at(point: torch.Tensor) -> torch.Tensor:
        return feature_map(point.unsqueeze(0)).reshape(-1)

    jac = vmap(jacrev(features_at), chunk_size=chunk_size)(points)  # (n, d, m)
    n, d, m = jac.shape
    if d < m:
        return torch.zeros(n, dtype=jac.dtype, device=jac.device)
    return torch.linalg.svdvals(jac).prod(dim=-1)


@dataclass(frozen=True)
class Grid:
    """A rectangular 2-D grid: ``xs`` (nx,), ``ys`` (ny,), ``points`` (ny·nx, 2).

    ``points`` runs over ``x`` fastest (row ``iy * nx + ix`` is ``(xs[ix], ys[iy])``), so
    :meth:`as_image` turns per-point values into an ``(ny, nx)`` image with ``y`` along the rows,
    ready for ``plt.pcolormesh(xs, ys, image)`` or ``imshow(image, origin="lower")``.
    """

    xs: torch.Tensor
    ys: torch.Tensor
    points: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``, the shape of :meth:`as_image` output."""
        return (len(self.ys), len(self.xs))

    def as_image(self, values: Any) -> Any:
        """Reshape per-point values ``(ny·nx, ...)`` (tensor or array) to ``(ny, nx, ...)``."""
        return values.reshape(*self.shape, *values.shape[1:])


def grid(
    xlim: tuple[float, float] = (-2.0, 2.0),
    ylim: tuple[float, float] = (-2.0, 2.0),
    steps: int | tuple[int, int] = 200,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Grid:
    """A :class:`Grid` of evenly spaced points including the limits; ``steps`` is n or (nx, ny).

    The default window ``[-2, 2]²`` frames the XOR points ``(±1, ±1)`` of rep-spectral Fig. 3.
    """
    nx, ny = (steps, steps) if isinstance(steps, int) else steps
    if nx < 1 or ny < 1:
        raise ValueError(f"steps must be positive; got {steps}")
    xs = torch.linspace(xlim[0], xlim[1], nx, dtype=dtype, device=device)
    ys = torch.linspace(ylim[0], ylim[1], ny, dtype=dtype, device=device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    return Grid(xs=xs, ys=ys, points=points)


@torch.no_grad()
def decision_map(
    predict: Callable[[torch.Tensor], Any],
    grid: Grid,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Predicted label at every grid point as an ``(ny, nx)`` image (rep-spectral Fig. 3a).

    ``predict`` maps ``(B, 2)`` points to labels ``(B,)`` or class scores ``(B, K)`` (argmax
    taken); the class regions and their boundaries are then drawn with e.g. ``contourf``.
    ``batch_size`` bounds how many points go through ``predict`` at once (default: all).
    """
    points = grid.points
    n = points.shape[0]
    step = n if batch_size is None else int(batch_size)
    if step < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    labels = [
        labels_from_output(predict(points[start : start + step])).reshape(-1)
        for start in range(0, n, step)
    ]
    return grid.as_image(torch.cat(labels))
