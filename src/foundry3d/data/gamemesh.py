"""Readers for the game-asset mesh formats of the pretraining corpus (no game engine needed).

Each reader takes the file's bytes and returns triangle meshes as ``(vertices (V, 3) float64,
faces (F, 3) int64)``; a file that does not hold a readable mesh raises :class:`MeshError`.

* **PMD** (0 A.D., ``*.pmd``): ``PSMD`` magic, version 1-4, vertices with position, normal, UV
  sets and bone blends, then u16 triangles. Positions are the rest pose, Y up.
* **G3D** (MegaGlest, ``*.g3d``): ``G3D`` + version 4, a list of morph meshes. Each mesh stores
  ``frameCount`` vertex frames; the first frame is the rest pose. Z up in the files (Blender).
* **PIE** (Warzone 2100, ``*.pie``, text): ``POINTS`` and ``POLYGONS`` per ``LEVEL``; the first
  level is the model (later levels are turrets / sub-parts drawn with it). Y up.
"""

from __future__ import annotations

import re
import struct

import numpy as np

from foundry3d.data.mesh import MeshError


def _check(vertices: np.ndarray, faces: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    if len(faces) == 0:
        raise MeshError(f"{what}: no triangles")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshError(f"{what}: face index out of range ({int(faces.max())} >= {len(vertices)} vertices)")
    if not np.isfinite(vertices).all():
        raise MeshError(f"{what}: non-finite vertex coordinates")
    return vertices.astype(np.float64), faces.astype(np.int64)


def read_pmd(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """0 A.D. PMD model -> (vertices, faces)."""
    if len(data) < 20 or data[:4] != b"PSMD":
        raise MeshError("not a PMD file (no PSMD magic)")
    version, _size = struct.unpack_from("<II", data, 4)
    if not 1 <= version <= 4:
        raise MeshError(f"unsupported PMD version {version}")
    off = 12
    (nv,) = struct.unpack_from("<I", data, off)
    off += 4
    nuv = 1
    if version >= 4:
        (nuv,) = struct.unpack_from("<I", data, off)
        off += 4
    # vertex: position 3f, normal 3f, nuv x 2f, 4 bone bytes, 4 weights
    stride = 12 + 12 + 8 * nuv + 4 + 16
    end = off + nv * stride
    if end + 4 > len(data):
        raise MeshError("PMD truncated in the vertex block")
    raw = np.frombuffer(data, np.uint8, nv * stride, off).reshape(nv, stride)
    vertices = raw[:, :12].copy().view("<f4").reshape(nv, 3)
    off = end
    (nf,) = struct.unpack_from("<I", data, off)
    off += 4
    if off + 6 * nf > len(data):
        raise MeshError("PMD truncated in the face block")
    faces = np.frombuffer(data, "<u2", 3 * nf, off).reshape(nf, 3)
    return _check(vertices, faces, "PMD")


def read_g3d(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """MegaGlest G3D v4 model -> (vertices of the first frame of every mesh, faces)."""
    if len(data) < 7 or data[:3] != b"G3D":
        raise MeshError("not a G3D file (no G3D magic)")
    if data[3] != 4:
        raise MeshError(f"unsupported G3D version {data[3]} (only version 4 is read)")
    (mesh_count,) = struct.unpack_from("<H", data, 4)
    off = 7  # file header (4) + model header: u16 meshCount, u8 type
    verts, faces, base = [], [], 0
    header = struct.Struct("<64sIII3f3fffII")
    for _ in range(mesh_count):
        if off + header.size > len(data):
            raise MeshError("G3D truncated in a mesh header")
        fields = header.unpack_from(data, off)
        frames, nv, ni, textures = fields[1], fields[2], fields[3], fields[-1]
        off += header.size
        off += 64 * bin(textures).count("1")  # one 64-byte path per texture flag
        need = 4 * (2 * frames * nv * 3 + (nv * 2 if textures else 0) + ni)
        if frames < 1 or off + need > len(data):
            raise MeshError("G3D truncated in mesh data")
        v = np.frombuffer(data, "<f4", nv * 3, off).reshape(nv, 3)  # first frame
        off += 4 * frames * nv * 3 * 2  # vertex frames, then normal frames
        if textures:
            off += 4 * nv * 2
        idx = np.frombuffer(data, "<u4", ni, off).reshape(-1, 3)
        off += 4 * ni
        verts.append(v)
        faces.append(idx.astype(np.int64) + base)
        base += nv
    if not verts:
        raise MeshError("G3D holds no mesh")
    return _check(np.concatenate(verts), np.concatenate(faces), "G3D")


_NUM = re.compile(r"^-?\d")


def read_pie(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Warzone 2100 PIE (versions 2-4) -> (vertices, faces) of the first LEVEL."""
    lines = data.decode("latin-1").splitlines()
    if not lines or not lines[0].strip().upper().startswith("PIE"):
        raise MeshError("not a PIE file (first line is not 'PIE n')")
    points: list[list[float]] = []
    polys: list[list[int]] = []
    level = 0
    i = 0
    while i < len(lines):
        words = lines[i].split()
        i += 1
        if not words:
            continue
        key = words[0].upper()
        if key == "LEVEL":
            level += 1
            if level > 1:
                break
        elif key == "POINTS" and len(words) > 1:
            n = int(words[1])
            for line in lines[i : i + n]:
                points.append([float(x) for x in line.split()[:3]])
            i += n
        elif key == "POLYGONS" and len(words) > 1:
            n = int(words[1])
            for line in lines[i : i + n]:
                w = line.split()
                k = int(w[1])
                idx = [int(x) for x in w[2 : 2 + k]]
                polys.extend([idx[0], idx[j], idx[j + 1]] for j in range(1, k - 1))  # fan
            i += n
    if not points:
        raise MeshError("PIE has no POINTS")
    return _check(np.asarray(points, np.float64), np.asarray(polys, np.int64).reshape(-1, 3), "PIE")
