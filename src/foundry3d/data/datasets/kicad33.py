"""KiCad-33: electronic component models (kicad-packages3d), 33 footprint libraries, with an unlabelled pool."""

from __future__ import annotations

from foundry3d.data.catalogue import KICAD_VERSION, BuiltDataset, register_dataset

register_dataset(
    BuiltDataset(
        "kicad33", "KiCad-33", "kicad", "foundry3d.data.kicad:build_kicad", "kicad", KICAD_VERSION,
        aliases=("kicad-33",),
    )
)  # fmt: skip
