"""The pretraining corpus: real 3D assets from seven Debian game and test-model packages.

``foundry3d data build corpus`` downloads each package with ``apt-get download``, reads its
meshes without any game engine (0 A.D. PMD, MegaGlest G3D, Warzone 2100 PIE; OBJ/STL/PLY/OFF/
GLB/COLLADA through trimesh), samples 4,096 surface points per mesh, drops degenerate meshes
(no area, fewer than 8 triangles, flat as a sheet) and near-duplicates (the same shape under
another name, colour or level of detail: two normalised clouds no farther apart than two
samplings of one mesh), and writes one dataset:

* ``corpus:pretrain`` every kept shape except the ``oad`` validation and test shapes;
* ``oad:train|val|test`` a labelled evaluation set from 0 A.D.'s folder and file names
  (helmet, shield, tree, wall, ...): a third domain besides furniture and electronics, whose
  validation and test shapes no pretraining ever sees.

Packages with no mesh we can read are reported, not hidden: ``supertuxkart-data`` stores its
meshes in STK's own binary ``.spm`` format (no well-kept reader) and ``extremetuxracer-data``
holds no polygon meshes (characters are built from primitives at run time).
"""

from __future__ import annotations

import io
import re
import struct
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from scipy.spatial import cKDTree
from sklearn.model_selection import train_test_split

from foundry3d.data.base import DatasetError
from foundry3d.data.building import parallel_map
from foundry3d.data.catalogue import CORPUS_VERSION
from foundry3d.data.debian import download_package, extract_members, iter_members, package_version
from foundry3d.data.gamemesh import read_g3d, read_pie, read_pmd
from foundry3d.data.mesh import MeshError, normalize_unit_sphere, sample_labelled_surface, shape_seed
from foundry3d.data.store import DatasetWriter, cache_dir, dataset_dir, is_complete
from foundry3d.errors import InputError


@dataclass(frozen=True)
class Source:
    """One Debian package: which members hold meshes and how to read them."""

    package: str
    licence: str
    members: tuple[str, ...]  # patterns of archive members to read (meshes, or zip containers)
    inner: tuple[str, ...] = ()  # for zip containers: patterns of the meshes inside
    note: str = ""


SOURCES: list[Source] = [
    Source(
        "0ad-data",
        "CC-BY-SA 3.0 (art, Wildfire Games)",
        ("usr/share/games/0ad/mods/public/public.zip",),
        ("art/meshes/*.pmd",),
    ),
    Source("megaglest-data", "CC-BY-SA 3.0 (MegaGlest data)", ("usr/share/games/megaglest/*.g3d",)),
    Source(
        "warzone2100-data",
        "GPL-2+ (Warzone 2100 data)",
        ("usr/share/games/warzone2100/*.wz",),
        ("*.pie",),
    ),
    Source(
        "trigger-rally-data",
        "GPL-2+ / CC licences per file (Trigger Rally data, see debian copyright)",
        ("usr/share/games/trigger-rally/data.zip",),
        ("*.obj",),
    ),
    Source(
        "assimp-testmodels",
        "BSD-3-Clause and per-model licences (assimp test models, see debian copyright)",
        tuple(
            f"usr/share/assimp/models/{d}/*.{ext}"
            for d in ("OBJ", "STL", "PLY", "OFF", "glTF2", "Collada")
            for ext in ("obj", "stl", "ply", "off", "glb", "dae")
        ),
        note="the models/invalid folder and formats trimesh cannot read are not used",
    ),
    Source("supertuxkart-data", "GPL-3+ / CC-BY-SA (STK data)", (), note="meshes are .spm (STK binary): not read"),
    Source("extremetuxracer-data", "GPL-2+ (ETR data)", (), note="no polygon meshes in the package"),
]

