"""Meshes to point clouds: area-weighted surface sampling with per-face labels, unit-sphere fit."""

from __future__ import annotations

import zlib

import numpy as np

from foundry3d.errors import Foundry3DError


class MeshError(Foundry3DError, ValueError):
    """A mesh that cannot be sampled (no faces, zero area, non-finite coordinates)."""


def shape_seed(seed: int, key: str) -> int:
    """Per-shape seed that does not depend on processing order or worker count."""
    return (zlib.crc32(key.encode()) ^ (seed * 0x9E3779B1)) & 0xFFFFFFFF


def sample_labelled_surface(
    vertices: np.ndarray, faces: np.ndarray, face_labels: np.ndarray, count: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points sampled uniformly by area, with the label of the face each came from."""
    if len(faces) == 0:
        raise MeshError("mesh has no faces")
    if not np.isfinite(vertices).all():
        raise MeshError("mesh has non-finite vertex coordinates")
    import trimesh  # with scipy: only when a mesh is sampled, so reading built datasets never imports it

    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False, validate=False)
    area = mesh.area_faces
    if not np.isfinite(area).all() or area.sum() <= 0:
        raise MeshError("mesh has zero surface area")
    points, face_idx = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return np.asarray(points, np.float64), np.asarray(face_labels)[face_idx]


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Centre on the mean and scale so the farthest point has norm 1 (``pc_normalize``)."""
    c = points - points.mean(0, keepdims=True)
    r = np.sqrt((c**2).sum(1)).max()
    if not np.isfinite(r) or r <= 0:
        raise MeshError("degenerate cloud (all points coincide)")
    return c / r
