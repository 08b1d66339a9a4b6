"""KiCad-Parts: part segmentation of KiCad component models (body, pins, ... from the VRML materials), read
from the ``kicad`` build: the part labels, one category per library family, its own train/test split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from foundry3d.data.base import PartSpec
from foundry3d.data.catalogue import KICAD_VERSION, BuiltDataset, Items, carve_val, register_dataset
from foundry3d.data.store import load_array

SPLITS = ("train", "test", "val", "fit", "all")


def _index(split: str, splits: dict[str, list[int]], labels: np.ndarray) -> np.ndarray:
    if split in ("val", "fit"):
        fit, val = carve_val(np.array(splits["parts_train"], np.int64), labels)
        return val if split == "val" else fit
    keys = {"train": ["parts_train"], "test": ["parts_test"], "all": ["parts_train", "parts_test"]}[split]
    return np.array(sorted(i for k in keys for i in splits[k]), np.int64)


def _spec(path: Path) -> PartSpec:
    s = json.loads((path / "parts.json").read_text())
    return PartSpec(s["categories"], s["parts"], {int(k): v for k, v in s["category_parts"].items()})


def _extras(items: Items) -> dict[str, Any]:
    """Labels become part categories; parts, categories and the part spec come with every item."""
    spec = _spec(items.path)
    cls_to_cat = {items.classes.index(c): j for j, c in enumerate(spec.categories)}
    cats = np.array([cls_to_cat[int(items.labels[i])] for i in items.idx], np.int64)
    return {
        "labels": cats,
        "classes": spec.categories,
        "parts": load_array(items.path, "parts")[items.idx],
        "categories": cats,
        "part_spec": spec,
        "protocol": {"num_points": 2048, "num_groups": 128, "sampling": "first"},
    }


def _info(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    from foundry3d.data.embedded import load_embedded

    ds = load_embedded("kicadparts", "all", path=path)
    spec = ds.part_spec
    assert spec is not None
    counts = np.bincount(np.asarray(ds.part_labels).ravel(), minlength=spec.num_parts)
    return {
        "shapes": len(ds),
        "categories": len(spec.categories),
        "parts": spec.parts,
        "part_point_share": {p: round(float(c) / counts.sum(), 4) for p, c in zip(spec.parts, counts)},
        "category_parts": {spec.categories[k]: [spec.parts[p] for p in v] for k, v in spec.category_parts.items()},
        "per_category": {c: int((ds.labels() == i).sum()) for i, c in enumerate(spec.categories)},
    }


register_dataset(
    BuiltDataset(
        "kicadparts", "KiCad-Parts", "kicad", "foundry3d.data.kicad:build_kicad", "kicad", KICAD_VERSION,
        splits=SPLITS, aliases=("kicad-parts",), index=_index, extras=_extras, info=_info,
    )
)  # fmt: skip
