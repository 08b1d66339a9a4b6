"""KiCad boards: whole demo boards of the KiCad packages as scenes, one class per point (component library,
board, other), for scene segmentation at 10^5-10^6 points."""

from __future__ import annotations

from typing import Any

import numpy as np

from foundry3d.data.base import PartSpec
from foundry3d.data.catalogue import BOARDS_VERSION, BuiltDataset, Items, register_dataset
from foundry3d.data.store import load_array


def _index(split: str, splits: dict[str, list[int]], labels: np.ndarray) -> np.ndarray:
    return np.arange(len(labels)) if split == "all" else np.array(splits[split], np.int64)


def _extras(items: Items) -> dict[str, Any]:
    """One "category" (board) and a label per point: the scene classes of classes.json as parts."""
    n, classes = len(items.idx), items.classes
    return {
        "labels": np.zeros(n, np.int64),
        "classes": ["board"],
        "parts": load_array(items.path, "parts")[items.idx],
        "categories": np.zeros(n, np.int64),
        "part_spec": PartSpec(["board"], list(classes), {0: list(range(len(classes)))}),
        "protocol": {"num_points": 100_000, "sampling": "first"},
    }


def _info(path: Any, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "boards": meta["boards"],
        "classes": len(meta["classes"]),
        "models_placed": f"{meta['models_read']} of {meta['models_wanted']} footprint models read",
        "skipped_boards": meta["skipped"]["shapes"],
    }


register_dataset(
    BuiltDataset(
        "kicadboards", "KiCad boards", "kicadboards", "foundry3d.data.kicadboards:build_kicadboards", "kicadboards",
        BOARDS_VERSION, splits=("train", "test", "all"), index=_index, extras=_extras, info=_info,
    )
)  # fmt: skip
