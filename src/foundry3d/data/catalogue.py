"""The catalogue of the datasets foundry3d builds from Debian packages: one spec file per dataset.

Each spec (a module of :mod:`foundry3d.data.datasets`, registered on import) names what a reader, a
table and ``foundry3d data`` need: the cache folder and version its build writes (several datasets can
come from one build: KiCad-33 and KiCad-Parts from ``kicad``), the builder (a ``module:function`` path
imported only when building), the splits, aliases and the title tables print, and, where a dataset is
not a plain labelled set, how its splits are indexed, what else its items carry and what ``data info``
reports. Specs import nothing heavy, so reading a dataset never imports a builder's dependencies
(trimesh, scipy, matplotlib). Adding a built dataset is one spec file (plus its builder).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foundry3d.registry import Registry

# the format versions the builders write (bumping one makes readers ask for a rebuild)
SH3D_VERSION = "1"
KICAD_VERSION = "1"
CORPUS_VERSION = "1"
BOARDS_VERSION = "1"
VAL_FRACTION = 0.2
VAL_SEED = 0
LABELLED_SPLITS = ("train", "test", "val", "fit", "pool", "labelled", "all")


def carve_val(train: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) indices: a stratified ``VAL_FRACTION`` of ``train`` for model selection (fixed seed)."""
    from sklearn.model_selection import train_test_split  # a reader's only use of scikit-learn, imported here

    train = np.asarray(train, np.int64)
    y = labels[train]
    counts = np.bincount(y - y.min()) if len(y) else np.array([0])
    strat = y if len(y) and counts[counts > 0].min() >= 2 else None
    fit, val = train_test_split(train, test_size=VAL_FRACTION, random_state=VAL_SEED, stratify=strat)
    return np.sort(fit), np.sort(val)


def labelled_index(split: str, splits: dict[str, list[int]], labels: np.ndarray) -> np.ndarray:
    """A labelled set's split: train/test/pool as built, labelled = train + test, fit/val carved from train."""
    if split == "labelled":
        return np.array(sorted(splits["train"] + splits["test"]), np.int64)
    if split in ("val", "fit"):
        fit, val = carve_val(np.array(splits["train"], np.int64), labels)
        return val if split == "val" else fit
    if split == "all":
        return np.arange(len(labels))
    return np.array(splits[split], np.int64)


@dataclass(frozen=True)
class Items:
    """What a reader hands a spec's ``extras``: the dataset folder, the split, the chosen items and the arrays."""

    path: Path
    split: str
    idx: np.ndarray
    labels: np.ndarray
    classes: list[str]


@dataclass(frozen=True)
class BuiltDataset:
    """One dataset a build writes into the cache."""

    name: str
    title: str  # how tables and reports name it
    build: str  # the build (``foundry3d data build BUILD``) that writes it
    builder: str  # ``module:function`` of that build, imported only when building
    folder: str  # its cache folder (``<cache>/datasets/<folder>-v<version>``)
    version: str
    splits: tuple[str, ...] = LABELLED_SPLITS
    aliases: tuple[str, ...] = ()
    # the items of a split, from splits.json and the labels (default: a labelled set)
    index: Callable[[str, dict[str, list[int]], np.ndarray], np.ndarray] = labelled_index
    # ArrayDataset fields beyond points/labels/names (parts, categories, a part spec, protocol, other labels)
    extras: Callable[[Items], dict[str, Any]] | None = None
    # what ``foundry3d data info NAME`` adds to the build record (default: a labelled set's counts)
    info: Callable[[Path, dict[str, Any]], dict[str, Any]] | None = None

    @property
    def command(self) -> str:
        """The command that builds this dataset (what an error asks a user to run)."""
        return f"foundry3d data build {self.build}"

    def load_builder(self) -> Callable[..., Path]:
        """The build function (imports its module, and with it the builder's dependencies)."""
        module, _, fn = self.builder.partition(":")
        return getattr(importlib.import_module(module), fn)


CATALOGUE: Registry[BuiltDataset] = Registry("built dataset")
_loaded: list[bool] = []


def register_dataset(spec: BuiltDataset) -> BuiltDataset:
    """Add a dataset spec to the catalogue (called by each spec module on import)."""
    return CATALOGUE.register(spec.name, spec)


def catalogue() -> Registry[BuiltDataset]:
    """Every built-dataset spec: imports each module of :mod:`foundry3d.data.datasets` once."""
    if not _loaded:
        from foundry3d.data import datasets as package

        for mod in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{mod.name}")
        _loaded.append(True)
    return CATALOGUE


def title(name: str) -> str:
    """How tables name dataset ``name`` (its own name when it is not a built one)."""
    return catalogue().get(name).title if name in catalogue() else name


def build_name(name: str) -> str | None:
    """The build of a dataset name or alias (``kicad33`` -> ``kicad``), or None when nothing builds it."""
    for _, d in catalogue().items():
        if name in (d.name, d.build, *d.aliases):
            return d.build
    return None


def builds() -> dict[str, BuiltDataset]:
    """One spec per build name (the builds ``foundry3d data build`` knows)."""
    out: dict[str, BuiltDataset] = {}
    for _, d in catalogue().items():
        out.setdefault(d.build, d)
    return out
