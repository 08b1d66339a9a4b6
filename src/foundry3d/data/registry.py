"""Datasets by name: ``load_dataset("sh3d16:test")``, ``load_dataset("modelnet40:train@/data/mn40")``.

Spec grammar: ``NAME[:SPLIT][@ROOT]``. Embedded datasets (built from Debian packages) live in the
cache folder; benchmarks are read from ``ROOT`` exactly as their users have them on disk; your own
files are ``folder:/scans``, ``folder:/scans:test``, ``folder:/scans/*.npy`` or just ``/scans``
(:mod:`foundry3d.data.folder`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from foundry3d.data.base import ConcatDataset, DatasetError, PointCloudDataset
from foundry3d.data.benchmarks import BENCHMARKS
from foundry3d.data.catalogue import catalogue
from foundry3d.data.embedded import built_dataset_path, load_embedded
from foundry3d.data.folder import folder_info, is_folder_spec, load_folder, parse_folder_spec
from foundry3d.data.store import dataset_dir, is_complete, read_meta
from foundry3d.data.synthetic import SyntheticShapes


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``(name, split, root)``; a folder spec gives ``("folder", split, path)``."""
    if is_folder_spec(spec):
        split, path = parse_folder_spec(spec)
        return "folder", split, path
    root = None
    if "@" in spec:
        spec, root = spec.split("@", 1)
    name, _, split = spec.partition(":")
    return name.strip().lower(), (split.strip() or None), root


def _parts(spec: str) -> tuple[str, str | None, str | None]:
    base, star, times = spec.rpartition("*")
    return parse_spec(base if star and times.isdigit() else spec)


def dataset_base(spec: str) -> str:
    """The dataset one spec reads, without split or repeat: ``kicad33:train*4`` -> ``kicad33``."""
    name, _, root = _parts(spec)
    if name == "folder":
        return f"folder:{root}"
    return name + (f"@{root}" if root else "")


def with_split(spec: str, split: str) -> str:
    """``spec`` (one dataset, any split or repeat) naming ``split`` instead: ``kicad33:train*4`` -> ``kicad33:val``."""
    name, _, root = _parts(spec)
    if name == "folder":
        return f"folder:{split}@{root}"
    return f"{name}:{split}" + (f"@{root}" if root else "")


def load_dataset(spec: str, split: str | None = None, root: str | Path | None = None) -> PointCloudDataset:
    """Load ``NAME[:SPLIT][@ROOT]``; specs joined by ``+`` are concatenated, ``SPEC*k`` repeats one k times."""
    if "+" in spec:
        return ConcatDataset([load_dataset(s, split, root) for s in spec.split("+")])
    base, star, times = spec.rpartition("*")
    if star and (times.isdigit() or not is_folder_spec(spec)):  # a glob's * is not a repeat factor
        if not times.isdigit() or int(times) < 1:
            raise DatasetError(f"{spec!r}: the repeat factor after * must be a positive integer")
        one = load_dataset(base, split, root)
        return ConcatDataset([one] * int(times), name=f"{one.name}:{one.split}*{times}")
    if is_folder_spec(spec):
        return load_folder(spec, split, root)
    name, s, r = parse_spec(spec)
    split = s or split or "train"
    root = r or root
    if name in catalogue():
        return load_embedded(name, split, root)
    if name == "synthetic":
        if split not in ("train", "test", "pool"):
            raise DatasetError(f"synthetic has no split {split!r}; splits: train, test, pool")
        try:
            per_class = int(str(root)) if root else 20
        except ValueError as e:
            raise DatasetError(f"synthetic@{root}: the part after @ is the number of clouds per class") from e
        if not 1 <= per_class <= 100_000:
            raise DatasetError(f"synthetic@{root}: the number of clouds per class must be 1 to 100000")
        return SyntheticShapes(split, per_class=per_class)
    if name in BENCHMARKS:
        entry = BENCHMARKS.get(name)
        if root is None:
            raise DatasetError(
                f"benchmark {name} needs its folder: use {name}:{split}@/path/to/folder ({entry.layout})"
            )
        if not entry.accepts(split):
            raise DatasetError(f"{name} has no split {split!r}; splits: {', '.join(entry.splits)}")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DatasetError(f"{name}: folder {path} does not exist; expected {entry.layout}")
        return entry.loader(path, split)
    raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(list_names())}")


