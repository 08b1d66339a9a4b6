"""Non-learned token-to-bin assignments for the KMeans- and FPS-student ablations (per cloud, static
codebook, presampling).

Both return hard assignments (B, c) with values in [0, s) computed without gradient, from which
the student builds the same one-hot CAM as DSO. Everything is batched PyTorch (exportable loops).

The per-cloud ones are registered in :data:`ASSIGNMENTS` as ``fn(tokens, centres, s, weight, iters) ->
(index (B, c), kept tokens (B, s) or None)``: a student kind that is DSO with another assignment
registers one function here and the kind (see :mod:`foundry3d.models.students`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from foundry3d.ops.fps import farthest_point_sample
from foundry3d.ops.group import gather_points
from foundry3d.ops.knn import square_distance
from foundry3d.registry import Registry

Assignment = Callable[[Tensor, Tensor, int, Tensor, int], tuple[Tensor, Tensor | None]]
ASSIGNMENTS: Registry[Assignment] = Registry("token assignment")


def register_assignment(name: str, centres: bool = False) -> Callable[[Assignment], Assignment]:
    """Decorator: a per-cloud assignment under ``name`` (``centres``: it reads the patch centres, which the
    caller must then pass)."""

    def deco(fn: Assignment) -> Assignment:
        return ASSIGNMENTS.register(name, fn, centres=centres)

    return deco


def needs_centres(name: str) -> bool:
    """Whether the assignment ``name`` reads the patch centres (the caller must pass them)."""
    return bool(name in ASSIGNMENTS and ASSIGNMENTS.info(name).get("centres"))


@torch.no_grad()
def kmeans_assign(x: Tensor, k: int, iters: int = 10, weight: Tensor | None = None) -> Tensor:
    """The cluster (B, c) of each token of ``x`` (B, c, d) after :func:`kmeans_fit` on each cloud."""
    return square_distance(x.float(), kmeans_fit(x, k, iters, weight)).argmin(-1)


@torch.no_grad()
def kmeans_fit(x: Tensor, k: int, iters: int = 10, weight: Tensor | None = None) -> Tensor:
    """k-means centres (B, k, d) of each set of points ``x`` (B, c, d): k-means++ seeding (deterministic: the
    farthest candidate by D^2, starting from the point nearest the mean), then ``iters`` Lloyd steps.
    Empty clusters keep their previous centre."""
    b, c, _ = x.shape
    x = x.float()
    w = torch.ones(b, c, dtype=x.dtype, device=x.device) if weight is None else weight.float()
    mean = (x * w.unsqueeze(-1)).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1.0)
    first = square_distance(mean, x)[:, 0].masked_fill(w < 0.5, float("inf")).argmin(-1)
    centres = [gather_points(x, first[:, None])]
    d2 = square_distance(centres[0], x)[:, 0]
    for _ in range(1, k):
        nxt = d2.masked_fill(w < 0.5, -1.0).argmax(-1)
        cen = gather_points(x, nxt[:, None])
        centres.append(cen)
        d2 = torch.minimum(d2, square_distance(cen, x)[:, 0])
    cen = torch.cat(centres, 1)  # (B, k, d)
    for _ in range(iters):
        index = square_distance(x, cen).argmin(-1)
        onehot = torch.nn.functional.one_hot(index, k).to(x.dtype) * w.unsqueeze(-1)
        count = onehot.sum(1)
        new = onehot.transpose(1, 2) @ x / count.clamp_min(1.0).unsqueeze(-1)
        cen = torch.where((count > 0).unsqueeze(-1), new, cen)
    return cen


@torch.no_grad()
def fps_assign(centres: Tensor, k: int) -> Tensor:
    """``k`` farthest-point-sampled patch centres per cloud; each token goes to the nearest one in xyz."""
    return fps_pick_assign(centres, k)[1]


@torch.no_grad()
def fps_pick_assign(centres: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(the ``k`` FPS-picked tokens (B, k), the nearest picked token's slot of every token (B, c)); a picked
    token is its own nearest, so every slot has a member."""
    pick = farthest_point_sample(centres.float(), k)
    return pick, square_distance(centres.float(), gather_points(centres.float(), pick)).argmin(-1)


# ------------------------------------------------------------------ the registered per-cloud assignments
@register_assignment("kmeans")
def _kmeans_tokens(tokens: Tensor, centres: Tensor, s: int, weight: Tensor, iters: int) -> tuple[Tensor, Any]:
    return kmeans_assign(tokens, s, iters, weight), None


@register_assignment("kmeans_xyz", centres=True)
def _kmeans_centres(tokens: Tensor, centres: Tensor, s: int, weight: Tensor, iters: int) -> tuple[Tensor, Any]:
    """Clusters of the patch centres: where a token sits, not what it says."""
    return kmeans_assign(centres, s, iters, weight), None


@register_assignment("fps", centres=True)
def _fps(tokens: Tensor, centres: Tensor, s: int, weight: Tensor, iters: int) -> tuple[Tensor, Any]:
    return fps_assign(centres, s), None


@register_assignment("fps_presample", centres=True)
def _fps_presample(tokens: Tensor, centres: Tensor, s: int, weight: Tensor, iters: int) -> tuple[Tensor, Any]:
    pick, index = fps_pick_assign(centres, s)
    return index, pick
