"""``foundry3d data build``: one entry point for every dataset built from Debian packages.

Each dataset's spec (:mod:`foundry3d.data.datasets`) names its build, imported only when it runs. Every build
is a recipe on one skeleton (:func:`foundry3d.data.building.build_from_debian`: download -> extract ->
parallel map -> label -> split -> metadata -> write): ``sh3d16``, ``kicad``, ``corpus`` (seven packages,
near-duplicates dropped in its label step), ``kicadboards`` (boards from two packages, per-point scene labels,
its own record) and ``ufoai`` (whose recipe sits in its spec's file).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from foundry3d.data.base import DatasetError
from foundry3d.data.catalogue import build_name, builds

__all__ = ["build"]


def build(
    name: str,
    root: str | None = None,
    points: int | None = None,
    workers: int | None = None,
    deb: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Build an embedded dataset from its Debian package(s), once; later calls reuse it.

    Args:
        name: sh3d16, kicad (KiCad-33 + KiCad-Parts), corpus (the pretraining corpus + oad), kicadboards or
            ufoai (UFO:AI-10), or any other build the catalogue holds.
        root: dataset cache folder (default: $FOUNDRY3D_CACHE or ~/.cache/foundry3d).
        points: points stored per shape (default: 8192 sh3d16, 4096 kicad, corpus and ufoai).
        workers: processes (default: all cores).
        deb: use this .deb instead of downloading it with apt-get (builds from one package).
        force: rebuild even if the dataset exists.
        progress: show progress bars.
    """
    key = build_name(name.lower()) or name.lower()
    known = builds()
    if key not in known:
        raise DatasetError(f"unknown buildable dataset {name!r}; buildable: {', '.join(sorted(known))}")
    if workers is not None and workers < 1:
        raise DatasetError(f"workers must be >= 1, got {workers}")
    kwargs: dict[str, Any] = {"root": root, "workers": workers, "force": force, "progress": progress}
    if points is not None:
        kwargs["points"] = points
    if deb is not None:
        kwargs["deb"] = deb
    builder = known[key].load_builder()
    if deb is not None and "deb" not in inspect.signature(builder).parameters:
        raise DatasetError(f"--deb {deb}: {key} is built from several packages; only one-package builds take --deb")
    path = builder(**kwargs)
    meta = json.loads((path / "meta.json").read_text())
    if progress:
        print(
            f"{key}: {meta['shapes']} shapes ({meta['skipped']['count']} skipped) in {path} [{meta['build_seconds']} s]"
        )
    return path