def eval_train_split(name: str) -> str:
    """The split evaluation tasks train on for dataset ``name`` (``train`` but where a benchmark's
    published protocol says otherwise, e.g. ShapeNetPart's ``trainval``)."""
    return BENCHMARKS.get(name).train_split if name in BENCHMARKS else "train"


def fixed_folds(name: str) -> Callable[..., tuple[PointCloudDataset, PointCloudDataset]] | None:
    """A benchmark's official few-shot folds, ``(root, way, shot, fold) -> (support, query)``, or None when
    the dataset has none (the few-shot task then samples its episodes from train and test)."""
    return BENCHMARKS.get(name).folds if name in BENCHMARKS else None


def list_names() -> list[str]:
    """Every dataset name a spec can start with (built, synthetic, benchmarks, your folder)."""
    return [*catalogue().names(), "synthetic", *BENCHMARKS.names(), "folder:PATH"]


def list_datasets(root: str | Path | None = None) -> list[dict[str, Any]]:
    """List the datasets: what is built, what can be built (embedded) or read from a folder (benchmarks).

    Args:
        root: dataset cache folder.
    """
    rows = []
    for name, entry in catalogue().items():
        path = dataset_dir(entry.folder, entry.version, root)
        rows.append(
            {
                "name": name,
                "kind": "embedded",
                "built": is_complete(path),
                "path": str(path),
                "build": entry.command,
                "splits": list(entry.splits),
            }
        )
    for name, e in BENCHMARKS.items():
        rows.append(
            {
                "name": name,
                "kind": "benchmark",
                "built": None,
                "path": None,
                "build": e.layout,
                "splits": list(e.splits),
            }
        )
    rows.append(
        {
            "name": "folder:PATH",
            "kind": "your files",
            "built": None,
            "path": None,
            "build": "point files and meshes under PATH; labels from first-level sub-folders",
            "splits": ["train", "fit", "val", "test", "pool", "all"],
        }
    )
    return rows


def dataset_info(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """Counts of a dataset or one split: shapes, classes, per class, splits, parts, build record.

    Args:
        name: dataset name, NAME:SPLIT for one split, NAME@FOLDER for a benchmark, or folder:PATH for your
            own files (counts per split and class, and every file skipped with the reason).
        root: dataset cache folder.
    """
    if is_folder_spec(name) and parse_folder_spec(name)[0] is None:
        return folder_info(name, root)
    base, split, r = parse_spec(name)
    if split is not None:  # one split: its own counts (an unknown split is an error, never ignored)
        return load_dataset(name, root=root).info()
    if base in catalogue():
        spec = catalogue().get(base)
        path = built_dataset_path(base, r or root)
        meta = read_meta(path)
        out: dict[str, Any] = {
            "name": base,
            "path": str(path),
            "version": meta["version"],
            "source_package": meta["source_package"],
            "package_version": meta["package_version"],
            "points_per_shape": meta["points_per_shape"],
        }
        splits = {s: load_embedded(base, s, path=path) for s in spec.splits if s not in ("all", "labelled")}
        if spec.info is not None:
            out.update(spec.info(path, meta))
        else:  # a labelled set with an unlabelled pool
            lab = load_embedded(base, "labelled", path=path)
            out.update(
                shapes=meta["shapes"],
                labelled=meta["labelled"],
                unlabelled_pool=meta["pool"],
                classes=len(lab.classes),
                per_class=lab.info()["per_class"],
            )
        out["splits"] = {s: len(d) for s, d in splits.items()}
        out["skipped_meshes"] = meta["skipped"]["count"]
        out["build_seconds"] = meta["build_seconds"]
        return out
    return load_dataset(name, root=root).info()
