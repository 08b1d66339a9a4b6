"""Reader for the VRML 2.0 files of ``kicad-packages3d`` (no existing library reads them).

KiCad StepUp writes every solid as a ``Shape`` with an ``IndexedFaceSet``: a ``coordIndex`` list
of polygons (vertex indices, each polygon ended by -1) and a ``Coordinate`` point list, plus an
appearance whose material is either defined (``material DEF NAME Material {...}``) or reused
(``material USE NAME``). Shapes with no geometry only define materials. Polygons are fan
triangulated. Coordinates are Z-up in units of 0.1 inch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_SHAPE = re.compile(rb"\bShape\s*\{")
_MATERIAL = re.compile(rb"material\s+(?:DEF|USE)\s+([^\s{}]+)")
_INDEX = re.compile(rb"coordIndex\s*\[([^\]]*)\]")
_POINT = re.compile(rb"point\s*\[([^\]]*)\]")


class VRMLError(ValueError):
    """A file that is not a readable KiCad VRML model."""


@dataclass
class VRMLShape:
    material: str
    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64


def _numbers(blob: bytes, dtype: type) -> np.ndarray:
    text = blob.replace(b",", b" ").split()
    if not text:
        return np.zeros(0, dtype=dtype)
    try:
        return np.array(text, dtype=np.float64).astype(dtype)
    except ValueError as e:
        raise VRMLError(f"non-numeric value in a VRML list: {e}") from e


def _triangulate(index: np.ndarray) -> np.ndarray:
    """Fan-triangulate polygons given as runs of indices ended by -1."""
    if index.size == 0:
        return np.zeros((0, 3), np.int64)
    if index[-1] != -1:
        index = np.append(index, -1)
    ends = np.flatnonzero(index == -1)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts
    tris = []
    tri_mask = lengths == 3
    if tri_mask.all():
        return index[np.stack([starts, starts + 1, starts + 2], 1)]
    for s, n in zip(starts, lengths):
        if n < 3:
            continue
        k = np.arange(1, n - 1)
        tris.append(np.stack([np.full(n - 2, index[s]), index[s + k], index[s + k + 1]], 1))
    return np.concatenate(tris) if tris else np.zeros((0, 3), np.int64)


def parse_vrml(data: bytes, source: str = "<bytes>") -> list[VRMLShape]:
    """All shapes with geometry in a KiCad VRML file, each with its material name."""
    if not data.lstrip().startswith(b"#VRML"):
        raise VRMLError(f"{source}: not a VRML file (no #VRML header)")
    pieces = _SHAPE.split(data)[1:]
    shapes = []
    for piece in pieces:
        idx_m = _INDEX.search(piece)
        pts_m = _POINT.search(piece)
        if idx_m is None or pts_m is None:
            continue
        mat = _MATERIAL.search(piece)
        name = mat.group(1).decode("latin-1") if mat else "none"
        verts = _numbers(pts_m.group(1), np.float64)
        if verts.size % 3:
            raise VRMLError(f"{source}: a point list has {verts.size} values, not a multiple of 3")
        verts = verts.reshape(-1, 3)
        faces = _triangulate(_numbers(idx_m.group(1), np.int64))
        if faces.size == 0:
            continue
        if faces.min() < 0 or faces.max() >= len(verts):
            raise VRMLError(f"{source}: a face refers to a vertex outside the {len(verts)} points")
        shapes.append(VRMLShape(name, verts, faces))
    return shapes


def read_vrml(path: str | Path) -> list[VRMLShape]:
    p = Path(path)
    return parse_vrml(p.read_bytes(), str(p))
