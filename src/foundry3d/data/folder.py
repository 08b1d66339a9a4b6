"""Your own folder of scans and meshes as a dataset: ``folder:/scans`` for every verb.

Spec forms (one grammar for ``pretrain``, ``distill``, ``eval``, ``export --int8``, ``study``):

* ``folder:/scans`` (or just ``/scans``, ``./scans``, ``~/scans``): every readable file under it, recursively;
* ``folder:/scans:test`` or ``folder:test@/scans``: one split;
* ``folder:/scans/*.npy`` (or ``/scans/**/*.stl``): only the files a glob matches.

What is read: point files (every format :func:`~foundry3d.data.pointfile.read_points` reads) and meshes
(STL, OBJ, OFF, GLB/GLTF, PLY with faces), meshes surface-sampled by area with a seed taken from the
file's content (the builders' sampler, :func:`~foundry3d.data.mesh.sample_labelled_surface`). Every cloud
is centred and scaled into the unit sphere and stored with at most ``POINTS`` points (a seeded subsample
of a larger scan).

Labels: the first-level sub-folder a file sits in is its class (``/scans/chair/a.ply`` is a ``chair``);
files directly in the root are unlabelled (label -1). Only tasks that need labels (SVM, few-shot) read
them, and they use the labelled files only.

Splits are carved by a hash of each file's *content*: ``test`` 20 %, ``val`` 16 % (a fifth of the
rest), ``fit`` the remainder, ``train`` = fit + val, ``all`` every file, ``pool`` the unlabelled files
outside test. Adding files never moves the others, and two copies of one file always share a split.

The cache (beside the built datasets, ``<cache>/datasets/files-v<N>``) is keyed by content: an edited
file is read again, a renamed or moved one is not; files that cannot be read are remembered with the
reason, and ``foundry3d data info folder:/scans`` lists them.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from typing_extensions import override

from foundry3d.data.base import DatasetError, PointCloudDataset, Sample
from foundry3d.data.mesh import MeshError, normalize_unit_sphere, sample_labelled_surface, shape_seed
from foundry3d.data.pointfile import SUFFIXES as POINT_SUFFIXES
from foundry3d.data.pointfile import PointFileError, PointFileWarning, read_points
from foundry3d.data.store import cache_dir

FOLDER_VERSION = "2"  # bump when the reading/sampling rule changes: the cache is re-made
POINTS = 8192  # points stored per file (a mesh's surface sample, or a seeded subsample of a larger scan)
MIN_POINTS = 32  # fewer points than one patch: skipped
SEED = 0
MESH_SUFFIXES = (".stl", ".obj", ".off", ".glb", ".gltf")  # plus .ply files that have faces
SUFFIXES = tuple(sorted({*POINT_SUFFIXES, *MESH_SUFFIXES}))
SPLITS = ("train", "fit", "val", "test", "all", "pool", "labelled")
TEST_SHARE, VAL_SHARE = 0.2, 0.16
SAMPLING_RULE = (
    f"meshes: {POINTS} points by area-weighted surface sampling (trimesh.sample.sample_surface), seed from the "
    f"file's content; point files: every point up to {POINTS}, else a seeded random subset of {POINTS}; then "
    "centroid at origin, max norm 1"
)


def is_folder_spec(spec: str) -> bool:
    """A dataset spec that names a folder or glob of the user's files rather than a dataset by name."""
    s = spec.strip()
    return s.lower().startswith("folder:") or s.startswith(("/", "./", "../", "~")) or os.path.isdir(s)


def parse_folder_spec(spec: str) -> tuple[str | None, str]:
    """``(split, path)`` of ``folder:PATH[:SPLIT]``, ``folder:SPLIT@PATH`` or a bare path."""
    s = spec.strip()
    rest = s[len("folder:") :] if s.lower().startswith("folder:") else s
    head, at, tail = rest.partition("@")
    if at and "/" not in head and "\\" not in head:  # SPLIT@PATH (a split word holds no separator)
        return head or None, tail
    path, colon, last = rest.rpartition(":")
    if colon and last in SPLITS:
        return last, path
    return None, rest


def split_of(sha: str) -> str:
    """``fit``, ``val`` or ``test`` from the file's content hash (stable as files are added)."""
    u = int(sha[8:20], 16) / float(16**12)
    return "test" if u < TEST_SHARE else "val" if u < TEST_SHARE + VAL_SHARE else "fit"


