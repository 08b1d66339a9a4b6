"""ShapeNet-55 / ShapeNet-34 in the Point-BERT / PoinTr release layout.

``ROOT/shapenet_pc/<synset>-<model>.npy`` (8192 x 3 floats), ``ROOT/ShapeNet-55/{train,test}.txt``,
``ROOT/ShapeNet-34/{train,test}.txt`` and ``ROOT/ShapeNet-Unseen21/test.txt`` (one file name per
line). Labels are the index of the synset in the sorted list of synsets of the split family
(Point-JEPA's convention; pretraining ignores them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typing_extensions import override

from foundry3d.data.base import PointCloudDataset, Sample
from foundry3d.data.benchmarks.common import (
    check_point_array,
    load_npy,
    pc_normalize,
    read_lines,
    register_benchmark,
    require,
)

LAYOUT = "ROOT/shapenet_pc/*.npy and ROOT/ShapeNet-55/{train,test}.txt (Point-BERT ShapeNet55-34 release)"


class ShapeNetPC(PointCloudDataset):
    """ShapeNet-55/34 as Point-BERT distributes it (``.npy`` clouds and list files), the unseen-21 split included."""

    def __init__(self, root: Path, family: str, split: str) -> None:
        self.name = f"shapenet{family.split('-')[-1].lower()}"
        self.split = split
        folder = {"55": "ShapeNet-55", "34": "ShapeNet-34"}[family]
        if split == "unseen21":
            files = read_lines(root / "ShapeNet-Unseen21" / "test.txt", LAYOUT)
        elif split == "whole":
            files = read_lines(root / folder / "train.txt", LAYOUT) + read_lines(root / folder / "test.txt", LAYOUT)
        else:
            files = read_lines(root / folder / f"{split}.txt", LAYOUT)
        family_files = read_lines(root / folder / "train.txt", LAYOUT)
        synsets = sorted({f.split("-")[0] for f in family_files} | {f.split("-")[0] for f in files})
        self.classes = synsets
        self.files = files
        self.pc_dir = require(root / "shapenet_pc", "point-cloud folder", LAYOUT)
        index = {s: i for i, s in enumerate(synsets)}
        self._labels = np.array([index[f.split("-")[0]] for f in files], np.int64)
        self.protocol = {"num_points": 1024, "num_groups": 64, "sampling": "fps"}
        self.version = f"ShapeNet-{family} ({split}, {len(files)} shapes)"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Sample:
        path = self.pc_dir / self.files[i]
        if not path.exists():
            raise FileNotFoundError(f"{path} listed in the split file is missing ({LAYOUT})")
        pts = check_point_array(load_npy(path).astype(np.float32), path)[:, :3]
        return Sample(points=pc_normalize(pts), label=int(self._labels[i]), name=self.files[i])

    @override
    def labels(self) -> np.ndarray:
        return self._labels


@register_benchmark("shapenet55", ("train", "test", "whole"), LAYOUT)
def load_shapenet55(root: Path, split: str) -> ShapeNetPC:
    """ShapeNet-55 split ``split`` from ``root``."""
    return ShapeNetPC(root, "55", split)


@register_benchmark("shapenet34", ("train", "test", "unseen21"), LAYOUT.replace("55/", "34/"))
def load_shapenet34(root: Path, split: str) -> ShapeNetPC:
    """ShapeNet-34 split ``split`` from ``root`` (``unseen21``: the 21 held-out categories)."""
    return ShapeNetPC(root, "34", split)
