"""UFO:AI-10: the 3D models of Debian ``ufoai-data`` (UFO: Alien Invasion) as a 10-class point-cloud set.

A fourth domain beside furniture (SH3D-16), electronics (KiCad-33) and 0 A.D.'s buildings and props, from a
package no pretraining reads. The models (Quake II MD2, a few OBJ) sit in ``base/0models.pk3``, a zip inside
the package; classes come from their folders and file names by ordered rules (first match wins): heads and
bodies of soldiers, civilians and aliens, firearms and their ammunition, aircraft and their wreckage, plants,
vehicles, furniture, street props. Everything else (and every later copy of an identical mesh) is the
unlabelled pool. MD2 is Z-up; its clouds are turned Y-up like the other datasets (the OBJ models are Y-up).

This file is the whole dataset: its catalogue entry and its build recipe (heavy imports happen in the build).
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import zipfile
from typing import Any, ClassVar

import numpy as np
from typing_extensions import override

from foundry3d.data.building import DebianRecipe, Labelled, Sources, recipe_builder
from foundry3d.data.catalogue import BuiltDataset, register_dataset
from foundry3d.data.mesh import MeshError, normalize_unit_sphere, sample_labelled_surface

VERSION = "1"
PACKAGE = "ufoai-data"
ARCHIVE = "usr/share/games/ufoai/base/0models.pk3"

# (class, pattern searched in the model's path inside the archive); first match wins, no match: the pool
RULES: list[tuple[str, str]] = [
    ("head", r"^models/(soldiers|civilians|pilots|aliens)/[^/]+/[a-z_]*head"),
    ("ammo", r"^models/weapons/.*(clip|ammo)"),
    ("firearm", r"^models/weapons/"),
    ("wreckage", r"^models/objects/(aircraft/crash_|alien/(ufo_crashed|ufo_scout_crashed|disassembled)/)"),
    ("aircraft", r"^models/(aircraft|geoscape)/(drop|inter|ufo)_(?!.*(seat|ammobox|extinguiser|wallbox|_int))"),
    ("humanoid", r"^models/(soldiers|civilians|pilots)/[^/]+/[a-z_]*body|^models/characters/"),
    ("plant", r"^models/objects/vegi/"),
    ("vehicle", r"^models/objects/(cars|trucks|vehicles|tanker|abrams|lorry|hovercraft|railcar|boat)/"),
    ("furniture", r"^models/objects/(furniture|bathroom)/"),
    ("street", r"^models/objects/city/"),
]
CLASSES = [c for c, _ in RULES]


def model_class(path: str) -> str:
    """Class of a model path inside ``0models.pk3`` ('other' when no rule matches)."""
    return next((c for c, p in RULES if re.search(p, path)), "other")


def read_md2(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) of the first frame and triangles (F, 3) of a Quake II MD2 model.

    The header is 17 little-endian int32 after the magic ``IDP2``: version 8, skin size, frame size, counts
    (skins, vertices, texture coordinates, triangles, GL commands, frames) and the offsets of each block.
    A frame is scale (3 float), translate (3 float), a 16-byte name and one (x, y, z, normal) byte quadruple
    per vertex; a triangle is three vertex and three texture-coordinate uint16 indices.
    """
    if len(data) < 68 or data[:4] != b"IDP2":
        raise MeshError(f"{source}: not an MD2 model (magic {data[:4]!r})")
    h = struct.unpack_from("<16i", data, 4)
    version, nv, ntri, nframes, ofs_tris, ofs_frames = h[0], h[5], h[7], h[9], h[12], h[13]
    if version != 8 or nv < 3 or ntri < 1 or nframes < 1:
        raise MeshError(f"{source}: MD2 version {version} with {nv} vertices, {ntri} triangles, {nframes} frames")
    if ofs_tris + 12 * ntri > len(data) or ofs_frames + 40 + 4 * nv > len(data):
        raise MeshError(f"{source}: MD2 blocks run past the end of the file ({len(data)} bytes)")
    tris = np.frombuffer(data, np.uint16, 6 * ntri, ofs_tris).reshape(ntri, 6)[:, :3].astype(np.int64)
    scale = np.frombuffer(data, np.float32, 3, ofs_frames)
    shift = np.frombuffer(data, np.float32, 3, ofs_frames + 12)
    packed = np.frombuffer(data, np.uint8, 4 * nv, ofs_frames + 40).reshape(nv, 4)[:, :3]
    if tris.max() >= nv:
        raise MeshError(f"{source}: a triangle indexes vertex {tris.max()} of {nv}")
    return packed.astype(np.float64) * scale + shift, tris


