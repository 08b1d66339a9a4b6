"""Readers for the embedded datasets that ``foundry3d data build`` writes.

``sh3d16`` splits: train, test, pool (unlabelled), labelled (train+test), all.
``kicad33`` splits: the same. ``kicadparts`` splits: train, test (part labels, categories).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from foundry3d.data.base import ArrayDataset, DatasetError, PartSpec
from foundry3d.data.build import KICAD_VERSION, SH3D_VERSION
from foundry3d.data.store import dataset_dir, is_complete, load_array, read_meta

EMBEDDED = {
    "sh3d16": ("sh3d16", SH3D_VERSION, "foundry3d data build sh3d16"),
    "kicad33": ("kicad", KICAD_VERSION, "foundry3d data build kicad"),
    "kicadparts": ("kicad", KICAD_VERSION, "foundry3d data build kicad"),
}
SPLITS = {
    "sh3d16": ("train", "test", "pool", "labelled", "all"),
    "kicad33": ("train", "test", "pool", "labelled", "all"),
    "kicadparts": ("train", "test", "all"),
}


def embedded_path(name: str, root: str | Path | None = None) -> Path:
    folder, version, command = EMBEDDED[name]
    path = dataset_dir(folder, version, root)
    if not is_complete(path):
        raise DatasetError(
            f"dataset {name} is not built (looked in {path}); build it with `{command}`"
            + (f" --root {root}" if root else "")
        )
    return path


def load_embedded(
    name: str, split: str = "train", root: str | Path | None = None, path: Path | None = None
) -> ArrayDataset:
    if split not in SPLITS[name]:
        raise DatasetError(f"{name} has no split {split!r}; splits: {', '.join(SPLITS[name])}")
    path = path or embedded_path(name, root)
    meta = read_meta(path)
    splits = json.loads((path / "splits.json").read_text())
    classes = json.loads((path / "classes.json").read_text())
    points = load_array(path, "points")
    labels = load_array(path, "labels", mmap=False).astype(np.int64)
    shapes = json.loads((path / "shapes.json").read_text())
    names = [s["id"] for s in shapes]
    protocol = {"num_points": 1024, "num_groups": 64, "sampling": "first"}
    version = f"{meta['name']}-v{meta['version']} ({meta['source_package']} {meta['package_version']})"
    if name == "kicadparts":
        spec_json = json.loads((path / "parts.json").read_text())
        cls_to_cat = {classes.index(c): j for j, c in enumerate(spec_json["categories"])}
        key = {"train": ["parts_train"], "test": ["parts_test"], "all": ["parts_train", "parts_test"]}[split]
        idx = np.array(sorted(i for k in key for i in splits[k]), np.int64)
        cats = np.array([cls_to_cat[int(labels[i])] for i in idx], np.int64)
        spec = PartSpec(
            categories=spec_json["categories"],
            parts=spec_json["parts"],
            category_parts={int(k): v for k, v in spec_json["category_parts"].items()},
        )
        return ArrayDataset(
            points[idx],
            cats,
            name=name,
            split=split,
            classes=spec_json["categories"],
            parts=load_array(path, "parts")[idx],
            categories=cats,
            names=[names[i] for i in idx],
            part_spec=spec,
            protocol={"num_points": 2048, "num_groups": 128, "sampling": "first"},
            version=version,
        )
    if split == "labelled":
        idx = np.array(sorted(splits["train"] + splits["test"]), np.int64)
    elif split == "all":
        idx = np.arange(len(labels))
    else:
        idx = np.array(splits[split], np.int64)
    extra = {}
    if name == "sh3d16":
        extra["parts"] = load_array(path, "groups")[idx]  # OBJ group ids (instance parts, not semantic)
    return ArrayDataset(
        points[idx],
        labels[idx],
        name=name,
        split=split,
        classes=classes,
        names=[names[i] for i in idx],
        protocol=protocol,
        version=version,
        **extra,
    )
