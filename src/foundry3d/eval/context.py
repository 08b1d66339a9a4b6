"""What an evaluation task reads: the model, its record, the settings, the data and cached features.

One ``Context`` per evaluated model. It maps the train/test splits a task asks for to fit/val when
``splits=val`` (choosing recipes without reading a test split), asks the dataset's own metadata for
the split a task trains on, and caches features once per (model, dataset content, points, sampling)
so tasks that read the same clouds (SVM, few-shot, k-NN) share one extraction.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from foundry3d.data.registry import eval_train_split, load_dataset
from foundry3d.data.transforms import Sampling
from foundry3d.files import atomic_write
from foundry3d.models.base import PointModel
from foundry3d.models.features import extract


class Context:
    """The evaluated model and where its task results, features and heads live."""

    def __init__(self, model: PointModel, info: dict[str, Any], cfg: Any, folder: Path, root: str | None) -> None:
        self.model, self.info, self.cfg, self.folder, self.root = model, info, cfg, folder, root
        # where work shared between models and calls is kept (eval's cache_dir): tokenizer outputs, fidelity's
        # teacher tokens; None keeps nothing on disk
        self.cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None

    def data(self, name: str, split: str, root: str | None) -> Any:
        """Split ``split`` of dataset ``name``: ``train`` is the dataset's training split for evaluation,
        and with ``splits=val`` train/test become fit/val."""
        if split == "train":
            split = eval_train_split(name)
        if self.cfg.splits == "val":
            split = {"train": "fit", "trainval": "fit", "test": "val"}.get(split, split)
        spec = f"{name}:{split}" + (f"@{root}" if root else "")
        return load_dataset(spec, root=self.root)

    def labelled(self, name: str, split: str, root: str | None) -> Any:
        """``data`` without unlabelled items, for the tasks that train on labels (a folder's root-level files)."""
        ds = self.data(name, split, root)
        return ds.labelled() if hasattr(ds, "labelled") else ds

    def features(self, ds: Any, num_points: int, sampling: Sampling = "first") -> dict[str, np.ndarray]:
        """Pooled features and labels of every item of ``ds`` (cached on disk, recomputed when corrupt)."""
        key = json.dumps(
            {"model": self.info["hash"], "data": ds.fingerprint(), "points": num_points, "sampling": sampling},
            sort_keys=True,
        )
        path = self.folder / "features" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    cached = {k: z[k] for k in z.files}
                if {"features", "labels"} <= cached.keys():
                    return cached
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
                pass  # a truncated, key-less or corrupt cache entry is recomputed, never trusted
            path.unlink(missing_ok=True)
        out = extract(
            self.model,
            ds,
            num_points=num_points,
            sampling=sampling,
            batch_size=self.cfg.batch_size,
            progress=self.cfg.progress,
            desc=f"{ds.name}:{ds.split}",
            token_cache=self.cache,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), **out))  # type: ignore[arg-type]  # noqa: SIM115
        return out


def data_ids(ds: Any) -> dict[str, str]:
    """What identifies the data a result was computed on (a stored result is reused only on the same)."""
    return {"dataset_version": ds.version, "dataset_fingerprint": ds.fingerprint()}


def hits(y: np.ndarray, pred: np.ndarray) -> dict[str, list]:
    """Per-item outcomes of a classifier: 1 where the prediction is right."""
    return {"score": (np.asarray(y) == np.asarray(pred)).astype(np.int8).tolist()}