def read_model(path: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of an MD2 or OBJ member."""
    if path.lower().endswith(".md2"):
        return read_md2(data, path)
    import trimesh  # OBJ only (a handful of models)

    try:
        mesh = trimesh.load(io.BytesIO(data), file_type="obj", force="mesh", skip_materials=True)
    except Exception as e:  # trimesh raises many types on malformed OBJ
        raise MeshError(f"{path}: unreadable OBJ ({type(e).__name__}: {e})") from e
    if not isinstance(mesh, trimesh.Trimesh):
        raise MeshError(f"{path}: the OBJ holds no triangle mesh")
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)


class UFOAI(DebianRecipe):
    """Every MD2/OBJ model of ``0models.pk3``, sampled Y-up; classes from the paths; identical meshes pooled."""

    name = "ufoai"
    version = VERSION
    packages = (PACKAGE,)
    extract: ClassVar[dict[str, tuple[str, ...]]] = {PACKAGE: (ARCHIVE,)}

    @override
    def jobs(self, src: Sources, points: int) -> list[tuple[str, tuple[str, str]]]:
        archive = src.folders[PACKAGE] / ARCHIVE
        try:
            with zipfile.ZipFile(archive) as z:
                names = sorted(
                    n for n in z.namelist() if n.startswith("models/") and n.lower().endswith((".md2", ".obj"))
                )
        except zipfile.BadZipFile as e:
            raise MeshError(f"{archive}: not a readable pk3 (zip) archive ({e})") from e
        return [(n, (str(archive), n)) for n in names]

    @staticmethod
    @override
    def sample(job: tuple[str, str], points: int, seed: int) -> tuple[np.ndarray, str]:
        archive, path = job
        with zipfile.ZipFile(archive) as z:
            v, f = read_model(path, z.read(path))
        if len(f) < 4:
            raise MeshError(f"{len(f)} triangles: not a shape")
        digest = hashlib.sha1(np.round(v, 4).tobytes() + f.tobytes()).hexdigest()  # same mesh, other skin
        pts, _ = sample_labelled_surface(v, f, np.zeros(len(f), np.uint8), points, seed)
        if path.lower().endswith(".md2"):
            pts = np.stack([pts[:, 0], pts[:, 2], -pts[:, 1]], 1)  # MD2 is Z-up; the OBJ models are Y-up already
        return normalize_unit_sphere(pts), digest

    @override
    def label(self, keys: list[str], jobs: list[Any], results: list[Any], src: Sources) -> Labelled:
        index = {c: i for i, c in enumerate(CLASSES)}
        first: dict[str, str] = {}
        labels, shapes = [], []
        for key, (_, digest) in zip(keys, results):
            cls, copy_of = model_class(key), first.setdefault(digest, key)
            labels.append(index.get(cls, -1) if copy_of == key else -1)  # a copy never sits in two splits
            shapes.append({"id": key, "class": cls, **({"copy_of": copy_of} if copy_of != key else {})})
        copies = sum("copy_of" in s for s in shapes)
        return Labelled(
            np.array(labels, np.int64),
            CLASSES,
            shapes,
            meta={"up_axis": "y (MD2 turned from z-up)", "copies": copies},
        )

    @override
    def attribution(self, labelled: Labelled, src: Sources) -> str:
        return (
            "# UFO:AI-10 attribution\n\n"
            f"Point clouds sampled from the 3D models of the Debian package {PACKAGE} {src.versions[PACKAGE]} "
            "(UFO: Alien Invasion, https://ufoai.org), whose models are licensed GPL-2+ and CC-BY-SA (per file: "
            "LICENSE-debian-copyright.txt). The derived point clouds keep those licences; attribution: the UFO:AI "
            "team and contributors.\n"
        )


build_ufoai = recipe_builder(UFOAI)  # (root, points, seed, workers, deb, force, progress) -> its folder

register_dataset(
    BuiltDataset("ufoai", "UFO:AI-10", "ufoai", f"{__name__}:build_ufoai", "ufoai", VERSION, aliases=("ufoai10",))
)
