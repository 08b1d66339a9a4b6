"""Readers for the embedded datasets that ``foundry3d data build`` writes.

``sh3d16`` splits: train, test, pool (unlabelled), labelled (train+test), all, and for model
selection ``val`` (a stratified fifth of train, fixed seed) and ``fit`` (train minus val).
``kicad33``: the same. ``kicadparts``: train, test, val, fit (part labels, categories).
``corpus``: pretrain (every shape no evaluation holds out), all. ``oad``: train, val, test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from foundry3d.data.base import ArrayDataset, DatasetError, PartSpec
from foundry3d.data.catalogue import CATALOGUE
from foundry3d.data.store import dataset_dir, is_complete, load_array, read_meta

VAL_FRACTION = 0.2
VAL_SEED = 0


def carve_val(train: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) indices: a stratified ``VAL_FRACTION`` of ``train`` for model selection."""
    from sklearn.model_selection import train_test_split  # a reader's only use of scikit-learn, imported here

    train = np.asarray(train, np.int64)
    y = labels[train]
    counts = np.bincount(y - y.min()) if len(y) else np.array([0])
    strat = y if len(y) and counts[counts > 0].min() >= 2 else None
    fit, val = train_test_split(train, test_size=VAL_FRACTION, random_state=VAL_SEED, stratify=strat)
    return np.sort(fit), np.sort(val)


def built_dataset_path(name: str, root: str | Path | None = None) -> Path:
    """The cache folder of a built dataset, or an error that gives the command that builds it."""
    entry = CATALOGUE[name]
    command = entry.command
    path = dataset_dir(entry.folder, entry.version, root)
    if not is_complete(path):
        raise DatasetError(
            f"dataset {name} is not built (looked in {path}); build it with `{command}`"
            + (f" --root {root}" if root else "")
        )
    return path


def load_embedded(
    name: str, split: str = "train", root: str | Path | None = None, path: Path | None = None
) -> ArrayDataset:
    """One split of a dataset built from Debian packages, read from its cache folder (arrays memory-mapped); the model-
    selection splits fit/val are carved here with a fixed seed."""
    splits_of = CATALOGUE[name].splits
    if split not in splits_of:
        raise DatasetError(f"{name} has no split {split!r}; splits: {', '.join(splits_of)}")
    path = path or built_dataset_path(name, root)
    meta = read_meta(path)
    splits = json.loads((path / "splits.json").read_text())
    classes = json.loads((path / "classes.json").read_text())
    points = load_array(path, "points")
    shapes = json.loads((path / "shapes.json").read_text())
    has_labels = (path / "labels.npy").exists()
    labels = load_array(path, "labels", mmap=False).astype(np.int64) if has_labels else np.zeros(len(shapes), np.int64)
    names = [s["id"] for s in shapes]
    protocol = {"num_points": 1024, "num_groups": 64, "sampling": "first"}
    version = f"{meta['name']}-v{meta['version']} ({meta['source_package']} {meta['package_version']})"
    if name == "kicadparts":
        spec_json = json.loads((path / "parts.json").read_text())
        cls_to_cat = {classes.index(c): j for j, c in enumerate(spec_json["categories"])}
        if split in ("val", "fit"):
            fit, val = carve_val(np.array(splits["parts_train"], np.int64), labels)
            idx = val if split == "val" else fit
        else:
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
    if name == "kicadboards":  # whole boards: per-point class labels, one "category"
        idx = np.arange(len(labels)) if split == "all" else np.array(splits[split], np.int64)
        spec = PartSpec(["board"], list(classes), {0: list(range(len(classes)))})  # classes.json: the scene classes
        return ArrayDataset(
            points[idx],
            np.zeros(len(idx), np.int64),
            name=name,
            split=split,
            classes=["board"],
            parts=load_array(path, "parts")[idx],
            categories=np.zeros(len(idx), np.int64),
            names=[names[i] for i in idx],
            part_spec=spec,
            protocol={"num_points": 100_000, "sampling": "first"},
            version=version,
        )
    if name == "oad":  # the labelled 0 A.D. set inside the corpus build: its own fixed val split
        parts_of = {"train": ["oad_train", "oad_val"], "fit": ["oad_train"], "val": ["oad_val"], "test": ["oad_test"]}
        parts_of["labelled"] = ["oad_train", "oad_val", "oad_test"]
        idx = np.array(sorted(i for k in parts_of[split] for i in splits[k]), np.int64)
    elif name == "corpus":
        idx = np.arange(len(labels)) if split == "all" else np.array(splits["pretrain"], np.int64)
    elif split == "labelled":
        idx = np.array(sorted(splits["train"] + splits["test"]), np.int64)
    elif split in ("val", "fit"):
        fit, val = carve_val(np.array(splits["train"], np.int64), labels)
        idx = val if split == "val" else fit
    elif split == "all":
        idx = np.arange(len(labels))
    else:
        idx = np.array(splits[split], np.int64)
    extra: dict[str, Any] = {}
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
