"""Procedural labelled clouds (sphere, box, cylinder, cone, torus, ...) for tests and demos.

Deterministic for a given (split, index): no files, no downloads. Each shape gets a random
anisotropic size and orientation and points sampled uniformly on its surface; part labels mark
geometric regions (e.g. cylinder side vs caps) so part segmentation can be exercised too.
"""

from __future__ import annotations

import numpy as np
from typing_extensions import override

from foundry3d.data.base import PartSpec, PointCloudDataset, Sample

CLASSES = ["sphere", "box", "cylinder", "cone", "torus", "capsule"]
PARTS = ["side", "cap", "edge"]


def _sphere(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, (v[:, 1] > 0.5).astype(np.int64)


def _box(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    p = rng.uniform(-1, 1, size=(n, 3))
    axis = rng.integers(0, 3, n)
    p[np.arange(n), axis] = np.sign(rng.uniform(-1, 1, n))
    return p, (axis == 1).astype(np.int64)


def _cylinder(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    t = rng.uniform(0, 2 * np.pi, n)
    cap = rng.uniform(size=n) < 0.3
    y = np.where(cap, np.sign(rng.uniform(-1, 1, n)), rng.uniform(-1, 1, n))
    r = np.where(cap, np.sqrt(rng.uniform(size=n)), 1.0)
    return np.stack([r * np.cos(t), y, r * np.sin(t)], 1), cap.astype(np.int64)


def _cone(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    t = rng.uniform(0, 2 * np.pi, n)
    base = rng.uniform(size=n) < 0.3
    h = np.sqrt(rng.uniform(size=n))
    r = np.where(base, np.sqrt(rng.uniform(size=n)), h)
    y = np.where(base, -1.0, 1 - 2 * h)
    return np.stack([r * np.cos(t), y, r * np.sin(t)], 1), base.astype(np.int64)


def _torus(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    u, v = rng.uniform(0, 2 * np.pi, (2, n))
    big, small = 1.0, 0.35
    p = np.stack([(big + small * np.cos(v)) * np.cos(u), small * np.sin(v), (big + small * np.cos(v)) * np.sin(u)], 1)
    return p, (np.cos(v) > 0).astype(np.int64) * 2


def _capsule(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    p, _ = _sphere(n, rng)
    side = rng.uniform(size=n) < 0.5
    t = rng.uniform(0, 2 * np.pi, n)
    p = np.where(side[:, None], np.stack([np.cos(t), rng.uniform(-1, 1, n), np.sin(t)], 1), p)
    p[~side, 1] += np.sign(p[~side, 1])
    return p * 0.5, (~side).astype(np.int64)


_MAKERS = [_sphere, _box, _cylinder, _cone, _torus, _capsule]


def make_shape(label: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One generated cloud of class ``label`` with its part labels: a seeded primitive, scaled, rotated and normalised
    (for tests and tiny recipes)."""
    rng = np.random.default_rng(seed)
    p, parts = _MAKERS[label](n, rng)
    p = p * rng.uniform(0.5, 1.5, size=3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    p = p @ q.T + rng.normal(scale=0.05, size=(1, 3))
    p = p - p.mean(0)
    p /= np.linalg.norm(p, axis=1).max()
    return p.astype(np.float32), parts


class SyntheticShapes(PointCloudDataset):
    """``per_class`` clouds of each of 6 primitive classes with ``num_points`` points."""

    def __init__(self, split: str = "train", per_class: int = 20, num_points: int = 1024, seed: int = 0) -> None:
        self.name = "synthetic"
        self.split = split
        self.classes = list(CLASSES)
        self.per_class = per_class
        self.num_points = num_points
        self.seed = seed + {"train": 0, "test": 1_000_003, "pool": 2_000_003}.get(split, 3_000_017)
        category_parts = {i: [0, 1] if i != 4 else [0, 2] for i in range(len(CLASSES))}
        self.part_spec = PartSpec(categories=list(CLASSES), parts=list(PARTS), category_parts=category_parts)
        self.protocol = {"num_points": num_points, "sampling": "first"}
        self.version = "synthetic-v1"

    def __len__(self) -> int:
        return self.per_class * len(CLASSES)

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < len(self):
            raise IndexError(i)
        label = i % len(CLASSES)
        pts, parts = make_shape(label, self.num_points, self.seed + i)
        return Sample(points=pts, label=label, parts=parts, category=label, name=f"synthetic/{self.split}/{i}")

    @override
    def labels(self) -> np.ndarray:
        return np.arange(len(self)) % len(CLASSES)
