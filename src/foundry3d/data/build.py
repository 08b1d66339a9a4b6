"""``foundry3d data build``: Debian package -> compact, versioned point-cloud dataset.

Builds are deterministic (per-shape seeds derived from the shape's id), use every core through
a process pool, show a progress bar, report skipped meshes, and commit atomically.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from foundry3d.data import kicad, sh3d
from foundry3d.data.base import DatasetError
from foundry3d.data.corpus import build_corpus
from foundry3d.data.debian import download_package, extract_members, iter_members, package_version
from foundry3d.data.kicadboards import build_kicadboards
from foundry3d.data.store import DatasetWriter, cache_dir, dataset_dir, is_complete

SH3D_VERSION = "1"
KICAD_VERSION = "1"
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def _workers(n: int | None) -> int:
    return max(1, n if n else (os.cpu_count() or 1))


def stratified_split(labels: np.ndarray, seed: int = SPLIT_SEED, test: float = TEST_FRACTION) -> tuple[list, list]:
    """Stratified train/test indices of the labelled entries (label >= 0), fixed seed."""
    idx = np.flatnonzero(labels >= 0)
    tr, te = train_test_split(idx, test_size=test, random_state=seed, stratify=labels[idx])
    return sorted(int(i) for i in tr), sorted(int(i) for i in te)


def _progress(total: int, desc: str, show: bool) -> Any:
    return tqdm(total=total, desc=desc, unit="shape", disable=not show, dynamic_ncols=True)


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
        raise ValueError(f"points={points}: store at least 2048 points per shape (1024/2048-point protocols)")
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
    entries = sh3d.read_packs(src / "usr/share/sweethome3d/furniture")
    if not entries:
        raise DatasetError(f"no furniture packs found in {src}")
    if limit is not None:
        entries = entries[:limit]
    results: list[Any] = []
    with mp.get_context("fork").Pool(_workers(workers)) as pool:
        bar = _progress(len(entries), "sh3d16", progress)
        for r in pool.imap(sh3d.sample_job, [(e, points, seed) for e in entries], chunksize=4):
            results.append(r)
            bar.update(1)
        bar.close()
    kept = [(e, r[1]) for e, r in zip(entries, results) if r[0] == "ok"]
    skipped = [{"shape": e.key, "name": e.name, "reason": r[1]} for e, r in zip(entries, results) if r[0] != "ok"]
    cls_index = {c: i for i, c in enumerate(sh3d.CLASSES)}
    labels = np.array([cls_index.get(e.label, -1) for e, _ in kept], np.int64)
    tr, te = _split_or_all(labels)
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
        w.json("classes.json", sh3d.CLASSES)
        w.json("splits.json", {"train": tr, "test": te, "pool": pool_idx})
        w.text("ATTRIBUTION.md", _sh3d_attribution(kept, version))
        copyright_file = src / "usr/share/doc/sweethome3d-furniture/copyright"
        if copyright_file.exists():
            w.text("LICENSE-debian-copyright.txt", copyright_file.read_text(errors="replace"))
        counts = Counter(e.label for e, _ in kept)
        meta = {
            "name": "sh3d16",
            "version": SH3D_VERSION,
            "source_package": "sweethome3d-furniture",
            "package_version": version,
            "points_per_shape": points,
            "dtype": "float16",
            "up_axis": "y",
            "normalisation": "centroid at origin, max norm 1",
            "sampling": "area-weighted uniform surface sampling (trimesh.sample.sample_surface), per-shape seed",
            "seed": seed,
            "split_seed": SPLIT_SEED,
            "test_fraction": TEST_FRACTION,
            "shapes": len(kept),
            "labelled": int((labels >= 0).sum()),
            "pool": len(pool_idx),
            "classes": sh3d.CLASSES,
            "per_class": {c: counts.get(c, 0) for c in sh3d.CLASSES},
            "splits": {"train": len(tr), "test": len(te), "pool": len(pool_idx)},
            "skipped": {"count": len(skipped), "shapes": skipped},
            "limit": limit,
            "build_seconds": round(time.time() - t0, 1),
        }
        return w.commit(meta)
    except BaseException:
        w.abort()
        raise


def _split_or_all(labels: np.ndarray) -> tuple[list, list]:
    counts = Counter(int(v) for v in labels[labels >= 0])
    if counts and min(counts.values()) >= 2:
        return stratified_split(labels)
    return [int(i) for i in np.flatnonzero(labels >= 0)], []  # tiny subset builds: no test split


def _sh3d_attribution(kept: list, version: str) -> str:
    lines = [
        "# SH3D-16 attribution",
        "",
        f"Point clouds sampled from the 3D models of the Debian package sweethome3d-furniture {version}",
        "(SweetHome3D additional furniture libraries). Licences per pack: "
        + ", ".join(f"{k}: {v}" for k, v in sh3d.PACK_LICENSES.items())
        + ". CC-BY models require attribution; the creators below are the catalog's `creator` fields.",
        "",
        "| shape | name | creator | licence |",
        "|---|---|---|---|",
    ]
    for e, _ in kept:
        lines.append(f"| {e.key} | {e.name} | {e.creator or 'unknown'} | {e.license} |")
    return "\n".join(lines) + "\n"


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
        raise ValueError(f"points={points}: store at least 2048 points per shape (1024/2048-point protocols)")
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
    with mp.get_context("fork").Pool(_workers(workers)) as pool:
        bar = _progress(6227 if not subset else 0, "kicad", progress)
        pending = None
        block: list = []

        def collect(res: Any) -> None:
            for path, status, out in res.get():
                results[path] = (status, out)
                bar.update(1)

        for job in jobs():
            block.append(job)
            if len(block) == 128:
                nxt = pool.map_async(kicad.sample_job, block, chunksize=8)
                if pending is not None:
                    collect(pending)
                pending, block = nxt, []
        if block:
            nxt = pool.map_async(kicad.sample_job, block, chunksize=8)
            if pending is not None:
                collect(pending)
            pending = nxt
        if pending is not None:
            collect(pending)
        bar.close()
    if not results:
        raise DatasetError(f"{deb_path}: no .wrl models matched {patterns}")
    paths = sorted(results)
    kept = [p for p in paths if results[p][0] == "ok"]
    skipped = [{"shape": p, "reason": results[p][1]} for p in paths if results[p][0] != "ok"]
    libs = [p.split("/")[-2].removesuffix(".3dshapes") for p in kept]
    names = [kicad.library_class(lib) for lib in libs]
    cls_index = {c: i for i, c in enumerate(kicad.CLASSES)}
    labels = np.array([cls_index.get(n, -1) for n in names], np.int64)
    parts = np.stack([results[p][1][1] for p in kept])
    tr, te = _split_or_all(labels)
    pool_idx = [int(i) for i in np.flatnonzero(labels < 0)]
    excluded = {cls_index[c] for c in kicad.PARTS_EXCLUDED_CLASSES}
    parts_train = [i for i in tr if labels[i] not in excluded]
    parts_test = [i for i in te if labels[i] not in excluded]
    part_categories = [c for c in kicad.CLASSES if c not in kicad.PARTS_EXCLUDED_CLASSES]
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
        w.json("classes.json", kicad.CLASSES)
        w.json(
            "splits.json",
            {"train": tr, "test": te, "pool": pool_idx, "parts_train": parts_train, "parts_test": parts_test},
        )
        w.json(
            "parts.json",
            {
                "parts": kicad.PARTS,
                "categories": part_categories,
                "category_parts": {str(k): v for k, v in category_parts.items()},
            },
        )
        w.text("ATTRIBUTION.md", _kicad_attribution(version, Counter(libs)))
        if copyright_text:
            w.text("LICENSE-debian-copyright.txt", copyright_text)
        counts = Counter(names)
        meta = {
            "name": "kicad",
            "version": KICAD_VERSION,
            "datasets": ["kicad33", "kicadparts"],
            "source_package": "kicad-packages3d",
            "package_version": version,
            "points_per_shape": points,
            "dtype": "float16",
            "up_axis": "y (converted from KiCad's z-up)",
            "normalisation": "centroid at origin, max norm 1",
            "sampling": "area-weighted uniform surface sampling (trimesh.sample.sample_surface), per-shape seed",
            "seed": seed,
            "split_seed": SPLIT_SEED,
            "test_fraction": TEST_FRACTION,
            "shapes": len(kept),
            "labelled": int((labels >= 0).sum()),
            "pool": len(pool_idx),
            "classes": kicad.CLASSES,
            "per_class": {c: counts.get(c, 0) for c in kicad.CLASSES},
            "splits": {
                "train": len(tr),
                "test": len(te),
                "pool": len(pool_idx),
                "parts_train": len(parts_train),
                "parts_test": len(parts_test),
            },
            "parts": kicad.PARTS,
            "part_point_share": {n: round(float(s), 4) for n, s in zip(kicad.PARTS, share)},
            "parts_test_points_outside_category_parts": outside,
            "skipped": {"count": len(skipped), "shapes": skipped},
            "subset": {"libraries": libraries, "limit_per_library": limit_per_library} if subset else None,
            "build_seconds": round(time.time() - t0, 1),
        }
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


BUILDERS = {
    "sh3d16": build_sh3d16,
    "kicad": build_kicad,
    "corpus": build_corpus,
    "kicadboards": build_kicadboards,
}
ALIASES = {
    "kicad33": "kicad",
    "kicadparts": "kicad",
    "kicad-parts": "kicad",
    "kicad-33": "kicad",
    "sh3d": "sh3d16",
    "oad": "corpus",
}


def build(
    name: str,
    root: str | None = None,
    points: int | None = None,
    workers: int | None = None,
    deb: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Build an embedded dataset from its Debian package(s), once; later calls reuse it.

    Args:
        name: sh3d16, kicad (KiCad-33 + KiCad-Parts) or corpus (the pretraining corpus + oad).
        root: dataset cache folder (default: $FOUNDRY3D_CACHE or ~/.cache/foundry3d).
        points: points stored per shape (default: 8192 sh3d16, 4096 kicad and corpus).
        workers: processes (default: all cores).
        deb: use this .deb instead of downloading it with apt-get (sh3d16, kicad).
        force: rebuild even if the dataset exists.
        progress: show progress bars.
    """
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BUILDERS:
        raise DatasetError(f"unknown buildable dataset {name!r}; buildable: {', '.join(BUILDERS)}")
    if points is not None and points < 2048:
        raise DatasetError(f"points={points}: store at least 2048 points per shape (1024/2048-point protocols)")
    if workers is not None and workers < 1:
        raise DatasetError(f"workers must be >= 1, got {workers}")
    kwargs: dict[str, Any] = {"root": root, "workers": workers, "force": force, "progress": progress}
    if points is not None:
        kwargs["points"] = points
    if deb is not None:
        kwargs["deb"] = deb
    path = BUILDERS[key](**kwargs)
    meta = json.loads((path / "meta.json").read_text())
    if progress:
        print(
            f"{key}: {meta['shapes']} shapes ({meta['skipped']['count']} skipped) in {path} [{meta['build_seconds']} s]"
        )
    return path
