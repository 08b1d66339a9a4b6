"""Helpers shared by the benchmark loaders."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foundry3d.data.base import DatasetError, PointCloudDataset
from foundry3d.registry import Registry


def require(path: Path, what: str, layout: str) -> Path:
    """``path`` must exist; otherwise name what is missing and the expected layout."""
    if not path.exists():
        raise DatasetError(f"{what} not found: {path} is missing. Expected layout: {layout}")
    return path


def read_lines(path: Path, layout: str) -> list[str]:
    """The non-empty lines of a benchmark's list file, or an error naming the file and the expected layout."""
    require(path, "split/list file", layout)
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def pc_normalize(points: np.ndarray) -> np.ndarray:
    """Centroid to the origin, farthest point at distance 1 (the loaders' ``pc_normalize``)."""
    c = points - points.mean(0, keepdims=True)
    r = float(np.sqrt((c**2).sum(1)).max())
    return c / r if r > 0 else c


def load_npy(path: Path) -> np.ndarray:
    """A benchmark's ``.npy`` without pickles; a truncated or corrupt file is a one-line DatasetError."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DatasetError(f"{path} is corrupt or truncated: {e}") from e


def check_point_array(points: np.ndarray, path: Path | str) -> np.ndarray:
    """``points`` if it is an (N, >=3) array of finite coordinates, else a DatasetError naming the file."""
    if points.ndim != 2 or points.shape[1] < 3 or not np.isfinite(points[:, :3]).all():
        raise DatasetError(f"{path}: expected an (N, >=3) array of finite coordinates, got {points.shape}")
    return points


@dataclass
class BenchmarkEntry:
    """A benchmark read from the user's folder: its loader, splits, expected layout and its evaluation metadata."""

    loader: Callable[..., PointCloudDataset]
    splits: tuple[str, ...]
    layout: str  # what the folder must contain (shown when it does not)
    pattern: str | None = None  # regex for parametrised splits (e.g. few-shot folds)
    train_split: str = "train"  # the split evaluation tasks train on (ShapeNetPart: trainval, as published)
    # (root, way, shot, fold) -> (support, query): a benchmark of fixed few-shot folds, which the few-shot
    # task scores instead of sampling episodes from train and test
    folds: Callable[..., tuple[PointCloudDataset, PointCloudDataset]] | None = None

    def accepts(self, split: str) -> bool:
        """Whether ``split`` is one the benchmark reads (a named split or one its pattern allows)."""
        return split in self.splits or (self.pattern is not None and re.fullmatch(self.pattern, split) is not None)


BENCHMARKS: Registry = Registry("benchmark")


def register_benchmark(
    name: str, splits: tuple[str, ...], layout: str, pattern: str | None = None, **quirks: Any
) -> Callable:
    """Decorator for a loader ``fn(root, split)``; ``quirks`` are the entry's evaluation metadata
    (``train_split``, ``folds``), so no evaluation code names a dataset."""

    def deco(fn: Callable[..., PointCloudDataset]) -> Callable[..., PointCloudDataset]:
        BENCHMARKS.register(name, BenchmarkEntry(fn, splits, layout, pattern, **quirks))
        return fn

    return deco
