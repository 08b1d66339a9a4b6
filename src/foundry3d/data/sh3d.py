"""SH3D-16: SweetHome3D furniture (Debian ``sweethome3d-furniture``) as a 16-class point-cloud set.

Each ``.sh3f`` pack is a zip with ``PluginFurnitureCatalog.properties`` (name, category, creator,
model path, optional ``modelRotation``) and OBJ models. Names map to 16 classes with ordered
rules (first match wins); everything else is the unlabelled pool. OBJ files are Y-up; the
catalog rotation R (row-major 3x3) is applied as v' = R v to make shapes upright. Each point keeps
the index of the OBJ group (sub-mesh) it was sampled from.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import trimesh
from typing_extensions import override

from foundry3d.data.base import DatasetError
from foundry3d.data.building import DebianRecipe, Labelled, Sources, build_from_debian
from foundry3d.data.catalogue import SH3D_VERSION
from foundry3d.data.mesh import MeshError, normalize_unit_sphere, sample_labelled_surface

CLASSES = [
    "chair",
    "table",
    "plant",
    "lamp",
    "plug_switch",
    "cabinet",
    "person",
    "sofa",
    "car",
    "window",
    "bed",
    "door",
    "cup_glass",
    "animal",
    "bottle",
    "bookshelf",
]

# (class, required catalog category or None, patterns (regex search on the lower-cased name), excludes)
RULES: list[tuple[str, str | None, list[str], list[str]]] = [
    (
        "car",
        "Vehicles",
        [
            r"sedan",
            r"suv",
            r"\bvan\b",
            r"chevrolet",
            r"ford",
            r"peugeot",
            r"renault",
            r"seat leon",
            r"smart car",
            r"beetle",
            r"truck",
            r"bus",
        ],
        [],
    ),
    ("person", "Characters", [r""], ["dog", "cat", "horse", "rabbit", "chicken", "bulldog"]),
    ("animal", None, [r"\b(dog|cat|horse|rabbit|chicken|bulldog|deer)\b"], ["house", "rocking"]),
    ("door", None, [r"\bdoors?\b"], ["cabinet", "bell"]),
    ("window", None, [r"window"], ["blind"]),
    ("sofa", None, [r"sofa", r"couch", r"futon"], ["convertible"]),
    ("chair", None, [r"chair", r"stool", r"\bseat\b", r"ottoman", r"\bpuff\b", r"lounge"], ["wheel"]),
    ("bed", None, [r"\bbed\b", r"\bcrib\b", r"mattress"], ["bedside"]),
    (
        "table",
        None,
        [r"\btable\b", r"\bdesk\b"],
        ["lamp", "tennis", "football", "pool", "changing", "dressing", "fan", "bedside"],
    ),
    ("lamp", None, [r"lamp", r"light", r"lantern", r"chandelier"], ["lightsource"]),
    ("bookshelf", None, [r"bookcase", r"shelves"], []),
    (
        "cabinet",
        None,
        [r"cabinet", r"wardrobe", r"dresser", r"cupboard", r"drawers", r"bedside", r"vanity", r"locker", r"chest\b"],
        ["freezer"],
    ),
    (
        "plant",
        None,
        [
            r"plant",
            r"tree",
            r"bush",
            r"hedge",
            r"cactus",
            r"ficus",
            r"palm",
            r"pine",
            r"flower",
            r"orchid",
            r"tulip",
            r"bamboo",
            r"yucca",
            r"bonsai",
            r"maple",
            r"acacia",
            r"cypress",
            r"poplar",
            r"beech",
            r"blossom",
            r"lily",
            r"spathiphyllum",
        ],
        [],
    ),
    ("plug_switch", None, [r"plug", r"switch", r"socket"], []),
    ("bottle", None, [r"bottle", r"flacon"], []),
    ("cup_glass", None, [r"\bcup\b", r"\bmug\b", r"\bglass\b"], []),
]

PACK_LICENSES = {
    "KatorLegaz": "CC-BY-3.0-US",
    "Reallusion": "CC-BY-3.0-US",
    "Scopia": "CC-BY-3.0",
    "BlendSwap-CC-BY": "CC-BY-3.0",
    "BlendSwap-CC-0": "CC0-1.0",
}


def classify(name: str, category: str) -> str:
    """Class of a catalog entry from its English name and room category ('other' if none)."""
    n = name.lower()
    for cls, cat, patterns, excludes in RULES:
        if cat is not None and category != cat:
            continue
        if any(x in n for x in excludes):
            continue
        if any(re.search(p, n) for p in patterns):
            return cls
    return "other"


def _unescape(value: str) -> str:
    return (
        re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), value)
        .replace("\\:", ":")
        .replace("\\=", "=")
        .replace("\\\\", "\\")
    )


def parse_catalog(text: str) -> dict[int, dict[str, str]]:
    """``PluginFurnitureCatalog.properties`` -> {index: {field: value}} (Java properties subset)."""
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip() if not buf else raw.lstrip()
        if not buf and (not line or line.startswith(("#", "!"))):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:  # an odd number of trailing backslashes continues the line
            buf += line[:-1]
            continue
        logical.append(buf + line)
        buf = ""
    entries: dict[int, dict[str, str]] = {}
    for line in logical:
        if "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip()
        m = re.fullmatch(r"(\w+)#(\d+)", key)
        if m:
            entries.setdefault(int(m.group(2)), {})[m.group(1)] = _unescape(value.strip())
    return {i: e for i, e in entries.items() if "name" in e and "model" in e}


@dataclass
class CatalogEntry:
    """One model of a Sweet Home 3D furniture catalogue: where it lives in the package and its category."""

    key: str  # "<pack>/<index>"
    pack: str
    pack_path: str
    name: str
    category: str
    creator: str
    model: str
    rotation: list[float] | None
    label: str
    license: str


def read_packs(folder: Path) -> list[CatalogEntry]:
    """All catalog entries of the .sh3f packs in ``folder``, in a stable order."""
    out = []
    for sh3f in sorted(folder.glob("*.sh3f")):
        pack = sh3f.stem
        try:
            with zipfile.ZipFile(sh3f) as z:
                text = z.read("PluginFurnitureCatalog.properties").decode("latin-1")
        except (zipfile.BadZipFile, KeyError) as e:
            raise MeshError(f"{sh3f}: not a SweetHome3D furniture pack ({e})") from e
        for i, entry in sorted(parse_catalog(text).items()):
            rot = entry.get("modelRotation")
            out.append(
                CatalogEntry(
                    key=f"{pack}/{i}",
                    pack=pack,
                    pack_path=str(sh3f),
                    name=entry["name"],
                    category=entry.get("category", ""),
                    creator=entry.get("creator", ""),
                    model=entry["model"].lstrip("/"),
                    rotation=[float(v) for v in rot.split()] if rot else None,
                    label=classify(entry["name"], entry.get("category", "")),
                    license=PACK_LICENSES.get(pack, "see LICENSE.TXT of the pack"),
                )
            )
    return out


def sample_entry(entry: CatalogEntry, num_points: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Upright, unit-sphere cloud (N, 3), per-point OBJ group ids (N,), and the group names."""
    with zipfile.ZipFile(entry.pack_path) as z:
        try:
            data = z.read(entry.model)
        except KeyError as e:
            raise MeshError(f"model file {entry.model} missing from {entry.pack}") from e
    try:
        scene = trimesh.load(io.BytesIO(data), file_type="obj", force="scene", skip_materials=True)
    except Exception as e:  # trimesh raises many types on malformed OBJ
        raise MeshError(f"unreadable OBJ ({type(e).__name__}: {e})") from e
    geoms = [g for g in scene.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]  # type: ignore[attr-defined]  # a Scene
    if not geoms:
        raise MeshError("OBJ has no faces")
    verts, faces, labels, names = [], [], [], []
    offset = 0
    for gi, g in enumerate(geoms):
        verts.append(np.asarray(g.vertices, np.float64))
        faces.append(np.asarray(g.faces, np.int64) + offset)
        labels.append(np.full(len(g.faces), min(gi, 255), np.uint8))
        names.append(str(g.metadata.get("name", f"group{gi}")))
        offset += len(g.vertices)
    v = np.concatenate(verts)
    if entry.rotation is not None:
        if len(entry.rotation) != 9:
            raise MeshError(f"modelRotation has {len(entry.rotation)} values, expected 9")
        v = v @ np.asarray(entry.rotation, np.float64).reshape(3, 3).T
    pts, groups = sample_labelled_surface(v, np.concatenate(faces), np.concatenate(labels), num_points, seed)
    return normalize_unit_sphere(pts), groups.astype(np.uint8), names


