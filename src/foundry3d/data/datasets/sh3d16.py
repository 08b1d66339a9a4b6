"""SH3D-16: Sweet Home 3D furniture (sweethome3d-furniture), 16 categories, with an unlabelled pool."""

from __future__ import annotations

from typing import Any

from foundry3d.data.catalogue import SH3D_VERSION, BuiltDataset, Items, register_dataset
from foundry3d.data.store import load_array


def _groups(items: Items) -> dict[str, Any]:
    """The OBJ group of every point (instance parts, not semantic), as ``parts``."""
    return {"parts": load_array(items.path, "groups")[items.idx]}


register_dataset(
    BuiltDataset(
        "sh3d16", "SH3D-16", "sh3d16", "foundry3d.data.sh3d:build_sh3d16", "sh3d16", SH3D_VERSION,
        aliases=("sh3d",), extras=_groups,
    )
)  # fmt: skip
