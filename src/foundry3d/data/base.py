"""One dataset interface for every source: embedded Debian-built sets and standard benchmarks.

A sample is a cloud of float32 points (N, 3), optional normals, a class label (-1 when
unlabelled), and for part segmentation a per-point part label and the shape's category.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from typing_extensions import override

from foundry3d.errors import Foundry3DError


class DatasetError(Foundry3DError, ValueError):
    """A dataset that is missing, incomplete or not in the expected format."""


@dataclass
class Sample:
    """One cloud as the datasets hand it out: points, and the labels a task may read (class, normals, parts,
    category)."""

    points: np.ndarray  # (N, 3) float32
    label: int = -1
    normals: np.ndarray | None = None  # (N, 3) float32
    parts: np.ndarray | None = None  # (N,) int64 global part ids
    category: int = -1  # part-segmentation category (e.g. ShapeNetPart's 16)
    name: str = ""


@dataclass
class PartSpec:
    """Part-segmentation label space: categories and the global part ids each one may use."""

    categories: list[str]
    parts: list[str]  # global part names, index = global part id
    category_parts: dict[int, list[int]] = field(default_factory=dict)

    @property
    def num_parts(self) -> int:
        """How many part ids the spec names (a segmentation head's output width)."""
        return len(self.parts)


class PointCloudDataset:
    """Indexable collection of :class:`Sample`. Subclasses implement ``__len__``/``__getitem__``."""

    name: str = "dataset"
    split: str = ""
    classes: list[str] = []  # noqa: RUF012 - a default every instance replaces, never mutated
    part_spec: PartSpec | None = None
    protocol: dict[str, Any] = {}  # noqa: RUF012 - how the benchmark is normally consumed (points, groups, ...)
    version: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Sample:
        raise NotImplementedError

    def labels(self) -> np.ndarray:
        """All class labels (S,) without loading the points when possible."""
        return np.array([self[i].label for i in range(len(self))], dtype=np.int64)

    def fingerprint(self) -> str:
        """Content hash of every cloud, label and part label, in order (memoised): caches and
        results keyed by it are recomputed whenever the data changes, wherever it lives."""
        fp = getattr(self, "_fingerprint", None)
        if fp is None:
            h = hashlib.sha256()
            for i in range(len(self)):
                s = self[i]
                h.update(np.ascontiguousarray(s.points, np.float32).tobytes())
                h.update(np.int64(s.label).tobytes() + np.int64(s.category).tobytes())
                if s.parts is not None:
                    h.update(np.ascontiguousarray(s.parts, np.int64).tobytes())
            fp = h.hexdigest()[:24]
            self._fingerprint = fp
        return fp

    @property
    def num_classes(self) -> int:
        """How many classes the dataset names (a classifier's output width)."""
        return len(self.classes)

    def info(self) -> dict[str, Any]:
        """Counts per class and what the dataset is (what ``foundry3d data info`` prints)."""
        labels = self.labels()
        counts = {c: int((labels == i).sum()) for i, c in enumerate(self.classes)}
        out: dict[str, Any] = {
            "name": self.name,
            "split": self.split,
            "version": self.version,
            "shapes": len(self),
            "classes": len(self.classes),
            "per_class": counts,
        }
        if (labels < 0).any():
            out["unlabelled"] = int((labels < 0).sum())
        protocol = getattr(self, "protocol", None)  # the cloud size, patches and sampling its protocol reads
        if protocol:
            out["protocol"] = dict(protocol)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, shapes={len(self)})"


class ArrayDataset(PointCloudDataset):
    """Clouds held in arrays (S, N, 3) (float16 is fine: converted per sample)."""

    def __init__(
        self,
        points: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        name: str = "arrays",
        split: str = "",
        classes: list[str] | None = None,
        parts: np.ndarray | None = None,
        categories: np.ndarray | None = None,
        normals: np.ndarray | None = None,
        names: list[str] | None = None,
        part_spec: PartSpec | None = None,
        protocol: dict[str, Any] | None = None,
        version: str = "",
    ) -> None:
        if points.ndim != 3 or points.shape[-1] != 3:
            raise DatasetError(f"{name}: points must have shape (S, N, 3), got {points.shape}")
        self.points = points
        self._labels = np.full(len(points), -1, np.int64) if labels is None else np.asarray(labels, np.int64)
        if len(self._labels) != len(points):
            raise DatasetError(f"{name}: {len(self._labels)} labels for {len(points)} clouds")
        self.part_labels = parts
        self.categories = categories
        self.normals = normals
        self.names = names
        self.name = name
        self.split = split
        self.classes = list(classes or [])
        self.part_spec = part_spec
        self.protocol = dict(protocol or {})
        self.version = version

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int) -> Sample:
        return Sample(
            points=np.asarray(self.points[i], dtype=np.float32),
            label=int(self._labels[i]),
            normals=None if self.normals is None else np.asarray(self.normals[i], np.float32),
            parts=None if self.part_labels is None else np.asarray(self.part_labels[i], np.int64),
            category=-1 if self.categories is None else int(self.categories[i]),
            name=self.names[i] if self.names else f"{self.name}/{i}",
        )

    @override
    def labels(self) -> np.ndarray:
        return self._labels

    @override
    def fingerprint(self) -> str:
        fp = getattr(self, "_fingerprint", None)
        if fp is None:
            h = hashlib.sha256()
            for arr in (self.points, self._labels, self.part_labels, self.categories):
                if arr is not None:
                    a = np.ascontiguousarray(arr)
                    h.update(str((a.dtype, a.shape)).encode())
                    h.update(memoryview(a).cast("B"))  # type: ignore[arg-type]  # numpy arrays are buffers
            fp = h.hexdigest()[:24]
            self._fingerprint = fp
        return fp

    def subset(self, idx: np.ndarray, split: str | None = None) -> ArrayDataset:
        """The items ``idx`` as a dataset of their own, every per-item field kept aligned."""
        idx = np.asarray(idx, dtype=np.int64)
        return ArrayDataset(
            self.points[idx],
            self._labels[idx],
            name=self.name,
            split=self.split if split is None else split,
            classes=self.classes,
            parts=None if self.part_labels is None else self.part_labels[idx],
            categories=None if self.categories is None else self.categories[idx],
            normals=None if self.normals is None else self.normals[idx],
            names=None if self.names is None else [self.names[i] for i in idx],
            part_spec=self.part_spec,
            protocol=self.protocol,
            version=self.version,
        )


class ConcatDataset(PointCloudDataset):
    """Several datasets read as one (labels kept only when they share one class list)."""

    def __init__(self, parts: list[PointCloudDataset], name: str | None = None) -> None:
        if not parts:
            raise DatasetError("ConcatDataset needs at least one dataset")
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.name = name or "+".join(f"{p.name}:{p.split}" if p.split else p.name for p in parts)
        same = all(p.classes == parts[0].classes for p in parts)
        self.classes = list(parts[0].classes) if same else []
        self._same = same

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < len(self):
            raise IndexError(i)
        j = int(np.searchsorted(self.offsets, i, side="right") - 1)
        s = self.parts[j][i - int(self.offsets[j])]
        if not self._same:
            s.label = -1
        return s

    @override
    def fingerprint(self) -> str:
        return hashlib.sha256("+".join(p.fingerprint() for p in self.parts).encode()).hexdigest()[:24]

    @override
    def labels(self) -> np.ndarray:
        if not self._same:
            return np.full(len(self), -1, np.int64)
        return np.concatenate([p.labels() for p in self.parts])
