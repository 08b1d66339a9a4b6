"""Farthest point sampling in pure PyTorch.

A plain loop of ``k`` vectorised steps: no compiled extension, batched, and exportable to ONNX
(the loop unrolls for a fixed ``k``). The start index is fixed by default so that the same cloud
always gives the same centres (teacher and student see identical groups); ``start="random"``
reproduces Point-JEPA's random start.
"""

from __future__ import annotations

import torch
from torch import Tensor

from foundry3d.errors import InputError


def farthest_point_sample(
    points: Tensor,
    k: int,
    start: int | str | Tensor = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Indices (B, k) of ``k`` farthest-point samples of ``points`` (B, N, D); D is 3 for clouds.

    ``start`` is a point index (default 0, like pointnet2's CUDA kernel), a LongTensor (B,) of
    per-cloud start indices, or ``"random"`` for a random start per cloud drawn from ``generator``.
    FPS is prefix-consistent: the first ``m`` of ``k`` samples are the ``m``-sample FPS.
    """
    if points.dim() != 3 or points.shape[-1] < 1:
        raise InputError(f"points must have shape (B, N, D), got {tuple(points.shape)}")
    b, n = points.shape[:2]
    if not 1 <= k <= n:
        raise InputError(f"cannot sample k={k} farthest points from a cloud of {n} points")
    pts = points.detach().float()  # indices carry no gradient (and out= ops refuse autograd inputs)
    if isinstance(start, Tensor):
        if start.shape != (b,) or start.dtype != torch.long or bool((start < 0).any() | (start >= n).any()):
            raise InputError(f"start tensor must be (B,)={b} long indices in [0, {n})")
        far = start.to(points.device)
    elif start == "random":
        far = torch.randint(n, (b,), generator=generator, device="cpu").to(points.device)
    elif isinstance(start, int) and 0 <= start < n:
        far = torch.full((b,), start, dtype=torch.long, device=points.device)
    else:
        raise InputError(f"start must be a point index in [0, {n}) or 'random', got {start!r}")
    d = pts.shape[-1]
    idx = torch.empty(b, k, dtype=torch.long, device=points.device)
    min_d = torch.full((b, n), float("inf"), device=points.device)
    for i in range(k):
        idx[:, i] = far
        centre = torch.gather(pts, 1, far.view(b, 1, 1).expand(b, 1, d))
        torch.minimum(min_d, (pts - centre).square_().sum(-1), out=min_d)
        far = min_d.argmax(-1)
    return idx
