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
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from foundry3d.data.base import DatasetError
from foundry3d.data.building import base_meta, parallel_map, split_or_all
from foundry3d.data.catalogue import SH3D_VERSION
from foundry3d.data.debian import download_package, extract_members, package_version
from foundry3d.data.mesh import MeshError, normalize_unit_sphere, sample_labelled_surface, shape_seed
from foundry3d.data.store import DatasetWriter, cache_dir, dataset_dir, is_complete
from foundry3d.errors import InputError

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


def sample_job(args: tuple[CatalogEntry, int, int]) -> tuple[str, object]:
    """Worker entry point: ('ok', (points, groups, names)) or ('skip', reason)."""
    entry, num_points, seed = args
    try:
        return "ok", sample_entry(entry, num_points, shape_seed(seed, entry.key))
    except MeshError as e:
        return "skip", str(e)


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
    if points < 2048:
        raise InputError(f"points={points}: store at least 2048 points per shape (1024/2048-point protocols)")
    name = "sh3d16" if limit is None else f"sh3d16-subset{limit}"
    final = dataset_dir(name, SH3D_VERSION, root)
    if is_complete(final) and not force:
        return final
    t0 = time.time()
    cache = cache_dir(root)
    deb_path = Path(deb) if deb else download_package("sweethome3d-furniture", cache)
    version = package_version(deb_path)
    src = cache / "src" / f"sweethome3d-furniture_{version}"
    if not (src / ".complete").exists():
        extract_members(
            deb_path,
            src,
            ["usr/share/sweethome3d/furniture/*.sh3f", "usr/share/doc/sweethome3d-furniture/copyright"],
        )
        (src / ".complete").write_text("ok\n")
    entries = read_packs(src / "usr/share/sweethome3d/furniture")
    if not entries:
        raise DatasetError(f"no furniture packs found in {src}")
    if limit is not None:
        entries = entries[:limit]
    jobs = [(e, points, seed) for e in entries]
    results = list(parallel_map(sample_job, jobs, workers, "sh3d16", progress, total=len(entries)))
    kept = [(e, r[1]) for e, r in zip(entries, results) if r[0] == "ok"]
    skipped = [{"shape": e.key, "name": e.name, "reason": r[1]} for e, r in zip(entries, results) if r[0] != "ok"]
    cls_index = {c: i for i, c in enumerate(CLASSES)}
    labels = np.array([cls_index.get(e.label, -1) for e, _ in kept], np.int64)
    tr, te = split_or_all(labels)
    pool_idx = [int(i) for i in np.flatnonzero(labels < 0)]
    w = DatasetWriter(final)
    try:
        w.array("points", np.stack([r[0] for _, r in kept]).astype(np.float16))
        w.array("labels", labels.astype(np.int16))
        w.array("groups", np.stack([r[1] for _, r in kept]))
        w.json(
            "shapes.json",
            [
                {
                    "id": e.key,
                    "name": e.name,
                    "category": e.category,
                    "class": e.label,
                    "creator": e.creator,
                    "pack": e.pack,
                    "license": e.license,
                    "model": e.model,
                    "rotation": e.rotation,
                    "groups": r[2],
                }
                for e, r in kept
            ],
        )
        w.json("classes.json", CLASSES)
        w.json("splits.json", {"train": tr, "test": te, "pool": pool_idx})
        w.text("ATTRIBUTION.md", _sh3d_attribution(kept, version))
        copyright_file = src / "usr/share/doc/sweethome3d-furniture/copyright"
        if copyright_file.exists():
            w.text("LICENSE-debian-copyright.txt", copyright_file.read_text(errors="replace"))
        splits = {"train": tr, "test": te, "pool": pool_idx}
        meta = base_meta(
            "sh3d16",
            SH3D_VERSION,
            "sweethome3d-furniture",
            version,
            points,
            seed,
            t0,
            skipped,
            CLASSES,
            labels,
            splits,
            up_axis="y",
            limit=limit,
        )
        return w.commit(meta)
    except BaseException:
        w.abort()
        raise


def _sh3d_attribution(kept: list, version: str) -> str:
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
    for e, _ in kept:
        lines.append(f"| {e.key} | {e.name} | {e.creator or 'unknown'} | {e.license} |")
    return "\n".join(lines) + "\n"
