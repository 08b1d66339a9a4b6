"""Users' own point-cloud files: ``.ply``, ``.pcd``, ``.las`` / ``.laz``, ``.xyz`` / ``.txt`` / ``.csv``,
``.npy`` / ``.npz``, of any size, read into one (N, 3) float32 array of coordinates.

Libraries where they exist (``plyfile`` for PLY, ``laspy`` with the ``lazrs`` backend for LAS/LAZ);
PCD (ASCII and binary; not ``binary_compressed``) and the text formats are read here. Every
failure is a :class:`PointFileError` naming the file and what was expected.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import laspy
import numpy as np
from plyfile import PlyData, PlyParseError

from foundry3d.data.base import DatasetError

SUFFIXES = (".ply", ".pcd", ".las", ".laz", ".xyz", ".txt", ".csv", ".pts", ".npy", ".npz")


class PointFileError(DatasetError):
    """A point-cloud file that cannot be read as N x 3 finite coordinates."""


class PointFileWarning(UserWarning):
    """A file read only leniently (a malformed header, a truncated body): its points may be incomplete."""


def read_points(path: str | Path, drop_nonfinite: bool = False) -> np.ndarray:
    """Coordinates (N, 3) float32 of a point-cloud file; checked for emptiness and finiteness.

    Scanners write NaN for missing returns: with ``drop_nonfinite`` those points are dropped with a
    :class:`PointFileWarning` giving their count (an error when no finite point is left); without it
    any non-finite point is an error.
    """
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
    if pts.dtype.kind not in "fiu":
        raise PointFileError(f"{p}: coordinates of type {pts.dtype}, expected real numbers (float or int)")
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise PointFileError(f"{p}: expected N x 3 coordinates, got an array of shape {pts.shape}")
    if len(pts) == 0:
        raise PointFileError(f"{p}: the file holds no points")
    bad = ~np.isfinite(pts).all(1)
    if bad.any() and drop_nonfinite and not bad.all():
        warnings.warn(
            f"{p}: dropped {int(bad.sum())} of {len(pts)} points with NaN or infinite coordinates",
            PointFileWarning,
            stacklevel=2,
        )
        pts = pts[~bad]
    elif bad.any():
        raise PointFileError(f"{p}: {int(bad.sum())} of {len(pts)} points have NaN or infinite coordinates")
    return pts.astype(np.float32, copy=False)


def _ply(p: Path) -> np.ndarray:
    """``plyfile`` first; files it rejects (written by older exporters) go to :func:`_ply_tolerant`."""
    try:
        ply = PlyData.read(str(p))
    except (PlyParseError, ValueError, EOFError) as e:
        return _ply_tolerant(p, f"{type(e).__name__}: {e}")
    if "vertex" not in ply:
        raise PointFileError(f"{p}: PLY file without a 'vertex' element")
    v = ply["vertex"]
    names = v.data.dtype.names or ()
    if not {"x", "y", "z"} <= set(names):
        raise PointFileError(f"{p}: PLY vertices have properties {list(names)}, expected x, y, z")
    return np.stack([np.asarray(v[c], np.float64) for c in "xyz"], 1)


_PLY_TYPES = {
    **dict.fromkeys(("char", "int8"), "i1"),
    **dict.fromkeys(("uchar", "uint8"), "u1"),
    **dict.fromkeys(("short", "int16"), "i2"),
    **dict.fromkeys(("ushort", "uint16"), "u2"),
    **dict.fromkeys(("int", "int32"), "i4"),
    **dict.fromkeys(("uint", "uint32"), "u4"),
    **dict.fromkeys(("float", "float32"), "f4"),
    **dict.fromkeys(("double", "float64"), "f8"),
}


def _ply_tolerant(p: Path, why: str) -> np.ndarray:
    """Vertex coordinates of a PLY file that a strict reader rejects, with a warning saying what was off.

    Real files from older exporters have free text in the header (Blender 2.4x writes "Created by
    ..." without ``comment``), headers that declare a face list on the vertex element, or binary
    bodies cut short by a few bytes. The header is read line by line (unknown lines skipped), x/y/z
    are taken at their place in each vertex row, and a short ASCII body gives the rows it holds (a
    short binary body is an error: the lost bytes may be anywhere, so no row can be trusted).
    """
    raw = p.read_bytes()
    if not raw.startswith(b"ply"):
        raise PointFileError(f"{p}: not a PLY file (it does not start with 'ply')")
    end = raw.find(b"end_header")
    if end < 0:
        raise PointFileError(f"{p}: PLY header without 'end_header'")
    body = raw.index(b"\n", end) + 1 if b"\n" in raw[end:] else len(raw)
    fmt, skipped = "", []
    elements: list[Any] = []
    for line in raw[:end].decode("latin-1").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements and len(words) >= 3:
            elements[-1][2].append(words[1:])
        else:
            skipped.append(line.strip())
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise PointFileError(f"{p}: PLY format {fmt!r}; expected ascii, binary_little_endian or binary_big_endian")
    names = [e[0] for e in elements]
    if "vertex" not in names:
        raise PointFileError(f"{p}: PLY file without a 'vertex' element")
    vi = names.index("vertex")
    _, count, props = elements[vi]
    # x, y, z must come before any list property for their place in a row to be fixed
    fixed = props[: next((i for i, q in enumerate(props) if q[0] == "list"), len(props))]
    cols = [q[-1] for q in fixed]
    if not {"x", "y", "z"} <= set(cols):
        raise PointFileError(f"{p}: PLY vertices have properties {[q[-1] for q in props]}, expected x, y, z first")
    notes = [f"a strict reader rejected it ({why})"]
    if skipped:
        notes.append(f"skipped header lines {skipped}")
    if fmt == "ascii":
        lines = raw[body:].decode("latin-1").splitlines()
        start = sum(e[1] for e in elements[:vi])
        rows = [ln.split() for ln in lines[start : start + count]]
        rows = [r for r in rows if len(r) >= len(fixed)]
        xyz = np.array([[float(r[cols.index(c)]) for c in "xyz"] for r in rows], np.float64).reshape(-1, 3)
    else:
        if any(q[0] == "list" for e in elements[: vi + 1] for q in e[2]) or any(q[0] not in _PLY_TYPES for q in props):
            raise PointFileError(f"{p}: binary PLY with list or unknown properties before its vertex data ({why})")
        order = "<" if fmt == "binary_little_endian" else ">"
        skip = sum(e[1] * sum(np.dtype(_PLY_TYPES[q[0]]).itemsize for q in e[2]) for e in elements[:vi])
        dtype = np.dtype([(q[-1], order + _PLY_TYPES[q[0]]) for q in props])
        have, want = len(raw) - body - skip, count * dtype.itemsize
        if have < want:  # bytes lost anywhere shift every row after them: no row can be trusted
            raise PointFileError(
                f"{p}: binary PLY body is {want - have} bytes shorter than its header's {count} vertices "
                f"need ({why}); the file is damaged (re-export it)"
            )
        rec = np.frombuffer(raw, dtype, count, body + skip)
        xyz = np.stack([rec[c].astype(np.float64) for c in "xyz"], 1)
    if len(xyz) < count:
        notes.append(f"the file is truncated: it holds {len(xyz)} of the {count} vertices its header declares")
    warnings.warn(f"{p}: read leniently, " + "; ".join(notes), PointFileWarning, stacklevel=3)
    return xyz


def _las_header(p: Path) -> int:
    """The point count a LAS/LAZ header declares, after checking the header's sizes against the file:
    a few hundred bytes must not make the reader walk 4e9 VLRs or allocate 1e8 points."""
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(375)
    if len(head) < 227 or head[:4] != b"LASF":
        raise PointFileError(f"{p}: not a LAS file (no LASF header)")
    minor = head[25]
    header_size, offset, nvlrs = (int.from_bytes(head[a:b], "little") for a, b in ((94, 96), (96, 100), (100, 104)))
    count = int.from_bytes(head[107:111], "little")
    if minor >= 4 and len(head) >= 255:
        count = int.from_bytes(head[247:255], "little") or count
    if not header_size <= offset <= size or header_size + 54 * nvlrs > offset:
        raise PointFileError(
            f"{p}: its header declares {nvlrs} VLRs and point data at byte {offset}, which does not fit a "
            f"{header_size}-byte header in a {size}-byte file"
        )
    record = int.from_bytes(head[105:107], "little")
    compressed = bool(head[104] & 0xC0)
    if not compressed and record and count > (size - offset) // record:
        warnings.warn(
            f"{p}: its header declares {count} points but the file holds {(size - offset) // record}: "
            "read those (a truncated file?)",
            PointFileWarning,
            stacklevel=3,
        )
        count = (size - offset) // record
    return count


def _las(p: Path) -> np.ndarray:
    declared = _las_header(p)
    parts: list[np.ndarray] = []
    got, warned = 0, False
    with laspy.open(str(p)) as reader:
        chunks = reader.chunk_iterator(1_000_000)  # memory follows the points really read, not the header
        while got < declared:
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            except Exception as e:  # a compressed stream that ends before its declared count
                if not parts:
                    raise
                warnings.warn(
                    f"{p}: read {got} of the {declared} points its header declares ({type(e).__name__}: {e})",
                    PointFileWarning,
                    stacklevel=3,
                )
                warned = True
                break
            if len(chunk) == 0:
                break
            parts.append(np.stack([np.asarray(chunk.x), np.asarray(chunk.y), np.asarray(chunk.z)], 1))
            got += len(chunk)
    if got < declared and got and not warned:
        warnings.warn(f"{p}: read {got} of the {declared} points its header declares", PointFileWarning, stacklevel=3)
    return np.concatenate(parts) if parts else np.zeros((0, 3))


def _npy(p: Path) -> np.ndarray:
    a = np.load(p, allow_pickle=False)
    return a[:, :3] if a.ndim == 2 and a.shape[1] >= 3 else a


def _npz(p: Path) -> np.ndarray:
    with np.load(p, allow_pickle=False) as z:
        if {"model_hash", "tokens", "global"} <= set(z.files):
            raise PointFileError(
                f"{p}: a foundry3d embedding (features written by `foundry3d embed`), not a point cloud; "
                f"embed the original scan instead"
            )
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
        if len(a) != n:
            warnings.warn(
                f"{p}: its header declares {n} points, the file holds {len(a)} rows: read those",
                PointFileWarning,
                stacklevel=3,
            )
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
