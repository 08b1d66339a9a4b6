"""Batched point-cloud transforms with explicit random generators.

Every random draw is per sample and comes from the ``generator`` argument, so training steps are
reproducible and a global batch split across processes gets exactly the augmentations it would
get in one process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from foundry3d.data.base import Sample
from foundry3d.errors import InputError
from foundry3d.ops.fps import farthest_point_sample

Sampling = Literal["first", "random", "fps"]


@dataclass
class AugmentConfig:
    """Training augmentations, applied in this order (then centre + unit sphere if ``normalize``)."""

    scale: tuple[float, float] | None = (0.8, 1.2)
    anisotropic: bool = True
    flip_xz: bool = True  # random sign flips of x and z (Point-JEPA's scale symmetries)
    rotate_up: bool = True  # random rotation about the up (y) axis
    translate: float = 0.0
    jitter: float = 0.0
    normalize: bool = True


def subsample_indices(n_have: int, n_want: int, method: Sampling, generator: torch.Generator | None) -> Tensor:
    """Indices of ``n_want`` of ``n_have`` points; with fewer points, sample with replacement."""
    if n_have >= n_want:
        if method == "first":
            return torch.arange(n_want)
        if method == "random":
            return torch.randperm(n_have, generator=generator)[:n_want]
        raise InputError("fps subsampling is batched: use subsample_batch")
    extra = torch.randint(n_have, (n_want - n_have,), generator=generator)
    return torch.cat([torch.arange(n_have), extra])


def collate(
    samples: list[Sample],
    num_points: int,
    method: Sampling = "first",
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Stack samples into a batch of ``num_points`` each: points, labels, and parts when present.

    "first" takes the first N points: our datasets store i.i.d. surface samples, so this is a
    uniform random subset that is the same on every call. "fps" runs farthest point sampling
    (start index 0) on each cloud; "random" draws a fresh subset.
    """
    pts, parts = [], []
    for s in samples:
        p = torch.from_numpy(np.ascontiguousarray(s.points, dtype=np.float32))
        if method == "fps" and len(p) >= num_points:
            idx = farthest_point_sample(p[None], num_points)[0]
        else:
            idx = subsample_indices(len(p), num_points, "first" if method == "fps" else method, generator)
        pts.append(p[idx])
        if s.parts is not None:
            parts.append(torch.from_numpy(np.asarray(s.parts, np.int64))[idx])
    out = {
        "points": torch.stack(pts),
        "labels": torch.tensor([s.label for s in samples], dtype=torch.long),
        "categories": torch.tensor([s.category for s in samples], dtype=torch.long),
    }
    if parts and len(parts) == len(samples):
        out["parts"] = torch.stack(parts)
    return out


def normalize(points: Tensor) -> Tensor:
    """Centre each cloud on its mean and scale it into the unit sphere."""
    c = points - points.mean(1, keepdim=True)
    r = c.norm(dim=-1).amax(1, keepdim=True).clamp_min(1e-9)
    return c / r.unsqueeze(-1)


def random_scale(
    points: Tensor, low: float, high: float, anisotropic: bool, flip_xz: bool, generator: torch.Generator
) -> Tensor:
    """Scale each cloud by a random factor (per axis when anisotropic; optionally mirrored in x and z), Point-MAE's
    training augmentation."""
    b = points.shape[0]
    shape = (b, 1, 3) if anisotropic else (b, 1, 1)
    s = low + (high - low) * torch.rand(shape, generator=generator)
    s = s.expand(b, 1, 3).clone()
    if flip_xz:
        sign = torch.where(torch.rand(b, 1, 3, generator=generator) < 0.5, -1.0, 1.0)
        sign[..., 1] = 1.0
        s = s * sign
    return points * s.to(points)


def rotate_up(points: Tensor, generator: torch.Generator) -> Tensor:
    """Random rotation about the y axis, one angle per cloud."""
    b = points.shape[0]
    a = (torch.rand(b, generator=generator) * 2 - 1) * math.pi
    c, s = torch.cos(a), torch.sin(a)
    z, o = torch.zeros_like(a), torch.ones_like(a)
    rot = torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(b, 3, 3).to(points)
    return points @ rot.transpose(1, 2)


def translate(points: Tensor, shift: float, generator: torch.Generator) -> Tensor:
    """Shift each cloud by a random offset in [-shift, shift]^3."""
    t = (torch.rand(points.shape[0], 1, 3, generator=generator) * 2 - 1) * shift
    return points + t.to(points)


def jitter(points: Tensor, sigma: float, generator: torch.Generator, clip: float | None = None) -> Tensor:
    """Add Gaussian noise to every point (clipped when ``clip`` is set)."""
    noise = torch.randn(points.shape, generator=generator) * sigma
    if clip is not None:
        noise = noise.clamp(-clip, clip)
    return points + noise.to(points)


def augment(points: Tensor, cfg: AugmentConfig, generator: torch.Generator) -> Tensor:
    """The training augmentation a config asks for, in a fixed order and from one generator (so a resumed run draws the
    same)."""
    if cfg.scale is not None:
        points = random_scale(points, cfg.scale[0], cfg.scale[1], cfg.anisotropic, cfg.flip_xz, generator)
    if cfg.normalize:
        points = normalize(points)
    if cfg.rotate_up:
        points = rotate_up(points, generator)
    if cfg.translate:
        points = translate(points, cfg.translate, generator)
    if cfg.jitter:
        points = jitter(points, cfg.jitter, generator, clip=5 * cfg.jitter)
    return points
