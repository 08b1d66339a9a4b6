"""The catalogue of the datasets foundry3d builds from Debian packages: one entry per dataset.

Each entry names what a reader, a table and ``foundry3d data`` need: the cache folder and version the
build writes (several datasets can come from one build: KiCad-33 and KiCad-Parts from ``kicad``), the
build command, the splits, aliases and the title tables print. This module imports nothing heavy, so
reading a dataset never imports a builder's dependencies (trimesh, scipy, matplotlib); the builders
read their version from here, so a rebuilt format has one number to bump.
"""

from __future__ import annotations

from dataclasses import dataclass

# the format versions the builders write (bumping one makes readers ask for a rebuild)
SH3D_VERSION = "1"
KICAD_VERSION = "1"
CORPUS_VERSION = "1"
BOARDS_VERSION = "1"


@dataclass(frozen=True)
class BuiltDataset:
    """One dataset a build writes into the cache."""

    name: str
    title: str  # how tables and reports name it
    build: str  # the builder (``foundry3d data build BUILD``) that writes it
    folder: str  # its cache folder (``<cache>/datasets/<folder>-v<version>``)
    version: str
    splits: tuple[str, ...]
    aliases: tuple[str, ...] = ()

    @property
    def command(self) -> str:
        return f"foundry3d data build {self.build}"


_LABELLED = ("train", "test", "val", "fit", "pool", "labelled", "all")
_OAD = ("train", "test", "val", "fit", "labelled")
_SCENES = ("train", "test", "all")
CATALOGUE: dict[str, BuiltDataset] = {
    d.name: d
    for d in (
        BuiltDataset("sh3d16", "SH3D-16", "sh3d16", "sh3d16", SH3D_VERSION, _LABELLED, ("sh3d",)),
        BuiltDataset("kicad33", "KiCad-33", "kicad", "kicad", KICAD_VERSION, _LABELLED, ("kicad-33",)),
        BuiltDataset(
            "kicadparts",
            "KiCad-Parts",
            "kicad",
            "kicad",
            KICAD_VERSION,
            ("train", "test", "val", "fit", "all"),
            ("kicad-parts",),
        ),
        BuiltDataset("corpus", "pretraining corpus", "corpus", "corpus", CORPUS_VERSION, ("pretrain", "all")),
        BuiltDataset(
            "oad", "0 A.D.-14", "corpus", "corpus", CORPUS_VERSION, ("train", "test", "val", "fit", "labelled")
        ),
        BuiltDataset(
            "kicadboards", "KiCad boards", "kicadboards", "kicadboards", BOARDS_VERSION, ("train", "test", "all")
        ),
    )
}


def title(name: str) -> str:
    """How tables name dataset ``name`` (its own name when it is not a built one)."""
    return CATALOGUE[name].title if name in CATALOGUE else name


def build_name(name: str) -> str | None:
    """The builder of a dataset name or alias (``kicad33`` -> ``kicad``), or None when nothing builds it."""
    for d in CATALOGUE.values():
        if name in (d.name, d.build, *d.aliases):
            return d.build
    return None
