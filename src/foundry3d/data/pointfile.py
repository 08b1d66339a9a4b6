"""Users' own point-cloud files: ``.ply``, ``.pcd``, ``.las`` / ``.laz``, ``.xyz`` / ``.txt`` / ``.csv``,
``.npy`` / ``.npz``, of any size, read into one (N, 3) float32 array of coordinates.

Libraries where they exist (``plyfile`` for PLY, ``laspy`` with the ``lazrs`` backend for LAS/LAZ);
PCD (ASCII and binary; not ``binary_compressed``) and the text formats are read here. Every
failure is a :class:`PointFileError` naming the file and what was expected.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from foundry3d.data.base import DatasetError

SUFFIXES = (".ply", ".pcd", ".las", ".laz", ".xyz", ".txt", ".csv", ".pts", ".npy", ".npz")


class PointFileError(DatasetError):
    """A point-cloud file that cannot be read as N x 3 finite coordinates."""


def read_points(path: str | Path) -> np.ndarray:
    """Coordinates (N, 3) float32 of a point-cloud file; checked for emptiness and finiteness."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PointFileError(f"{p}: no such file")
    suffix = p.suffix.lower()
    readers = {
        ".ply": _ply,
        ".pcd": _pcd,
        ".las": _las,
        ".laz": _las,
        ".npy": _npy,
        ".npz": _npz,
    }
    reader = readers.get(suffix, _text if suffix in (".xyz", ".txt", ".csv", ".pts") else None)
    if reader is None:
        raise PointFileError(f"{p}: unknown point-cloud format {suffix!r}; readable: {', '.join(SUFFIXES)}")
    try:
        pts = reader(p)
    except PointFileError:
        raise
    except Exception as e:  # each library raises its own types for malformed files
        raise PointFileError(f"{p}: not a readable {suffix[1:].upper()} file ({type(e).__name__}: {e})") from e
    pts = np.asarray(pts)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise PointFileError(f"{p}: expected N x 3 coordinates, got an array of shape {pts.shape}")
    if len(pts) == 0:
        raise PointFileError(f"{p}: the file holds no points")
    bad = ~np.isfinite(pts).all(1)
    if bad.any():
        raise PointFileError(f"{p}: {int(bad.sum())} of {len(pts)} points have NaN or infinite coordinates")
    return pts.astype(np.float32, copy=False)


def _ply(p: Path) -> np.ndarray:
    from plyfile import PlyData

    ply = PlyData.read(str(p))
    if "vertex" not in ply:
        raise PointFileError(f"{p}: PLY file without a 'vertex' element")
    v = ply["vertex"]
    names = v.data.dtype.names or ()
    if not {"x", "y", "z"} <= set(names):
        raise PointFileError(f"{p}: PLY vertices have properties {list(names)}, expected x, y, z")
    return np.stack([np.asarray(v[c], np.float64) for c in "xyz"], 1)


def _las(p: Path) -> np.ndarray:
    import laspy

    las = laspy.read(str(p))
    return np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], 1)


def _npy(p: Path) -> np.ndarray:
    a = np.load(p, allow_pickle=False)
    return a[:, :3] if a.ndim == 2 and a.shape[1] >= 3 else a


def _npz(p: Path) -> np.ndarray:
    with np.load(p, allow_pickle=False) as z:
        for key in ("points", "xyz", "pos", "coords", *z.files):
            if key in z.files:
                a = z[key]
                return a[:, :3] if a.ndim == 2 and a.shape[1] >= 3 else a
    raise PointFileError(f"{p}: empty .npz")


def _text(p: Path) -> np.ndarray:
    delim = "," if p.suffix.lower() == ".csv" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an empty file: reported below as "no points"
        a = np.loadtxt(p, delimiter=delim, ndmin=2, comments=("#", "//"))
    if a.shape[1] < 3:
        raise PointFileError(f"{p}: expected at least 3 columns (x y z), found {a.shape[1]}")
    return a[:, :3]


_PCD_TYPES = {
    ("F", 4): "f4",
    ("F", 8): "f8",
    ("I", 1): "i1",
    ("I", 2): "i2",
    ("I", 4): "i4",
    ("I", 8): "i8",
    ("U", 1): "u1",
    ("U", 2): "u2",
    ("U", 4): "u4",
    ("U", 8): "u8",
}


def _pcd(p: Path) -> np.ndarray:
    raw = p.read_bytes()
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise PointFileError(f"{p}: PCD header without a DATA line")
        line = raw[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        header[key.upper()] = vals
        if key.upper() == "DATA":
            break
    fields = header.get("FIELDS", [])
    if not {"x", "y", "z"} <= set(fields):
        raise PointFileError(f"{p}: PCD fields {fields}, expected x, y, z")
    sizes = [int(s) for s in header.get("SIZE", [])]
    types = header.get("TYPE", [])
    counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
    n = int(header.get("POINTS", header.get("WIDTH", ["0"]))[0])
    mode = header["DATA"][0].lower()
    cols = {f: i for i, f in enumerate(fields)}
    if mode == "ascii":
        text = raw[pos:].decode("ascii", errors="replace")
        a = np.loadtxt(text.splitlines(), ndmin=2) if text.strip() else np.zeros((0, sum(counts)))
        starts = np.cumsum([0, *counts[:-1]])
        return a[:, [starts[cols[c]] for c in "xyz"]]
    if mode == "binary":
        dtype = np.dtype(
            [(f, _PCD_TYPES[(t, s)], (c,) if c > 1 else ()) for f, t, s, c in zip(fields, types, sizes, counts)]
        )
        if len(raw) - pos < n * dtype.itemsize:
            raise PointFileError(f"{p}: PCD binary data is truncated ({len(raw) - pos} bytes for {n} points)")
        rec = np.frombuffer(raw, dtype, n, pos)
        return np.stack([rec[c].astype(np.float64) for c in "xyz"], 1)
    raise PointFileError(f"{p}: PCD DATA {mode!r} is not supported (ascii and binary are; re-save uncompressed)")
