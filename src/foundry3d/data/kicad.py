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
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from foundry3d.data.base import DatasetError
from foundry3d.data.building import base_meta, parallel_map, split_or_all
from foundry3d.data.catalogue import KICAD_VERSION
from foundry3d.data.debian import download_package, iter_members, package_version
from foundry3d.data.mesh import MeshError, normalize_unit_sphere, sample_labelled_surface, shape_seed
from foundry3d.data.store import DatasetWriter, cache_dir, dataset_dir, is_complete
from foundry3d.data.vrml import VRMLError, read_mesh
from foundry3d.errors import InputError

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


def sample_job(args: tuple[str, bytes, int, int]) -> tuple[str, str, object]:
    """Worker entry point: (path, 'ok', result) or (path, 'skip', reason)."""
    path, data, num_points, seed = args
    try:
        return path, "ok", sample_wrl(data, path, num_points, shape_seed(seed, path))
    except (MeshError, VRMLError) as e:
        return path, "skip", str(e)


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
    if points < 2048:
        raise InputError(f"points={points}: store at least 2048 points per shape (1024/2048-point protocols)")
    subset = libraries is not None or limit_per_library is not None
    final = dataset_dir("kicad-subset" if subset else "kicad", KICAD_VERSION, root)
    if is_complete(final) and not force:
        return final
    t0 = time.time()
    cache = cache_dir(root)
    deb_path = Path(deb) if deb else download_package("kicad-packages3d", cache)
    version = package_version(deb_path)
    patterns = (
        [f"usr/share/kicad/3dmodels/{lib}.3dshapes/*.wrl" for lib in libraries]
        if libraries
        else ["usr/share/kicad/3dmodels/*.3dshapes/*.wrl"]
    )
    copyright_text = ""
    for _, data in iter_members(deb_path, ["usr/share/doc/kicad-packages3d/copyright"]):
        copyright_text = data.decode(errors="replace")

    def jobs():
        per_lib: Counter = Counter()
        for path, data in iter_members(deb_path, patterns):
            lib = path.split("/")[-2].removesuffix(".3dshapes")
            if limit_per_library is not None and per_lib[lib] >= limit_per_library:
                continue
            per_lib[lib] += 1
            yield (path, data, points, seed)

    results: dict[str, tuple[str, Any]] = {}
    total = 6227 if not subset else None
    for path, status, out in parallel_map(sample_job, jobs(), workers, "kicad", progress, total=total, chunksize=8):
        results[path] = (status, out)
    if not results:
        raise DatasetError(f"{deb_path}: no .wrl models matched {patterns}")
    paths = sorted(results)
    kept = [p for p in paths if results[p][0] == "ok"]
    skipped = [{"shape": p, "reason": results[p][1]} for p in paths if results[p][0] != "ok"]
    libs = [p.split("/")[-2].removesuffix(".3dshapes") for p in kept]
    names = [library_class(lib) for lib in libs]
    cls_index = {c: i for i, c in enumerate(CLASSES)}
    labels = np.array([cls_index.get(n, -1) for n in names], np.int64)
    parts = np.stack([results[p][1][1] for p in kept])
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
        present = sorted({int(p) for i in members for p, n in zip(*np.unique(parts[i], return_counts=True)) if n >= 16})
        category_parts[j] = present or [0]
    share = np.bincount(parts[parts_train + parts_test].ravel(), minlength=3) / max(
        1, parts[parts_train + parts_test].size
    )
    outside = sum(int((~np.isin(parts[i], category_parts[cat_index[int(labels[i])]])).sum()) for i in parts_test)
    w = DatasetWriter(final)
    try:
        w.array("points", np.stack([results[p][1][0] for p in kept]).astype(np.float16))
        w.array("labels", labels.astype(np.int16))
        w.array("parts", parts)
        w.json(
            "shapes.json",
            [
                {"id": p, "library": lib, "class": n, "materials": results[p][1][2]}
                for p, lib, n in zip(kept, libs, names)
            ],
        )
        w.json("classes.json", CLASSES)
        w.json(
            "splits.json",
            {"train": tr, "test": te, "pool": pool_idx, "parts_train": parts_train, "parts_test": parts_test},
        )
        w.json(
            "parts.json",
            {
                "parts": PARTS,
                "categories": part_categories,
                "category_parts": {str(k): v for k, v in category_parts.items()},
            },
        )
        w.text("ATTRIBUTION.md", _kicad_attribution(version, Counter(libs)))
        if copyright_text:
            w.text("LICENSE-debian-copyright.txt", copyright_text)
        splits = {"train": tr, "test": te, "pool": pool_idx, "parts_train": parts_train, "parts_test": parts_test}
        meta = base_meta(
            "kicad",
            KICAD_VERSION,
            "kicad-packages3d",
            version,
            points,
            seed,
            t0,
            skipped,
            CLASSES,
            labels,
            splits,
            datasets=["kicad33", "kicadparts"],
            up_axis="y (converted from KiCad's z-up)",
            parts=PARTS,
            part_point_share={n: round(float(v), 4) for n, v in zip(PARTS, share)},
            parts_test_points_outside_category_parts=outside,
            subset={"libraries": libraries, "limit_per_library": limit_per_library} if subset else None,
        )
        return w.commit(meta)
    except BaseException:
        w.abort()
        raise


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
