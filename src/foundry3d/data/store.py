"""Where built datasets live, and how they are written so that a half-built one never looks done.

A dataset is built in ``<cache>/<name>-v<version>.partial-<pid>`` and renamed to
``<cache>/<name>-v<version>`` only after ``meta.json`` (written last, with ``complete: true``)
is in place. A folder without a complete ``meta.json`` is never read as a dataset.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from foundry3d.data.base import DatasetError


def cache_dir(override: str | Path | None = None) -> Path:
    """Dataset cache: ``override``, else $FOUNDRY3D_CACHE, else $XDG_CACHE_HOME/foundry3d (~/.cache)."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("FOUNDRY3D_CACHE")
    if env:
        if Path(env).expanduser().exists() and not Path(env).expanduser().is_dir():
            raise DatasetError(f"FOUNDRY3D_CACHE={env} is a file: expected a folder for the dataset cache")
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "foundry3d"


def dataset_dir(name: str, version: str, root: str | Path | None = None) -> Path:
    """Where a built dataset of this name and format version lives in the cache."""
    return cache_dir(root) / "datasets" / f"{name}-v{version}"


def is_complete(path: Path) -> bool:
    """Whether a dataset folder was finished (its ``meta.json`` says complete): a half-built folder is never read."""
    meta = path / "meta.json"
    if not meta.is_file():
        return False
    try:
        return bool(json.loads(meta.read_text()).get("complete"))
    except (json.JSONDecodeError, OSError):
        return False


def read_meta(path: Path) -> dict[str, Any]:
    """The build record of a complete dataset folder."""
    if not is_complete(path):
        raise DatasetError(f"{path} is not a complete dataset (no meta.json with complete: true)")
    return json.loads((path / "meta.json").read_text())


class DatasetWriter:
    """Write arrays and JSON into a temporary folder; ``commit`` makes it the dataset atomically."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.with_name(f"{final.name}.partial-{os.getpid()}")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)

    def array(self, name: str, value: np.ndarray) -> None:
        """Write one array into the unfinished dataset (no pickles: arrays read back without code)."""
        np.save(self.tmp / f"{name}.npy", value, allow_pickle=False)

    def json(self, name: str, value: Any) -> None:
        """Write one JSON file into the unfinished dataset."""
        (self.tmp / name).write_text(json.dumps(value, indent=1) + "\n")

    def text(self, name: str, value: str) -> None:
        """Write one text file (attribution, licence) into the unfinished dataset."""
        (self.tmp / name).write_text(value)

    def commit(self, meta: dict[str, Any]) -> Path:
        """Write meta.json last (complete: true) and swap the folder into place; returns the dataset folder."""
        self.json("meta.json", {**meta, "complete": True})
        old = self.final.with_name(self.final.name + f".old-{os.getpid()}")
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        if old.exists():
            shutil.rmtree(old)
        return self.final

    def abort(self) -> None:
        """Remove the unfinished folder, so a failed build leaves nothing that looks like a dataset."""
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)


def load_array(path: Path, name: str, mmap: bool = True) -> np.ndarray:
    """One array of a built dataset (memory-mapped by default), or a one-line error asking for a rebuild when it is
    missing or corrupt."""
    f = path / f"{name}.npy"
    if not f.is_file():
        raise DatasetError(f"{f} is missing: the dataset at {path} is incomplete; rebuild it")
    try:
        return np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DatasetError(f"{f} is corrupt or truncated ({e}); rebuild the dataset") from e