@dataclass
class Entry:
    """One readable file of the folder."""

    path: str  # relative to the folder
    sha: str
    label: int
    points: int  # points in the file (a mesh: the points sampled)
    kind: str  # "points" or "mesh"

    @property
    def split(self) -> str:
        """The split the file's content hash puts it in (stable however the folder is renamed or reordered)."""
        return split_of(self.sha)


def _glob_root(path: str) -> tuple[Path, str | None]:
    """The folder part of a path and the glob pattern below it (None: the whole folder)."""
    p = os.path.expanduser(path)
    if not glob.has_magic(p):
        return Path(p), None
    parts = Path(p).parts
    cut = next(i for i, q in enumerate(parts) if glob.has_magic(q))
    return Path(*parts[:cut]) if cut else Path("."), str(Path(*parts[cut:]))


def _files(root: Path, pattern: str | None) -> list[Path]:
    if pattern is None:
        found = [Path(d) / f for d, _, fs in os.walk(root, followlinks=False) for f in fs]
    else:
        found = [Path(f) for f in glob.glob(str(root / pattern), recursive=True)]
    return sorted(f for f in found if f.is_file() and not f.name.startswith("."))


def file_sha(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks: what names a file's cached cloud (an edited file is re-read)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _ply_has_faces(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    end = head.find(b"end_header")
    for line in head[: end if end > 0 else len(head)].decode("latin-1").splitlines():
        w = line.split()
        if len(w) == 3 and w[0] == "element" and w[1] == "face" and w[2].isdigit() and int(w[2]) > 0:
            return True
    return False


def is_mesh(path: Path) -> bool:
    """Whether a file holds faces to sample (a PLY only when it has a face element), rather than points to keep."""
    suffix = path.suffix.lower()
    return suffix in MESH_SUFFIXES or (suffix == ".ply" and _ply_has_faces(path))


def _read_off(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """OFF with polygons of any size (fan-triangulated) and colours after the indices, which trimesh's reader
    refuses."""
    words = [ln.split("#")[0].split() for ln in path.read_text(errors="replace").splitlines()]
    lines = [w for w in words if w]
    if not lines or not lines[0][0].upper().endswith("OFF"):
        raise MeshError("not an OFF file (no OFF header)")
    head = lines[0][1:] if len(lines[0]) > 1 else lines[1]
    start = 1 if len(lines[0]) > 1 else 2
    nv, nf = int(head[0]), int(head[1])
    verts = np.array([[float(x) for x in ln[:3]] for ln in lines[start : start + nv]], np.float64)
    tris = []
    for ln in lines[start + nv : start + nv + nf]:
        k = int(ln[0])
        idx = [int(x) for x in ln[1 : 1 + k]]
        tris += [(idx[0], idx[i], idx[i + 1]) for i in range(1, k - 1)]
    faces = np.array(tris, np.int64).reshape(-1, 3)
    if len(verts) != nv or (len(faces) and faces.max() >= nv):
        raise MeshError("OFF file shorter than its header says, or faces name missing vertices")
    return verts, faces


MAX_MESH_BYTES = 2 << 30  # larger mesh files are refused: loading one would take many times this in memory
MAX_TRIANGLES = 40_000_000


def check_mesh_size(path: Path) -> None:
    """Refuse, from the file's size and header alone, a mesh too large to sample in bounded memory (or a
    binary STL whose header claims more triangles than the file holds)."""
    size = path.stat().st_size
    if size > MAX_MESH_BYTES:
        raise MeshError(
            f"a {size / 2**30:.1f} GiB mesh file: larger than {MAX_MESH_BYTES >> 30} GiB, too large to sample in "
            "memory (decimate it, or sample points from it into a point file)"
        )
    if path.suffix.lower() == ".stl" and size >= 84:
        with open(path, "rb") as f:
            head = f.read(84)
        count = int.from_bytes(head[80:84], "little")
        binary = 84 + 50 * count == size
        if binary and count > MAX_TRIANGLES:
            raise MeshError(f"binary STL with {count:,} triangles; at most {MAX_TRIANGLES:,} are sampled in memory")
        if not binary and head[:5].lower() != b"solid":  # neither a whole binary STL nor an ASCII one
            raise MeshError(
                f"binary STL whose header declares {count:,} triangles ({84 + 50 * count:,} bytes) in a "
                f"{size:,}-byte file: truncated or not an STL"
            )


def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of a mesh file (every mesh of a scene, in world coordinates); the triangles
    may be none (an OFF or OBJ file that stores a point set)."""
    import trimesh  # loaded on use: reading cached clouds needs no mesh library

    check_mesh_size(path)
    try:
        loaded = trimesh.load(str(path), force="mesh", process=False)
    except Exception as e:  # trimesh raises many types for files it cannot read
        if path.suffix.lower() == ".off":
            return _read_off(path)
        raise MeshError(f"not a readable mesh ({type(e).__name__}: {str(e)[:120]})") from e
    faces = np.asarray(getattr(loaded, "faces", np.zeros((0, 3))), np.int64).reshape(-1, 3)
    if len(faces) == 0 and path.suffix.lower() == ".off":
        return _read_off(path)  # trimesh drops polygons of mixed sizes; the line reader keeps them
    if len(faces) == 0 and path.suffix.lower() == ".obj":  # trimesh drops vertices no face uses: a point set
        rows = [ln.split()[1:4] for ln in path.read_text(errors="replace").splitlines() if ln.startswith("v ")]
        try:
            return np.array(rows, np.float64).reshape(-1, 3), faces
        except ValueError as e:
            raise MeshError(f"OBJ vertex lines that are not three numbers ({e})") from e
    verts = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), np.float64).reshape(-1, 3)
    if len(verts) == 0:
        raise MeshError("the file holds no vertices")
    return verts, faces


def mesh_cloud(path: Path, points: int, seed: int) -> tuple[np.ndarray, int, str]:
    """A mesh file's surface sample (area-weighted, seeded); a file without faces gives its vertices."""
    v, f = read_mesh(path)
    if len(f) == 0:
        if len(v) < MIN_POINTS:
            raise MeshError(f"a mesh file without faces and only {len(v)} vertices (fewer than one patch)")
        return v, len(v), f"a mesh file without faces: its {len(v)} vertices read as points"
    pts, _ = sample_labelled_surface(v, f, np.zeros(len(f), np.int64), points, seed)
    return pts, len(pts), f"mesh: {points} points sampled on its surface by area"


def cloud_of(path: Path, sha: str, points: int = POINTS, seed: int = SEED) -> tuple[np.ndarray, int, str]:
    """``(cloud (n, 3) in the unit sphere, points in the file, kind)`` of one file, by the rule above."""
    rng_seed = shape_seed(seed, sha)
    if is_mesh(path):
        pts, n, how = mesh_cloud(path, points, rng_seed)
        if how.startswith("mesh"):
            return normalize_unit_sphere(pts), n, "mesh"
        order = np.random.default_rng(rng_seed).permutation(n)[:points]
        return normalize_unit_sphere(pts[order]), n, "points"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PointFileWarning)
        pts = read_points(path, drop_nonfinite=True)
    n = len(pts)
    if n < MIN_POINTS:
        raise PointFileError(f"{n} points, fewer than one patch ({MIN_POINTS})")
    order = np.random.default_rng(rng_seed).permutation(n)[:points]  # a random order: "first" is a uniform subset
    return normalize_unit_sphere(pts[order].astype(np.float64)), n, "points"


def _cache_root(root: str | Path | None) -> Path:
    return cache_dir(root) / "datasets" / f"files-v{FOLDER_VERSION}"


def _convert(job: tuple[str, str, str]) -> tuple[str, str, Any]:
    """Worker: read one file into the content cache; ``(sha, 'ok', [points, kind])`` or ``(sha, 'skip', why)``."""
    path, sha, target = job
    try:
        cloud, n, kind = cloud_of(Path(path), sha)
    except (DatasetError, MeshError, ValueError, IndexError, OSError, MemoryError) as e:
        return sha, "skip", str(e).replace(f"{path}: ", "")[:200]
    tmp = f"{target}.{os.getpid()}.tmp.npy"
    np.save(tmp, cloud.astype(np.float16), allow_pickle=False)
    os.replace(tmp, target)
    return sha, "ok", [n, kind]


class FolderIndex:
    """The files of one folder (or glob) with their content hashes, labels and cache entries."""

    def __init__(self, path: str, root: str | Path | None = None, progress: bool = False) -> None:
        self.spec_path = path
        self.folder, self.pattern = _glob_root(path)
        if not self.folder.is_dir():
            raise DatasetError(
                f"folder:{path}: {self.folder} is not a folder; expected a folder of point files or meshes "
                f"({', '.join(SUFFIXES)})"
            )
        self.cache = _cache_root(root)
        files = _files(self.folder, self.pattern)
        self.ignored: dict[str, int] = {}
        wanted = []
        for f in files:
            if f.suffix.lower() in SUFFIXES:
                wanted.append(f)
            else:
                key = f.suffix.lower() or "(no suffix)"
                self.ignored[key] = self.ignored.get(key, 0) + 1
        shas = self._hashes(wanted)
        self.entries: list[Entry] = []
        self.skipped: list[dict[str, str]] = []
        records = self._read(wanted, shas, progress)
        top = sorted({f.relative_to(self.folder).parts[0] for f in wanted if len(f.relative_to(self.folder).parts) > 1})
        labelled = {
            f.relative_to(self.folder).parts[0]
            for f in wanted
            if len(f.relative_to(self.folder).parts) > 1 and records[shas[f]][0] == "ok"
        }
        self.classes = [c for c in top if c in labelled]
        for f in wanted:
            rel = f.relative_to(self.folder)
            status, value = records[shas[f]]
            if status != "ok":
                self.skipped.append({"file": str(rel), "reason": value})
                continue
            label = self.classes.index(rel.parts[0]) if len(rel.parts) > 1 else -1
            self.entries.append(Entry(str(rel), shas[f], label, int(value[0]), value[1]))
        if not self.entries:
            first = self.skipped[0] if self.skipped else None
            why = f"; {len(self.skipped)} skipped, e.g. {first['file']}: {first['reason']}" if first else ""
            raise DatasetError(
                f"folder:{path}: no readable point file or mesh in {self.folder}"
                + (why or f" (readable: {', '.join(SUFFIXES)})")
            )

    def _hashes(self, files: list[Path]) -> dict[Path, str]:
        """Content hashes, re-computed only for files whose size or modification time changed."""
        key = hashlib.sha256(str(self.folder.resolve()).encode()).hexdigest()[:16]
        manifest = self.cache / "manifests" / f"{key}.json"
        try:
            known = json.loads(manifest.read_text())
        except (OSError, ValueError):
            known = {}
        out, fresh = {}, {}
        for f in files:
            st = f.stat()
            rel = str(f.relative_to(self.folder))
            old = known.get(rel)
            if isinstance(old, list) and len(old) == 3 and old[:2] == [st.st_size, st.st_mtime_ns]:
                out[f] = old[2]
            else:
                out[f] = file_sha(f)
            fresh[rel] = [st.st_size, st.st_mtime_ns, out[f]]
        if fresh != known:
            self._write_json(manifest, {**known, **fresh})
        return out

    def _write_json(self, path: Path, value: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)

    def cloud_path(self, sha: str) -> Path:
        """Where the cached cloud of content hash ``sha`` lives (sharded by its first two hex digits)."""
        return self.cache / "clouds" / sha[:2] / f"{sha}.npy"

    def _read(self, files: list[Path], shas: dict[Path, str], progress: bool) -> dict[str, tuple[str, Any]]:
        """``sha -> (status, [points, kind] or reason)``; new content is read in parallel and cached."""
        records: dict[str, tuple[str, Any]] = {}
        jobs = []
        for f in files:
            sha = shas[f]
            if sha in records:
                continue
            note = self.cloud_path(sha).with_suffix(".json")
            try:
                rec = json.loads(note.read_text())
                if rec["status"] != "ok" or self.cloud_path(sha).is_file():
                    records[sha] = (rec["status"], rec["value"])
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                pass
            records[sha] = ("pending", None)
            jobs.append((str(f), sha, str(self.cloud_path(sha))))
        if jobs:
            from foundry3d.data.building import parallel_map  # loaded on use: only new files need the pool

            for job in jobs:
                self.cloud_path(job[1]).parent.mkdir(parents=True, exist_ok=True)
            run = parallel_map(_convert, jobs, desc="read files", progress=progress, total=len(jobs), chunksize=1)
            for sha, status, value in run if len(jobs) > 4 else map(_convert, jobs):
                records[sha] = (status, value)
                self._write_json(self.cloud_path(sha).with_suffix(".json"), {"status": status, "value": value})
        return records


class FolderDataset(PointCloudDataset):
    """One split of a folder: clouds are read from the content cache on access (memory holds none)."""

    def __init__(self, index: FolderIndex, split: str) -> None:
        if split not in SPLITS:
            raise DatasetError(f"folder:{index.spec_path} has no split {split!r}; splits: {', '.join(SPLITS)}")
        self.index = index
        keep = {
            "train": lambda e: e.split != "test",
            "fit": lambda e: e.split == "fit",
            "val": lambda e: e.split == "val",
            "test": lambda e: e.split == "test",
            "all": lambda e: True,
            "pool": lambda e: e.label < 0 and e.split != "test",
            "labelled": lambda e: e.label >= 0,
        }[split]
        self.entries = [e for e in index.entries if keep(e)]
        self.name = f"folder:{index.spec_path}"
        self.split = split
        self.classes = list(index.classes)
        self.protocol = {"num_points": 1024, "num_groups": 64, "sampling": "first"}
        self.version = f"folder-v{FOLDER_VERSION} ({len(index.entries)} files)"

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Sample:
        e = self.entries[i]
        path = self.index.cloud_path(e.sha)
        try:
            pts = np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as err:
            raise DatasetError(f"{path}: cached cloud of {e.path} is unreadable ({err}); delete it to re-read") from err
        return Sample(points=pts, label=e.label, name=e.path)

    @override
    def labels(self) -> np.ndarray:
        return np.array([e.label for e in self.entries], np.int64)

    @override
    def fingerprint(self) -> str:
        h = hashlib.sha256(f"folder-v{FOLDER_VERSION}".encode())
        for e in self.entries:
            h.update(f"{e.sha}:{e.label}:{self.classes[e.label] if e.label >= 0 else ''};".encode())
        return h.hexdigest()[:24]

    def labelled(self) -> FolderDataset:
        """The same split without its unlabelled files (what classification tasks train and score on)."""
        out = FolderDataset(self.index, self.split)
        out.entries = [e for e in self.entries if e.label >= 0]
        if not out.entries:
            raise DatasetError(
                f"{self.name}:{self.split} has no labelled file: put each class's files in its own sub-folder "
                f"(e.g. {self.index.folder}/chair/a.ply)"
            )
        return out

    @override
    def info(self) -> dict[str, Any]:
        out = super().info()
        labels = self.labels()
        out["unlabelled"] = int((labels < 0).sum())
        return out


def load_folder(spec: str, split: str | None = None, root: str | Path | None = None) -> FolderDataset:
    """The dataset of ``spec`` (see the module docstring); ``split`` when the spec names none (default train)."""
    s, path = parse_folder_spec(spec)
    if not path:
        raise DatasetError(f"{spec!r}: expected folder:PATH, folder:PATH:SPLIT or folder:SPLIT@PATH")
    split = s or split or "train"
    if split not in SPLITS:
        raise DatasetError(f"folder:{path} has no split {split!r}; splits: {', '.join(SPLITS)}")
    return FolderDataset(FolderIndex(path, root), split)


def folder_info(spec: str, root: str | Path | None = None) -> dict[str, Any]:
    """What ``foundry3d data info folder:/scans`` prints: counts, splits, classes, what was skipped and why."""
    _, path = parse_folder_spec(spec)
    index = FolderIndex(path, root, progress=True)
    splits = {s: len(FolderDataset(index, s)) for s in ("fit", "val", "test", "pool")}
    labels = np.array([e.label for e in index.entries])
    return {
        "name": f"folder:{path}",
        "path": str(index.folder.resolve()),
        "files": len(index.entries) + len(index.skipped),
        "read": len(index.entries),
        "meshes": sum(e.kind == "mesh" for e in index.entries),
        "point_files": sum(e.kind == "points" for e in index.entries),
        "classes": len(index.classes),
        "per_class": {c: int((labels == i).sum()) for i, c in enumerate(index.classes)},
        "unlabelled": int((labels < 0).sum()),
        "splits": splits,
        "skipped": index.skipped,
        "ignored": index.ignored,
        "sampling": SAMPLING_RULE,
        "cache": str(index.cache),
    }
