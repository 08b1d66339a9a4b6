"""KiCad-33 and KiCad-Parts from the VRML models of Debian ``kicad-packages3d``.

Library folders map to 33 coarse classes (KiCad-33); the remaining small libraries form the
unlabelled pool. Every point carries a part label from the material of the shape it was sampled
from: 0 body (plastic, epoxy, ... and the thin ``IC-LABEL`` marking decals, merged into body),
1 pins/metal (``PIN*``, ``MET*``), 2 lens/glass (``LED*``, ``GLASS*``). KiCad-Parts is the same
shapes without the all-metal ``standoff`` class, with each class as a segmentation category.
Coordinates are converted from KiCad's Z-up to the Y-up convention of the other datasets.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from typing_extensions import override

from foundry3d.data.building import DebianRecipe, Labelled, Sources, build_from_debian, split_or_all
from foundry3d.data.catalogue import KICAD_VERSION
from foundry3d.data.debian import iter_members
from foundry3d.data.mesh import MeshError, normalize_unit_sphere, sample_labelled_surface
from foundry3d.data.vrml import VRMLError, read_mesh

# (library folder patterns, class) in the order the classes are numbered.
LIBRARY_CLASSES: list[tuple[list[str], str]] = [
    (["Capacitor_THT"], "capacitor_tht"),
    (["Capacitor_SMD", "Capacitor_Tantalum_SMD"], "capacitor_smd"),
    (["Resistor_THT"], "resistor_tht"),
    (["Resistor_SMD"], "resistor_smd"),
    (["Inductor_THT"], "inductor_tht"),
    (["Inductor_SMD"], "inductor_smd"),
    (["Diode_THT"], "diode_tht"),
    (["Diode_SMD"], "diode_smd"),
    (["LED_THT"], "led_tht"),
    (["LED_SMD"], "led_smd"),
    (["Crystal"], "crystal"),
    (["Connector_PinHeader_*"], "pin_header"),
    (["Connector_PinSocket_*"], "pin_socket"),
    (["TerminalBlock_*", "Connector_Phoenix_*"], "terminal_block"),
    (["Connector_JST"], "connector_jst"),
    (["Connector_Molex"], "connector_molex"),
    (["Connector_Dsub"], "connector_dsub"),
    (["Connector_FFC-FPC"], "connector_ffc-fpc"),
    (["Button_Switch_*"], "button_switch"),
    (["Package_DIP"], "package_dip"),
    (["Package_SO"], "package_so"),
    (["Package_QFP"], "package_qfp"),
    (["Package_DFN_QFN", "Package_SON", "Package_LGA"], "package_qfn"),
    (["Package_BGA"], "package_bga"),
    (["Package_TO_SOT_THT"], "package_to_sot_tht"),
    (["Package_TO_SOT_SMD"], "package_to_sot_smd"),
    (["Varistor"], "varistor"),
    (["Relay_*"], "relay"),
    (["Mounting_Wuerth"], "standoff"),
    (["Display", "Display_7Segment"], "display"),
    (["Converter_DCDC"], "converter_dcdc"),
    (["Fuse"], "fuse"),
    (["Battery"], "battery"),
]
CLASSES = [c for _, c in LIBRARY_CLASSES]
PARTS = ["body", "pins", "lens"]
PARTS_EXCLUDED_CLASSES = ["standoff"]  # all metal: nothing to segment


def library_class(library: str) -> str:
    """Class of a library folder name (without ``.3dshapes``), or 'other'."""
    for patterns, cls in LIBRARY_CLASSES:
        if any(fnmatch.fnmatchcase(library, p) for p in patterns):
            return cls
    return "other"


def material_part(material: str) -> int:
    """Part id of a KiCad material name: marking decals count as body."""
    m = material.upper()
    if m.startswith(("PIN", "MET")):
        return 1
    if m.startswith(("LED", "GLASS")):
        return 2
    return 0


def sample_wrl(data: bytes, source: str, num_points: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Y-up unit-sphere cloud (N, 3), per-point part ids (N,), and the materials found."""
    v, faces, face_mat, materials = read_mesh(data, source)
    if len(faces) == 0:
        raise MeshError("no geometry")
    labels = np.array([material_part(m) for m in materials], np.uint8)[face_mat]
    v = np.stack([v[:, 0], v[:, 2], -v[:, 1]], 1)  # Z-up -> Y-up
    pts, parts = sample_labelled_surface(v, faces, labels, num_points, seed)
    return normalize_unit_sphere(pts), parts.astype(np.uint8), sorted(set(materials))


