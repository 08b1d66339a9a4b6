"""ModelNet40 in its three on-disk forms, and the ModelNet40 few-shot folds.

* ``modelnet40_normal_resampled`` (PointNet++): ``modelnet40_shape_names.txt``,
  ``modelnet40_{train,test}.txt`` (ids such as ``night_stand_0001``) and ``<class>/<id>.txt`` with
  comma-separated ``x,y,z,nx,ny,nz`` rows (9,843 / 2,468 shapes).
* the same folder's preprocessed pickles ``modelnet40_{train,test}_8192pts_fps.dat``:
  ``[list of (8192, 6) float32, list of (1,) int]`` (Point-BERT / Point-MAE), used when present.
* ``modelnet40_ply_hdf5_2048`` (PointNet): ``ply_data_{train,test}{k}.h5`` with ``data`` (n, 2048, 3)
  and ``label`` (n, 1), and ``shape_names.txt`` (9,840 / 2,468 shapes).
* few-shot: ``ROOT/{W}way_{S}shot/{fold}.pkl`` (or ``{W}way{S}shot``), each a dict
  ``{"train": [(points (8192, 6), label, orig_label)], "test": [...]}``.

Pickles are read with a restricted unpickler; still, only use files from a trusted source.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
from typing_extensions import override

from foundry3d.data.base import ArrayDataset, DatasetError, PointCloudDataset, Sample
from foundry3d.data.benchmarks.common import check_point_array, pc_normalize, read_lines, register_benchmark, require
from foundry3d.data.pickles import load_numpy_pickle

LAYOUT = (
    "modelnet40_ply_hdf5_2048/ (ply_data_{train,test}*.h5 + shape_names.txt), or "
    "modelnet40_normal_resampled/ (modelnet40_shape_names.txt, modelnet40_{train,test}.txt, <class>/<id>.txt, "
    "optionally modelnet40_{train,test}_8192pts_fps.dat)"
)
FEWSHOT_LAYOUT = "ModelNetFewshot/{5,10}way_{10,20}shot/{0..9}.pkl (Point-BERT release)"


def _normals(points: np.ndarray) -> np.ndarray | None:
    return points[:, 3:6].astype(np.float32) if points.shape[1] >= 6 else None


class ModelNetTxt(PointCloudDataset):
    """The comma-separated txt release, read one file per shape."""

    def __init__(self, root: Path, split: str) -> None:
        self.name, self.split, self.root = "modelnet40", split, root
        self.classes = read_lines(root / "modelnet40_shape_names.txt", LAYOUT)
        self.ids = read_lines(root / f"modelnet40_{split}.txt", LAYOUT)
        index = {c: i for i, c in enumerate(self.classes)}
        try:
            self._labels = np.array([index["_".join(s.split("_")[:-1])] for s in self.ids], np.int64)
        except KeyError as e:
            raise DatasetError(f"{root / f'modelnet40_{split}.txt'} names an unknown class {e}") from e
        self.protocol = {"num_points": 1024, "num_groups": 64, "sampling": "fps"}
        self.version = f"modelnet40_normal_resampled txt ({split}, {len(self.ids)} shapes)"

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Sample:
        sid = self.ids[i]
        path = self.root / "_".join(sid.split("_")[:-1]) / f"{sid}.txt"
        require(path, "shape file", LAYOUT)
        try:
            pts = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
        except ValueError as e:
            raise DatasetError(f"{path} is not a comma-separated x,y,z,nx,ny,nz file: {e}") from e
        check_point_array(pts, path)
        return Sample(points=pc_normalize(pts[:, :3]), normals=_normals(pts), label=int(self._labels[i]), name=sid)

    @override
    def labels(self) -> np.ndarray:
        return self._labels


def _from_dat(root: Path, split: str, classes: list[str]) -> ArrayDataset:
    path = root / f"modelnet40_{split}_8192pts_fps.dat"
    data = load_numpy_pickle(path)
    if not (isinstance(data, (list, tuple)) and len(data) == 2 and len(data[0]) == len(data[1])):
        raise DatasetError(f"{path}: expected [list of points, list of labels]")
    pts = np.stack([check_point_array(np.asarray(p, np.float32), path) for p in data[0]])
    labels = np.array([int(np.asarray(lab).reshape(-1)[0]) for lab in data[1]], np.int64)
    xyz = np.stack([pc_normalize(p[:, :3]) for p in pts])
    return ArrayDataset(
        xyz,
        labels,
        name="modelnet40",
        split=split,
        classes=classes,
        normals=pts[:, :, 3:6] if pts.shape[2] >= 6 else None,
        protocol={"num_points": 1024, "num_groups": 64, "sampling": "first"},
        version=f"modelnet40 8192pts_fps.dat ({split}, {len(xyz)} shapes, FPS-ordered)",
    )


def _from_h5(root: Path, split: str) -> ArrayDataset:
    files = sorted(root.glob(f"ply_data_{split}*.h5"))
    if not files:
        raise DatasetError(f"no ply_data_{split}*.h5 in {root}. Expected layout: {LAYOUT}")
    names_file = root / "shape_names.txt"
    classes = read_lines(names_file, LAYOUT) if names_file.exists() else [str(i) for i in range(40)]
    data, labels, normals = [], [], []
    for f in files:
        try:
            with h5py.File(f, "r") as h:
                data.append(np.asarray(h["data"], np.float32))
                labels.append(np.asarray(h["label"]).reshape(-1).astype(np.int64))
                if "normal" in h:
                    normals.append(np.asarray(h["normal"], np.float32))
        except (OSError, KeyError) as e:
            raise DatasetError(f"{f} is not a readable ModelNet40 HDF5 file (keys data, label): {e}") from e
    pts = np.concatenate(data)
    if not np.isfinite(pts).all():
        raise DatasetError(f"{root}: non-finite coordinates in ply_data_{split}*.h5")
    return ArrayDataset(
        pts,
        np.concatenate(labels),
        name="modelnet40",
        split=split,
        classes=classes,
        normals=np.concatenate(normals) if len(normals) == len(files) else None,
        protocol={"num_points": 1024, "num_groups": 64, "sampling": "fps"},
        version=f"modelnet40_ply_hdf5_2048 ({split}, {len(pts)} shapes)",
    )


@register_benchmark("modelnet40", ("train", "test"), LAYOUT)
def load_modelnet40(root: Path, split: str) -> PointCloudDataset:
    """Detects the layout: HDF5 files, else the .dat pickles, else the txt files."""
    if any(root.glob("ply_data_*.h5")):
        return _from_h5(root, split)
    if (root / f"modelnet40_{split}_8192pts_fps.dat").exists():
        classes = read_lines(root / "modelnet40_shape_names.txt", LAYOUT)
        return _from_dat(root, split, classes)
    if (root / "modelnet40_shape_names.txt").exists():
        return ModelNetTxt(root, split)
    raise DatasetError(f"{root} does not look like ModelNet40. Expected layout: {LAYOUT}")


def fewshot_folder(root: Path, way: int, shot: int) -> Path:
    """The folder of one way/shot setting of the official few-shot folds (both spellings in use)."""
    for name in (f"{way}way_{shot}shot", f"{way}way{shot}shot"):
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"no {way}way_{shot}shot (or {way}way{shot}shot) folder in {root}. Expected: {FEWSHOT_LAYOUT}")


def load_fewshot_fold(root: Path, way: int, shot: int, fold: int) -> tuple[ArrayDataset, ArrayDataset]:
    """(support, query) of one official ModelNet40 few-shot fold; labels 0..way-1."""
    path = fewshot_folder(root, way, shot) / f"{fold}.pkl"
    require(path, "few-shot fold", FEWSHOT_LAYOUT)
    d = load_numpy_pickle(path)
    if not isinstance(d, dict) or not {"train", "test"} <= set(d):
        raise DatasetError(f"{path}: expected a dict with 'train' and 'test' lists")
    out = []
    for part, expected in (("train", way * shot), ("test", way * 20)):
        items = d[part]
        if len(items) != expected:
            raise DatasetError(
                f"{path}: '{part}' has {len(items)} samples, expected {expected} ({way}-way {shot}-shot)"
            )
        pts = np.stack([pc_normalize(check_point_array(np.asarray(x[0], np.float32), path)[:, :3]) for x in items])
        labels = np.array([int(x[1]) for x in items], np.int64)
        out.append(
            ArrayDataset(
                pts,
                labels,
                name="modelnet40_fewshot",
                split=f"{way}way_{shot}shot/{fold}/{part}",
                classes=[str(i) for i in range(way)],
                protocol={"num_points": 1024, "num_groups": 64, "sampling": "first"},
                version=f"ModelNet40 few-shot {way}-way {shot}-shot fold {fold}",
            )
        )
    return out[0], out[1]


FEWSHOT_SPLIT = r"(\d+)way_?(\d+)shot/(\d+)/(train|test)"


@register_benchmark(
    "modelnet40_fewshot",
    ("<W>way_<S>shot/<fold>/{train,test}",),
    FEWSHOT_LAYOUT,
    FEWSHOT_SPLIT,
    folds=load_fewshot_fold,
)
def load_fewshot(root: Path, split: str) -> ArrayDataset:
    """One side of one fold, e.g. split ``5way_10shot/0/train`` (support) or ``.../test`` (query)."""
    m = re.fullmatch(FEWSHOT_SPLIT, split)
    assert m is not None
    support, query = load_fewshot_fold(root, int(m.group(1)), int(m.group(2)), int(m.group(3)))
    return support if m.group(4) == "train" else query
