"""ShapeNetPart (``shapenetcore_partanno_segmentation_benchmark_v0_normal``).

``synsetoffset2category.txt`` (tab-separated ``Name<TAB>synset``; line order = category id),
``<synset>/<model>.txt`` with 7 space-separated columns ``x y z nx ny nz part`` (global part id
0-49), ``train_test_split/shuffled_{train,val,test}_file_list.json`` (``shape_data/<synset>/<model>``).
Splits: train, val, trainval (13,998), test (2,874).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typing_extensions import override

from foundry3d.data.base import DatasetError, PartSpec, PointCloudDataset, Sample
from foundry3d.data.benchmarks.common import pc_normalize, read_lines, register_benchmark, require

LAYOUT = (
    "shapenetcore_partanno_segmentation_benchmark_v0_normal/ with synsetoffset2category.txt, "
    "<synset>/<model>.txt and train_test_split/shuffled_{train,val,test}_file_list.json"
)
PART_RANGES = {
    "Airplane": (0, 4),
    "Bag": (4, 6),
    "Cap": (6, 8),
    "Car": (8, 12),
    "Chair": (12, 16),
    "Earphone": (16, 19),
    "Guitar": (19, 22),
    "Knife": (22, 24),
    "Lamp": (24, 28),
    "Laptop": (28, 30),
    "Motorbike": (30, 36),
    "Mug": (36, 38),
    "Pistol": (38, 41),
    "Rocket": (41, 44),
    "Skateboard": (44, 47),
    "Table": (47, 50),
}


class ShapeNetPart(PointCloudDataset):
    """ShapeNetPart (``shapenetcore_partanno_segmentation_benchmark_v0_normal``): points, normals, per-point part ids
    and the category of each shape."""

    def __init__(self, root: Path, split: str) -> None:
        self.name, self.split, self.root = "shapenetpart", split, root
        rows = [ln.split() for ln in read_lines(root / "synsetoffset2category.txt", LAYOUT)]
        if any(len(r) != 2 for r in rows):
            raise DatasetError(f"{root / 'synsetoffset2category.txt'}: expected 'Name<TAB>synset' lines")
        self.classes = [r[0] for r in rows]
        synset_to_cat = {r[1]: i for i, r in enumerate(rows)}
        parts = sorted({p for c in self.classes for p in range(*PART_RANGES.get(c, (0, 0)))})
        self.part_spec = PartSpec(
            categories=list(self.classes),
            parts=[f"part{p}" for p in range(max(parts) + 1 if parts else 0)],
            category_parts={i: list(range(*PART_RANGES[c])) for i, c in enumerate(self.classes) if c in PART_RANGES},
        )
        names = {"trainval": ["train", "val"]}.get(split, [split])
        items = []
        for n in names:
            f = require(root / "train_test_split" / f"shuffled_{n}_file_list.json", "split file", LAYOUT)
            try:
                entries = json.loads(f.read_text())
            except json.JSONDecodeError as e:
                raise DatasetError(f"{f} is not valid JSON: {e}") from e
            for entry in entries:
                _, synset, model = entry.split("/")[-3:]
                if synset not in synset_to_cat:
                    raise DatasetError(f"{f}: synset {synset} is not in synsetoffset2category.txt")
                items.append((synset, model))
        self.items = items
        self._labels = np.array([synset_to_cat[s] for s, _ in items], np.int64)
        self.protocol = {"num_points": 2048, "num_groups": 128, "sampling": "random"}
        self.version = f"ShapeNetPart v0_normal ({split}, {len(items)} shapes)"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        synset, model = self.items[i]
        path = require(self.root / synset / f"{model}.txt", "shape file", LAYOUT)
        try:
            arr = np.loadtxt(path, dtype=np.float32, ndmin=2)
        except ValueError as e:
            raise DatasetError(f"{path} is not a 7-column 'x y z nx ny nz part' file: {e}") from e
        if arr.shape[1] != 7 or not np.isfinite(arr).all():
            raise DatasetError(f"{path}: expected 7 finite columns, got shape {arr.shape}")
        cat = int(self._labels[i])
        return Sample(
            points=pc_normalize(arr[:, :3]),
            normals=arr[:, 3:6],
            label=cat,
            category=cat,
            parts=arr[:, 6].astype(np.int64),
            name=f"{synset}/{model}",
        )

    @override
    def labels(self) -> np.ndarray:
        return self._labels


@register_benchmark("shapenetpart", ("train", "val", "trainval", "test"), LAYOUT, train_split="trainval")
def load_shapenetpart(root: Path, split: str) -> ShapeNetPart:
    """ShapeNetPart split ``split`` from ``root``."""
    return ShapeNetPart(root, split)
