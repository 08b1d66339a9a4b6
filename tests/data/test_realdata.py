"""Builds small real subsets from the Debian packages (needs apt-get and a Debian mirror)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from foundry3d.data.embedded import load_embedded
from foundry3d.data.kicad import build_kicad
from foundry3d.data.sh3d import build_sh3d16
from foundry3d.data.store import cache_dir

pytestmark = pytest.mark.realdata


@pytest.fixture
def real_cache(cache):
    # Reuse packages already downloaded into the user's cache (the test still unpacks and parses them).
    user = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "foundry3d" / "debs"
    if shutil.which("apt-get") is None and not user.exists():
        pytest.skip("needs apt-get (Debian/Ubuntu) to download the packages")
    (cache / "debs").mkdir(parents=True)
    for deb in user.glob("*.deb") if user.exists() else []:
        (cache / "debs" / deb.name).symlink_to(deb)
    return cache


def test_sh3d_subset_is_real_upright_and_deterministic(real_cache):
    path = build_sh3d16(points=2048, limit=40, progress=False)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["shapes"] + meta["skipped"]["count"] == 40 and meta["package_version"]
    pts = np.load(path / "points.npy")
    assert pts.shape == (meta["shapes"], 2048, 3) and pts.dtype == np.float16
    assert np.allclose(np.linalg.norm(pts.astype(np.float32), axis=2).max(1), 1, atol=2e-3)
    assert (path / "ATTRIBUTION.md").read_text().count("|") > 40
    again = build_sh3d16(points=2048, limit=40, progress=False, force=True)
    assert np.array_equal(np.load(again / "points.npy"), pts)


def test_kicad_subset_has_classes_and_parts(real_cache):
    path = build_kicad(points=2048, libraries=["LED_THT", "Package_DIP"], limit_per_library=6, progress=False)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["shapes"] == 12 and meta["per_class"]["led_tht"] == 6 and meta["per_class"]["package_dip"] == 6
    parts = np.load(path / "parts.npy")
    assert set(np.unique(parts)) <= {0, 1, 2} and (parts == 1).any() and (parts == 2).any()  # pins and lenses
    assert cache_dir() in path.parents


def test_full_embedded_sets_when_built():
    """On a machine where the full datasets are built, check the counts the docs promise."""
    from foundry3d.data.catalogue import catalogue
    from foundry3d.data.store import dataset_dir, is_complete

    if not all(
        is_complete(dataset_dir(catalogue().get(n).folder, catalogue().get(n).version)) for n in ("sh3d16", "kicad33")
    ):
        pytest.skip("full datasets not built here (foundry3d data build sh3d16 / kicad)")
    sh3d = load_embedded("sh3d16", "labelled")  # built: any failure to read it is a real failure
    kicad = load_embedded("kicad33", "labelled")
    assert len(sh3d) == 417 and sh3d.num_classes == 16 and np.bincount(sh3d.labels()).min() >= 10
    assert kicad.num_classes == 33 and 5800 <= len(kicad) <= 6000


def test_corpus_subset_from_a_game_package(real_cache):
    from foundry3d.data.corpus import build_corpus

    path = build_corpus(packages=["warzone2100-data"], limit_per_package=60, progress=False, workers=1)
    meta = json.loads((path / "meta.json").read_text())
    report = meta["packages"]["warzone2100-data"]
    assert report["mesh_files"] == 60 and report["readable"] + report["skipped"] == 60
    assert meta["shapes"] == report["shapes"] > 10 and "near_duplicates" in report
    pts = np.load(path / "points.npy")
    assert pts.shape == (meta["shapes"], 4096, 3)
    assert np.allclose(np.linalg.norm(pts.astype(np.float32), axis=2).max(1), 1, atol=2e-3)


def test_kicadboards_from_the_demo_and_model_packages_on_the_build_skeleton(real_cache):
    """The scene set: boards assembled from two packages, per-point labels, its own record, both licences."""
    from foundry3d.data.kicadboards import SCENE_CLASSES, build_kicadboards

    path = build_kicadboards(points=100_000, progress=False, workers=1)
    meta = json.loads((path / "meta.json").read_text())
    n = meta["boards"]
    assert n >= 5 and meta["splits"] == {"train": n - len(range(1, n, 3)), "test": len(range(1, n, 3))}
    assert (
        meta["models_read"] > 0.8 * meta["models_wanted"] and meta["source_package"] == "kicad-demos + kicad-packages3d"
    )
    parts, pts = np.load(path / "parts.npy"), np.load(path / "points.npy")
    assert pts.shape == (n, 100_000, 3) and parts.shape == (n, 100_000) and parts.max() < len(SCENE_CLASSES)
    assert not (path / "labels.npy").exists()  # no shape classes in a scene set
    assert {p.name for p in path.glob("LICENSE-*")} == {
        "LICENSE-debian-copyright-kicad-demos.txt",
        "LICENSE-debian-copyright-kicad-packages3d.txt",
    }