# 0 A.D. evaluation classes: first rule whose pattern matches the path below art/meshes/ wins;
# class "" = unlabelled (pretraining only). Construction stages, parts of trees and campaign
# variants are left unlabelled so that a class name always means a whole object of that kind.
OAD_RULES: list[tuple[str, str]] = [
    ("", r"found|scaffold|rubble|destruct|^temp/|^test/|marker|decal|shadow|campaigns/|projectile"),
    ("helmet", r"^props/helmet/|helmet"),
    ("shield", r"^props/shield/|shield"),
    ("weapon", r"^props/weapons/"),
    ("horse", r"^props/horse/|^skeletal/.*horse"),
    ("ship", r"^structural/.*(ship|trireme|bireme|quinquereme|boat)"),
    ("tower", r"^structural/.*tower"),
    ("siege", r"^props/siege_artillery/|^structural/.*(siege|(^|[_/])ram([_.\d]|$)|ballista|catapult|onager)"),
    ("wall", r"^structural/.*(wall|palisade|gate)"),
    ("house", r"^structural/.*house"),
    ("temple", r"^structural/.*temple"),
    ("", r"^gaia/.*(leaves|trunk|branch|needles|fol_|_fol|crown)"),
    (
        "tree",
        r"^gaia/.*(tree|palm|pine|oak|cypress|baobab|acacia|cedar|fir|poplar|carob|maple|beech|birch|willow|"
        r"olive|banyan|deciduous)",
    ),
    ("bush", r"^gaia/.*(bush|shrub|grass|reed|plant|fern|berr|bamboo)"),
    ("rock", r"^gaia/.*(rock|stone|granite|cliff|boulder|mine|metal|ore)"),
    ("mushroom", r"^gaia/mushrooms/"),
]
OAD_MIN_PER_CLASS = 20


def oad_class(path: str) -> str:
    """0 A.D. class of a mesh path (``""`` when it gets none)."""
    p = path.lower().split("art/meshes/", 1)[-1]
    for cls, pattern in OAD_RULES:
        if re.search(pattern, p):
            return cls
    return ""


def read_any(name: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of one mesh file, chosen by extension."""
    ext = name.rsplit(".", 1)[-1].lower()
    if ext == "pmd":
        return read_pmd(data)
    if ext == "g3d":
        return read_g3d(data)
    if ext == "pie":
        return read_pie(data)

    try:
        loaded = trimesh.load(io.BytesIO(data), file_type=ext, force="mesh", process=False)
    except Exception as e:  # trimesh raises many types for unreadable files
        raise MeshError(f"trimesh cannot read it ({type(e).__name__}: {str(e)[:80]})") from e
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise MeshError("no triangles")
    return np.asarray(loaded.vertices, np.float64), np.asarray(loaded.faces, np.int64)


def sample_job(args: tuple[str, bytes, int, int]) -> tuple[str, str, Any]:
    """Worker: (key, 'ok', points (P, 3) float16) or (key, 'skip', reason)."""
    key, data, points, seed = args
    try:
        v, f = read_any(key, data)
        if len(f) < 8:
            raise MeshError(f"only {len(f)} triangles (a billboard or marker, not a shape)")
        pts, _ = sample_labelled_surface(v, f, np.zeros(len(f), np.int64), points, shape_seed(seed, key))
        pts = normalize_unit_sphere(pts)
        ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T)))
        if ev[0] <= 0 or np.sqrt(ev[0] / ev[-1]) < 0.01:
            raise MeshError("flat as a sheet (smallest/largest principal extent < 1 %)")
        return key, "ok", pts.astype(np.float16)
    except (MeshError, ValueError, IndexError, struct.error) as e:
        return key, "skip", str(e)[:160]


def iter_meshes(source: Source, deb: Path, scratch: Path) -> Iterator[tuple[str, bytes]]:
    """(key, bytes) of every mesh file of one package; keys are ``package/path[/inner path]``."""

    if not source.members:
        return
    if not source.inner:
        for name, data in iter_members(deb, list(source.members)):
            yield f"{source.package}/{name}", data
        return
    # zip containers: unpack them once into the scratch folder, then read their members
    done = scratch / ".complete"
    if not done.exists():
        extract_members(deb, scratch, list(source.members))
        done.write_text("ok\n")
    for container in sorted(p for p in scratch.rglob("*") if p.is_file() and p.name != ".complete"):
        rel = container.relative_to(scratch).as_posix()
        try:
            zf = zipfile.ZipFile(container)
        except zipfile.BadZipFile as e:
            raise MeshError(f"{rel} in {deb.name} is not a readable zip: {e}") from e
        with zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if info.is_dir() or not any(fnmatch(info.filename.lower(), p) for p in source.inner):
                    continue
                yield f"{source.package}/{rel}/{info.filename}", zf.read(info)


def _jobs(
    src: Source, deb: Path, scratch: Path, points: int, seed: int, limit: int | None
) -> Iterator[tuple[str, bytes, int, int]]:
    for i, (key, data) in enumerate(iter_meshes(src, deb, scratch)):
        if limit is not None and i >= limit:
            return
        yield key, data, points, seed


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric mean nearest-neighbour distance between two clouds."""

    return float(0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean()))