class SH3D16(DebianRecipe):
    """The catalogue entries of every furniture pack, sampled with their OBJ groups; classes from the names."""

    name = "sh3d16"
    version = SH3D_VERSION
    packages = ("sweethome3d-furniture",)
    extract: ClassVar[dict[str, tuple[str, ...]]] = {
        "sweethome3d-furniture": ("usr/share/sweethome3d/furniture/*.sh3f",)
    }
    default_points = 8192

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit

    @override
    def folder(self) -> str:
        return self.name if self.limit is None else f"sh3d16-subset{self.limit}"

    @override
    def jobs(self, src: Sources, points: int) -> list[tuple[str, CatalogEntry]]:
        entries = read_packs(src.folders["sweethome3d-furniture"] / "usr/share/sweethome3d/furniture")
        if not entries:
            raise DatasetError(f"no furniture packs found in {src.folders['sweethome3d-furniture']}")
        return [(e.key, e) for e in entries[: self.limit]]

    @staticmethod
    @override
    def sample(job: CatalogEntry, points: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        return sample_entry(job, points, seed)

    @override
    def label(self, keys: list[str], jobs: list[CatalogEntry], results: list, src: Sources) -> Labelled:
        cls_index = {c: i for i, c in enumerate(CLASSES)}
        shapes = [
            {
                "id": e.key, "name": e.name, "category": e.category, "class": e.label, "creator": e.creator,
                "pack": e.pack, "license": e.license, "model": e.model, "rotation": e.rotation, "groups": r[2],
            }
            for e, r in zip(jobs, results)
        ]  # fmt: skip
        return Labelled(
            labels=np.array([cls_index.get(e.label, -1) for e in jobs], np.int64),
            classes=CLASSES,
            shapes=shapes,
            arrays={"groups": np.stack([r[1] for r in results])},
            meta={"up_axis": "y", "limit": self.limit},
        )

    @override
    def attribution(self, labelled: Labelled, src: Sources) -> str:
        return _sh3d_attribution(labelled.shapes, src.versions["sweethome3d-furniture"])

    @override
    def skip_record(self, key: str, job: CatalogEntry, reason: str) -> dict[str, str]:
        return {"shape": key, "name": job.name, "reason": reason}


def build_sh3d16(
    root: str | Path | None = None,
    points: int = 8192,
    seed: int = 0,
    workers: int | None = None,
    deb: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    limit: int | None = None,
) -> Path:
    """Build SH3D-16 (+ unlabelled pool) from ``sweethome3d-furniture``; returns its folder.

    ``limit`` keeps only the first ``limit`` catalog entries (for quick tests); such a build
    goes to a separate ``sh3d16-subset`` folder so that it is never taken for the full set.
    """
    debs = {"sweethome3d-furniture": deb} if deb else None
    return build_from_debian(SH3D16(limit), root, points, seed, workers, force, progress, debs)


def _sh3d_attribution(shapes: list[dict], version: str) -> str:
    lines = [
        "# SH3D-16 attribution",
        "",
        f"Point clouds sampled from the 3D models of the Debian package sweethome3d-furniture {version}",
        "(SweetHome3D additional furniture libraries). Licences per pack: "
        + ", ".join(f"{k}: {v}" for k, v in PACK_LICENSES.items())
        + ". CC-BY models require attribution; the creators below are the catalog's `creator` fields.",
        "",
        "| shape | name | creator | licence |",
        "|---|---|---|---|",
    ]
    for e in shapes:
        lines.append(f"| {e['id']} | {e['name']} | {e['creator'] or 'unknown'} | {e['license']} |")
    return "\n".join(lines) + "\n"
