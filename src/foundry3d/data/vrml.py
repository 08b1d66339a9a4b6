"""Reader for the VRML 2.0 files of ``kicad-packages3d`` (no existing library reads them).

KiCad StepUp writes every solid as a ``Shape`` with an ``IndexedFaceSet``: a ``coordIndex`` list
of polygons (vertex indices, each polygon ended by -1) and a ``Coordinate`` point list, plus an
appearance whose material is either defined (``material DEF NAME Material {...}``) or reused
(``material USE NAME``). Shapes with no geometry only define materials. Polygons are fan
triangulated. Coordinates are Z-up in units of 0.1 inch.
"""

from __future__ import annotations

import re

import numpy as np

from foundry3d.errors import Foundry3DError

_SHAPE = re.compile(rb"\bShape\s*\{")
_MATERIAL = re.compile(rb"material\s+(?:DEF|USE)\s+([^\s{}]+)")
_INDEX = re.compile(rb"coordIndex\s*\[([^\]]*)\]")
_POINT = re.compile(rb"point\s*\[([^\]]*)\]")


class VRMLError(Foundry3DError, ValueError):
    """A file that is not a readable KiCad VRML model."""


def _parse_numbers(blobs: list[bytes], what: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """All numbers of several VRML lists in one conversion, and how many each list held."""
    tokens: list[bytes] = []
    counts = np.empty(len(blobs), np.int64)
    for i, blob in enumerate(blobs):
        t = blob.replace(b",", b" ").split()
        counts[i] = len(t)
        tokens.extend(t)
    try:
        values = np.array(tokens, dtype=np.float64) if tokens else np.zeros(0)
    except ValueError as e:
        raise VRMLError(f"{source}: non-numeric value in a {what} list: {e}") from e
    return values, counts


def _triangulate(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fan-triangulate polygons given as runs of indices each ended by -1.

    Returns the triangles (T, 3) and, for each triangle, the number of its polygon."""
    if index.size == 0:
        return np.zeros((0, 3), np.int64), np.zeros(0, np.int64)
    ends = np.flatnonzero(index == -1)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts
    fans = np.maximum(lengths - 2, 0)  # triangles per polygon
    poly = np.repeat(np.arange(len(starts)), fans)
    k = np.arange(fans.sum()) - np.repeat(np.cumsum(fans) - fans, fans) + 1  # 1..len-2 within each polygon
    first = starts[poly]
    tris = np.stack([index[first], index[first + k], index[first + k + 1]], 1)
    return tris, poly


def read_mesh(data: bytes, source: str = "<bytes>") -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The whole file as one mesh: vertices (V, 3), triangles (F, 3), the material index of each
    triangle (F,) and the material names. Shapes without geometry only define materials."""
    if not data.lstrip().startswith(b"#VRML"):
        raise VRMLError(f"{source}: not a VRML file (no #VRML header)")
    names: list[str] = []
    mats: list[int] = []
    idx_blobs: list[bytes] = []
    pt_blobs: list[bytes] = []
    for piece in _SHAPE.split(data)[1:]:
        idx_m = _INDEX.search(piece)
        pts_m = _POINT.search(piece)
        if idx_m is None or pts_m is None:
            continue
        mat = _MATERIAL.search(piece)
        name = mat.group(1).decode("latin-1") if mat else "none"
        if name not in names:
            names.append(name)
        mats.append(names.index(name))
        idx_blobs.append(idx_m.group(1))
        pt_blobs.append(pts_m.group(1))
    points, n_coords = _parse_numbers(pt_blobs, "point", source)
    index, n_index = _parse_numbers(idx_blobs, "coordIndex", source)
    if (n_coords % 3).any():
        raise VRMLError(f"{source}: a point list does not hold a multiple of 3 values")
    n_verts = n_coords // 3
    index = index.astype(np.int64)
    shape_of_entry = np.repeat(np.arange(len(n_index)), n_index)
    # Close every shape's list with -1 so that polygons never run across shapes.
    open_end = np.flatnonzero((n_index > 0) & (np.append(index, 0)[np.cumsum(n_index) - 1] != -1))
    if len(open_end):
        pos = np.cumsum(n_index)[open_end]
        index = np.insert(index, pos, -1)
        shape_of_entry = np.insert(shape_of_entry, pos, open_end)
    offsets = np.cumsum(n_verts) - n_verts
    valid = index >= 0
    local = index.copy()
    if valid.any() and (index[valid] >= n_verts[shape_of_entry[valid]]).any():
        raise VRMLError(f"{source}: a face refers to a vertex outside its shape's point list")
    local[valid] = index[valid] + offsets[shape_of_entry[valid]]
    tris, poly = _triangulate(local)
    ends = np.flatnonzero(local == -1)
    face_shape = shape_of_entry[ends][poly] if len(tris) else np.zeros(0, np.int64)
    face_mat = np.asarray(mats, np.int64)[face_shape] if len(tris) else np.zeros(0, np.int64)
    return points.reshape(-1, 3), tris, face_mat, names
