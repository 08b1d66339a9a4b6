"""ScanObjectNN h5 files from the official site.

``main_split/{training,test}_objectdataset.h5`` (OBJ_BG), ``main_split_nobg/...`` (OBJ_ONLY),
``main_split/{training,test}_objectdataset_augmentedrot_scale75.h5`` (PB_T50_RS, "hardest"); keys
``data`` (N, 2048, 3), ``label`` (N,), ``mask`` (N, 2048). 15 classes.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from foundry3d.data.base import ArrayDataset, DatasetError
from foundry3d.data.benchmarks.common import register_benchmark, require

CLASSES = [
    "bag",
    "bin",
    "box",
    "cabinet",
    "chair",
    "desk",
    "display",
    "door",
    "shelf",
    "table",
    "bed",
    "pillow",
    "sink",
    "sofa",
    "toilet",
]
VARIANTS = {
    "scanobjectnn_objbg": ("main_split", "objectdataset.h5", "OBJ_BG"),
    "scanobjectnn_objonly": ("main_split_nobg", "objectdataset.h5", "OBJ_ONLY"),
    "scanobjectnn_hardest": ("main_split", "objectdataset_augmentedrot_scale75.h5", "PB_T50_RS"),
}
LAYOUT = (
    "ScanObjectNN/ with main_split/{training,test}_objectdataset[_augmentedrot_scale75].h5 and "
    "main_split_nobg/{training,test}_objectdataset.h5 (the h5_files release)"
)


def _load(root: Path, split: str, variant: str) -> ArrayDataset:
    folder, suffix, label = VARIANTS[variant]
    prefix = "training" if split == "train" else "test"
    path = require(root / folder / f"{prefix}_{suffix}", f"ScanObjectNN {label} file", LAYOUT)
    try:
        with h5py.File(path, "r") as h:
            data = np.asarray(h["data"], np.float32)
            labels = np.asarray(h["label"]).reshape(-1).astype(np.int64)
    except (OSError, KeyError) as e:
        raise DatasetError(f"{path} is not a readable ScanObjectNN file (keys data, label): {e}") from e
    if data.ndim != 3 or data.shape[-1] != 3 or len(data) != len(labels):
        raise DatasetError(f"{path}: expected data (N, 2048, 3) and label (N,), got {data.shape}, {labels.shape}")
    return ArrayDataset(
        data,
        labels,
        name=variant,
        split=split,
        classes=CLASSES,
        protocol={"num_points": 2048, "num_groups": 128, "sampling": "first"},
        version=f"ScanObjectNN {label} ({split}, {len(data)} shapes)",
    )


for _name in VARIANTS:
    register_benchmark(_name, ("train", "test"), LAYOUT)(lambda root, split, _v=_name: _load(root, split, _v))