def deduplicate(clouds: np.ndarray, ratio: float, probe: int = 512, neighbours: int = 8) -> np.ndarray:
    """Index of the kept shape each shape duplicates (itself when kept), in order of appearance.

    Two clouds of the same mesh differ only by sampling noise, so the test is relative to it: a
    shape duplicates an earlier kept one when their Chamfer distance (``probe`` points each) is
    below ``ratio`` x the mean of their own resampling distances (points [0, probe) vs
    [probe, 2 probe) of one cloud). Candidates are the nearest shapes by a cheap descriptor
    (a distance histogram and the principal extents).
    """

    n = len(clouds)
    sub = clouds[:, :probe].astype(np.float32)
    noise = np.array([chamfer(c[:probe], c[probe : 2 * probe]) for c in clouds.astype(np.float32)])
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, probe, 2048), rng.integers(0, probe, 2048)
    d2 = np.linalg.norm(sub[:, i] - sub[:, j], axis=-1)
    hist = np.stack([np.histogram(row, bins=16, range=(0, 2))[0] for row in d2]) / 2048.0
    ext = np.sort(np.sqrt(np.maximum(np.linalg.eigvalsh(np.einsum("nki,nkj->nij", sub, sub) / probe), 0)), -1)
    desc = np.concatenate([hist, ext], 1)
    tree = cKDTree(desc)
    owner = np.arange(n)
    kept = np.zeros(n, bool)
    for s in range(n):
        _, cand = tree.query(desc[s], k=min(n, neighbours + 1))
        for c in np.atleast_1d(cand):
            if c < s and kept[c] and chamfer(sub[s], sub[c]) < ratio * 0.5 * (noise[s] + noise[c]):
                owner[s] = c
                break
        else:
            kept[s] = True
    return owner