class KiCad(DebianRecipe):
    """Every VRML model of the library folders, sampled with per-point parts; classes from the folders."""

    name = "kicad"
    version = KICAD_VERSION
    packages = ("kicad-packages3d",)
    errors = (MeshError, VRMLError)
    sort_by_key = True  # members stream in archive order

    def __init__(self, libraries: list[str] | None = None, limit_per_library: int | None = None) -> None:
        self.libraries, self.limit_per_library = libraries, limit_per_library
        self.subset = libraries is not None or limit_per_library is not None

    @override
    def folder(self) -> str:
        return "kicad-subset" if self.subset else self.name

    @override
    def jobs(self, src: Sources, points: int) -> Iterator[tuple[str, tuple[str, bytes]]]:
        patterns = (
            [f"usr/share/kicad/3dmodels/{lib}.3dshapes/*.wrl" for lib in self.libraries]
            if self.libraries
            else ["usr/share/kicad/3dmodels/*.3dshapes/*.wrl"]
        )
        per_lib: Counter = Counter()
        for path, data in iter_members(src.debs["kicad-packages3d"], patterns):
            lib = path.split("/")[-2].removesuffix(".3dshapes")
            if self.limit_per_library is not None and per_lib[lib] >= self.limit_per_library:
                continue
            per_lib[lib] += 1
            yield path, (path, data)

    @override
    @override
    def describe(self, job: tuple[str, bytes]) -> None:
        return None  # the key is the path; the bytes stay with the worker

    @staticmethod
    @override
    def sample(job: tuple[str, bytes], points: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        path, data = job
        return sample_wrl(data, path, points, seed)

    @override
    def label(self, keys: list[str], jobs: list, results: list, src: Sources) -> Labelled:
        libs = [p.split("/")[-2].removesuffix(".3dshapes") for p in keys]
        names = [library_class(lib) for lib in libs]
        cls_index = {c: i for i, c in enumerate(CLASSES)}
        labels = np.array([cls_index.get(n, -1) for n in names], np.int64)
        parts = np.stack([r[1] for r in results])
        tr, te = split_or_all(labels)
        pool_idx = [int(i) for i in np.flatnonzero(labels < 0)]
        excluded = {cls_index[c] for c in PARTS_EXCLUDED_CLASSES}
        parts_train = [i for i in tr if labels[i] not in excluded]
        parts_test = [i for i in te if labels[i] not in excluded]
        part_categories = [c for c in CLASSES if c not in PARTS_EXCLUDED_CLASSES]
        cat_index = {cls_index[c]: j for j, c in enumerate(part_categories)}
        category_parts = {}
        for j, c in enumerate(part_categories):
            members = [i for i in parts_train if labels[i] == cls_index[c]]
            present = sorted(
                {int(p) for i in members for p, n in zip(*np.unique(parts[i], return_counts=True)) if n >= 16}
            )
            category_parts[j] = present or [0]
        both = parts[parts_train + parts_test]
        share = np.bincount(both.ravel(), minlength=3) / max(1, both.size)
        outside = sum(int((~np.isin(parts[i], category_parts[cat_index[int(labels[i])]])).sum()) for i in parts_test)
        return Labelled(
            labels=labels,
            classes=CLASSES,
            shapes=[
                {"id": p, "library": lib, "class": n, "materials": r[2]}
                for p, lib, n, r in zip(keys, libs, names, results)
            ],
            splits={"train": tr, "test": te, "pool": pool_idx, "parts_train": parts_train, "parts_test": parts_test},
            arrays={"parts": parts},
            files={
                "parts.json": {
                    "parts": PARTS,
                    "categories": part_categories,
                    "category_parts": {str(k): v for k, v in category_parts.items()},
                }
            },
            meta={
                "datasets": ["kicad33", "kicadparts"],
                "up_axis": "y (converted from KiCad's z-up)",
                "parts": PARTS,
                "part_point_share": {n: round(float(v), 4) for n, v in zip(PARTS, share)},
                "parts_test_points_outside_category_parts": outside,
                "subset": {"libraries": self.libraries, "limit_per_library": self.limit_per_library}
                if self.subset
                else None,
            },
        )

    @override
    def attribution(self, labelled: Labelled, src: Sources) -> str:
        return _kicad_attribution(src.versions["kicad-packages3d"], Counter(s["library"] for s in labelled.shapes))


def build_kicad(
    root: str | Path | None = None,
    points: int = 4096,
    seed: int = 0,
    workers: int | None = None,
    deb: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    libraries: list[str] | None = None,
    limit_per_library: int | None = None,
) -> Path:
    """Build KiCad-33 + KiCad-Parts from ``kicad-packages3d`` (VRML only); returns the folder.

    ``libraries``/``limit_per_library`` restrict the build to a subset (for quick tests); such a
    build goes to a separate ``kicad-subset`` folder.
    """
    recipe = KiCad(libraries, limit_per_library)
    debs = {"kicad-packages3d": deb} if deb else None
    total = None if recipe.subset else 6227
    return build_from_debian(recipe, root, points, seed, workers, force, progress, debs, total=total)


def _kicad_attribution(version: str, libs: Counter) -> str:
    lines = [
        "# KiCad-33 / KiCad-Parts attribution",
        "",
        f"Point clouds sampled from the VRML models of the Debian package kicad-packages3d {version}",
        "(the KiCad 3D model libraries, https://kicad.github.io/packages3d), licensed CC-BY-SA-4.0 with",
        "the KiCad libraries exception (see LICENSE-debian-copyright.txt). Derived point clouds keep",
        "CC-BY-SA-4.0; attribution: the KiCad library contributors.",
        "",
        "| library | models |",
        "|---|---|",
    ]
    lines += [f"| {lib} | {n} |" for lib, n in sorted(libs.items())]
    return "\n".join(lines) + "\n"
