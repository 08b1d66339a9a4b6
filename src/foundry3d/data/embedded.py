"""The reader of every dataset ``foundry3d data build`` writes: one folder format (points, labels, shapes,
classes, splits, meta), the dataset's spec (:mod:`foundry3d.data.datasets`) says how its splits are
indexed and what else its items carry.

A labelled set (``sh3d16``, ``kicad33``) has the splits train, test, pool (unlabelled), labelled
(train+test), all, and for model selection ``val`` (a stratified fifth of train, fixed seed) and ``fit``
(train minus val); ``kicadparts``, ``corpus``, ``oad`` and ``kicadboards`` name theirs in their specs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from foundry3d.data.base import ArrayDataset, DatasetError
from foundry3d.data.catalogue import Items, catalogue
from foundry3d.data.store import dataset_dir, is_complete, load_array, read_meta


def built_dataset_path(name: str, root: str | Path | None = None) -> Path:
    """The cache folder of a built dataset, or an error that gives the command that builds it."""
    entry = catalogue().get(name)
    path = dataset_dir(entry.folder, entry.version, root)
    if not is_complete(path):
        raise DatasetError(
            f"dataset {name} is not built (looked in {path}); build it with `{entry.command}`"
            + (f" --root {root}" if root else "")
        )
    return path


def load_embedded(
    name: str, split: str = "train", root: str | Path | None = None, path: Path | None = None
) -> ArrayDataset:
    """One split of a dataset built from Debian packages, read from its cache folder (arrays memory-mapped) as
    its spec says (:mod:`foundry3d.data.datasets`); the model-selection splits fit/val are carved with a fixed
    seed."""
    spec = catalogue().get(name)
    if split not in spec.splits:
        raise DatasetError(f"{name} has no split {split!r}; splits: {', '.join(spec.splits)}")
    path = path or built_dataset_path(name, root)
    meta = read_meta(path)
    splits = json.loads((path / "splits.json").read_text())
    classes = json.loads((path / "classes.json").read_text())
    points = load_array(path, "points")
    shapes = json.loads((path / "shapes.json").read_text())
    has_labels = (path / "labels.npy").exists()
    labels = load_array(path, "labels", mmap=False).astype(np.int64) if has_labels else np.zeros(len(shapes), np.int64)
    idx = spec.index(split, splits, labels)
    fields: dict[str, Any] = {
        "labels": labels[idx],
        "classes": classes,
        "protocol": {"num_points": 1024, "num_groups": 64, "sampling": "first"},
    }
    if spec.extras is not None:
        fields.update(spec.extras(Items(path, split, idx, labels, classes)))
    return ArrayDataset(
        points[idx],
        fields.pop("labels"),
        name=name,
        split=split,
        names=[shapes[i]["id"] for i in idx],
        version=f"{meta['name']}-v{meta['version']} ({meta['source_package']} {meta['package_version']})",
        **fields,
    )