def build_corpus(
    root: str | Path | None = None,
    points: int = 4096,
    seed: int = 0,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    packages: list[str] | None = None,
    dedup_ratio: float = 1.2,
    debs: dict[str, str | Path] | None = None,
    limit_per_package: int | None = None,
    deb: str | Path | None = None,
) -> Path:
    """Build the corpus (+ the ``oad`` evaluation set) from the Debian packages; returns its folder.

    ``packages``/``limit_per_package`` restrict the build (quick tests); such a build goes to a
    separate ``corpus-subset`` folder so that it is never taken for the full corpus.
    """

    if points < 2048:
        raise InputError(f"points={points}: store at least 2048 points per shape (1024/2048-point protocols)")
    if deb is not None:
        raise DatasetError("the corpus comes from several packages: pass debs={package: path} (Python) instead of deb")
    known = {s.package: s for s in SOURCES}
    chosen = [known[p] for p in packages] if packages else SOURCES
    unknown = sorted(set(packages or []) - set(known))
    if unknown:
        raise DatasetError(f"unknown corpus package(s) {', '.join(unknown)}; corpus packages: {', '.join(known)}")
    subset = packages is not None or limit_per_package is not None
    final = dataset_dir("corpus-subset" if subset else "corpus", CORPUS_VERSION, root)
    if is_complete(final) and not force:
        return final
    t0 = time.time()
    cache = cache_dir(root)
    report: dict[str, dict[str, Any]] = {}
    keys: list[str] = []
    clouds: list[np.ndarray] = []
    pkg_of: list[str] = []
    skipped: list[dict[str, str]] = []
    copyrights: dict[str, str] = {}
    for src in chosen:
        t1 = time.time()
        deb = Path((debs or {}).get(src.package) or download_package(src.package, cache))
        version = package_version(deb)
        for _, data in iter_members(deb, [f"usr/share/doc/{src.package}/copyright"]):
            copyrights[src.package] = data.decode(errors="replace")
        scratch = cache / "src" / f"{src.package}_{version}"
        found = kept_here = 0
        reasons: Counter = Counter()

        jobs = _jobs(src, deb, scratch, points, seed, limit_per_package)
        for key, status, out in parallel_map(sample_job, jobs, workers, src.package, progress, chunksize=8):
            found += 1
            if status == "ok":
                keys.append(key)
                clouds.append(out)
                pkg_of.append(src.package)
                kept_here += 1
            else:
                skipped.append({"shape": key, "reason": out})
                reasons[re.sub(r"\b\d+\b", "N", out)[:60]] += 1
        report[src.package] = {
            "version": version,
            "licence": src.licence,
            "mesh_files": found,
            "readable": kept_here,
            "skipped": found - kept_here,
            "skip_reasons": dict(reasons.most_common()),
            "note": src.note,
            "seconds": round(time.time() - t1, 1),
        }
    if not clouds:
        raise DatasetError("the corpus packages yielded no readable mesh")
    order = np.argsort(np.asarray(keys))  # deterministic, independent of worker scheduling
    keys = [keys[i] for i in order]
    pkg_of = [pkg_of[i] for i in order]
    arr = np.stack([clouds[i] for i in order])
    del clouds
    owner = deduplicate(arr, dedup_ratio)
    keep = np.flatnonzero(owner == np.arange(len(owner)))
    for p in report:
        dup = sum(1 for i in range(len(keys)) if pkg_of[i] == p and owner[i] != i)
        report[p]["near_duplicates"] = dup
        report[p]["shapes"] = report[p]["readable"] - dup
    keys = [keys[i] for i in keep]
    pkg_of = [pkg_of[i] for i in keep]
    arr = arr[keep]
    # the 0 A.D. evaluation set: classes from paths, small classes left unlabelled
    names = [oad_class(k) if p == "0ad-data" else "" for k, p in zip(keys, pkg_of)]
    counts = Counter(n for n in names if n)
    classes = sorted(c for c, n in counts.items() if n >= OAD_MIN_PER_CLASS)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index.get(n, -1) for n in names], np.int64)
    lab = np.flatnonzero(labels >= 0)
    splits: dict[str, list[int]] = {"oad_train": [], "oad_val": [], "oad_test": []}
    if len(classes) >= 2 and len(lab) >= 10 * len(classes):
        tr, te = train_test_split(lab, test_size=0.2, random_state=0, stratify=labels[lab])
        tr, va = train_test_split(tr, test_size=0.2, random_state=0, stratify=labels[tr])
        splits = {"oad_train": sorted(map(int, tr)), "oad_val": sorted(map(int, va)), "oad_test": sorted(map(int, te))}
    held = set(splits["oad_val"]) | set(splits["oad_test"])
    splits["pretrain"] = [i for i in range(len(keys)) if i not in held]
    w = DatasetWriter(final)
    try:
        w.array("points", arr)
        w.array("labels", labels.astype(np.int16))
        w.json("shapes.json", [{"id": k, "package": p, "class": n} for k, p, n in zip(keys, pkg_of, names)])
        w.json("classes.json", classes)
        w.json("splits.json", splits)
        w.text("ATTRIBUTION.md", _attribution(report))
        for p, text in copyrights.items():
            w.text(f"LICENSE-debian-copyright-{p}.txt", text)
        meta = {
            "name": "corpus",
            "version": CORPUS_VERSION,
            "datasets": ["corpus", "oad"],
            "source_package": f"{len(chosen)} Debian packages",
            "package_version": "see packages",
            "packages": report,
            "points_per_shape": points,
            "dtype": "float16",
            "up_axis": "y",
            "normalisation": "centroid at origin, max norm 1",
            "sampling": "area-weighted uniform surface sampling (trimesh.sample.sample_surface), per-shape seed",
            "dedup": f"Chamfer distance to an earlier kept shape < {dedup_ratio} x their resampling noise (512 points)",
            "seed": seed,
            "shapes": len(keys),
            "labelled": len(lab),
            "pool": int((labels < 0).sum()),
            "classes": classes,
            "per_class": {c: int((labels == i).sum()) for i, c in enumerate(classes)},
            "splits": {k: len(v) for k, v in splits.items()},
            "skipped": {"count": len(skipped), "shapes": skipped},
            "subset": {"packages": packages, "limit_per_package": limit_per_package} if subset else None,
            "build_seconds": round(time.time() - t0, 1),
        }
        return w.commit(meta)
    except BaseException:
        w.abort()
        raise


def _attribution(report: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Corpus attribution",
        "",
        "Point clouds sampled from the 3D models of these Debian packages (licence texts: the",
        "LICENSE-debian-copyright-*.txt files next to this one). Share-alike licences apply to the",
        "derived point clouds.",
        "",
        "| package | version | licence | shapes kept |",
        "|---|---|---|---|",
    ]
    for p, r in report.items():
        lines.append(f"| {p} | {r['version']} | {r['licence']} | {r.get('shapes', 0)} |")
    return "\n".join(lines) + "\n"
