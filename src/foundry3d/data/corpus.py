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
import zipfile
from collections import Counter
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from scipy.spatial import cKDTree
from sklearn.model_selection import train_test_split
from typing_extensions import override

from foundry3d.data.base import DatasetError
from foundry3d.data.building import DebianRecipe, Labelled, Sources, build_from_debian
from foundry3d.data.catalogue import CORPUS_VERSION
from foundry3d.data.debian import iter_members
from foundry3d.data.gamemesh import read_g3d, read_pie, read_pmd
from foundry3d.data.mesh import MeshError, normalize_unit_sphere, sample_labelled_surface


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


def sample_mesh(key: str, data: bytes, points: int, seed: int) -> np.ndarray:
    """One mesh file -> its unit-sphere cloud (P, 3) float16; a mesh that is no shape raises ``MeshError``."""
    try:
        v, f = read_any(key, data)
        if len(f) < 8:
            raise MeshError(f"only {len(f)} triangles (a billboard or marker, not a shape)")
        pts, _ = sample_labelled_surface(v, f, np.zeros(len(f), np.int64), points, seed)
        pts = normalize_unit_sphere(pts)
        ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T)))
        if ev[0] <= 0 or np.sqrt(ev[0] / ev[-1]) < 0.01:
            raise MeshError("flat as a sheet (smallest/largest principal extent < 1 %)")
        return pts.astype(np.float16)
    except (MeshError, ValueError, IndexError, struct.error) as e:
        raise MeshError(str(e)[:160]) from e


def iter_meshes(source: Source, deb: Path, scratch: Path) -> Generator[tuple[str, bytes], None, None]:
    """(key, bytes) of every mesh file of one package; keys are ``package/path[/inner path]``."""

    if not source.members:
        return
    if not source.inner:
        for name, data in iter_members(deb, list(source.members)):
            yield f"{source.package}/{name}", data
        return
    # zip containers: unpacked once into the scratch folder (the build's extract step), then read their members
    containers = [p for p in scratch.rglob("*") if p.is_file() and p.name != ".complete"]
    for container in sorted(
        p for p in containers if any(fnmatch(p.relative_to(scratch).as_posix(), m) for m in source.members)
    ):
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


class Corpus(DebianRecipe):
    """Every readable mesh of the chosen packages, near-duplicates dropped; 0 A.D.'s labelled for ``oad``."""

    name = "corpus"
    version = CORPUS_VERSION
    sort_by_key = True  # deterministic, independent of the packages' archive order

    def __init__(
        self, packages: list[str] | None = None, limit_per_package: int | None = None, dedup_ratio: float = 1.2
    ) -> None:
        known = {s.package: s for s in SOURCES}
        unknown = sorted(set(packages or []) - set(known))
        if unknown:
            raise DatasetError(f"unknown corpus package(s) {', '.join(unknown)}; corpus packages: {', '.join(known)}")
        self.sources = [known[p] for p in packages] if packages else SOURCES
        self.packages = tuple(s.package for s in self.sources)  # type: ignore[misc]  # per build, not per class
        self.extract = {s.package: s.members for s in self.sources if s.inner}  # type: ignore[misc]
        self.subset = {"packages": packages, "limit_per_package": limit_per_package}
        self.limit, self.dedup_ratio = limit_per_package, dedup_ratio
        self.skipped: list[dict[str, str]] = []  # per package, for the report
        self.report: dict[str, dict[str, Any]] = {}

    @override
    def folder(self) -> str:
        return "corpus-subset" if self.subset["packages"] or self.limit is not None else self.name

    @override
    def jobs(self, src: Sources, points: int) -> Iterator[tuple[str, tuple[str, bytes]]]:
        for source in self.sources:
            with closing(iter_meshes(source, src.debs[source.package], src.folders[source.package])) as meshes:
                for i, (key, data) in enumerate(meshes):
                    if self.limit is not None and i >= self.limit:
                        break  # closing stops the package's reader (and its dpkg-deb) now
                    yield key, (key, data)

    @override
    @override
    def describe(self, job: tuple[str, bytes]) -> None:
        return None  # the key says everything; the mesh bytes stay with the worker

    @staticmethod
    @override
    def sample(job: tuple[str, bytes], points: int, seed: int) -> tuple[np.ndarray]:
        return (sample_mesh(job[0], job[1], points, seed),)

    @override
    def label(self, keys: list[str], jobs: list, results: list, src: Sources) -> Labelled:
        arr = np.stack([r[0] for r in results])
        owner = deduplicate(arr, self.dedup_ratio)
        keep = [int(i) for i in np.flatnonzero(owner == np.arange(len(owner)))]
        pkg_of = [k.split("/", 1)[0] for k in keys]
        found = Counter(pkg_of) + Counter(r["package"] for r in self.skipped)
        report: dict[str, dict[str, Any]] = {}
        for s in self.sources:
            p = s.package
            readable = sum(1 for q in pkg_of if q == p)
            dup = sum(1 for i in range(len(keys)) if pkg_of[i] == p and owner[i] != i)
            reasons = Counter(re.sub(r"\b\d+\b", "N", r["reason"])[:60] for r in self.skipped if r["package"] == p)
            report[p] = {
                "version": src.versions[p], "licence": s.licence, "mesh_files": found[p], "readable": readable,
                "skipped": found[p] - readable, "skip_reasons": dict(reasons.most_common()), "note": s.note,
                "near_duplicates": dup, "shapes": readable - dup,
            }  # fmt: skip
        keys, pkg_of = [keys[i] for i in keep], [pkg_of[i] for i in keep]
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
            splits = {
                "oad_train": sorted(map(int, tr)),
                "oad_val": sorted(map(int, va)),
                "oad_test": sorted(map(int, te)),
            }
        held = set(splits["oad_val"]) | set(splits["oad_test"])
        splits["pretrain"] = [i for i in range(len(keys)) if i not in held]
        self.report = report
        return Labelled(
            labels, classes, [{"id": k, "package": p, "class": n} for k, p, n in zip(keys, pkg_of, names)],
            splits=splits, keep=keep,
            meta={
                "datasets": ["corpus", "oad"], "packages": report, "up_axis": "y",
                "dedup": f"Chamfer distance to an earlier kept shape < {self.dedup_ratio} x their resampling noise "
                "(512 points)",
                "subset": self.subset if self.folder() != self.name else None,
            },
        )  # fmt: skip

    @override
    def skip_record(self, key: str, job: None, reason: str) -> dict[str, str]:
        self.skipped.append({"package": key.split("/", 1)[0], "reason": reason})
        return {"shape": key, "reason": reason}

    @override
    def attribution(self, labelled: Labelled, src: Sources) -> str:
        return _attribution(self.report)


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
    if deb is not None:
        raise DatasetError("the corpus comes from several packages: pass debs={package: path} (Python) instead of deb")
    recipe = Corpus(packages, limit_per_package, dedup_ratio)
    return build_from_debian(recipe, root, points, seed, workers, force, progress, debs)


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
