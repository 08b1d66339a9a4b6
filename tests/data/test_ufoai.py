"""UFO:AI-10, the dataset added as one file: its MD2 reader, its class rules, and a whole build through the
shared Debian build skeleton from a real .deb holding a real pk3 of MD2 models."""

import io
import json
import shutil
import struct
import subprocess
import zipfile

import numpy as np
import pytest

from foundry3d.data.datasets.ufoai import ARCHIVE, model_class, read_md2
from foundry3d.data.mesh import MeshError


def md2(vertices: np.ndarray, triangles: list[tuple[int, int, int]]) -> bytes:
    """A one-frame Quake II MD2 file: header, triangles, one frame (scale, translate, name, packed vertices)."""
    lo, hi = vertices.min(0), vertices.max(0)
    scale = np.maximum(hi - lo, 1e-6) / 255
    packed = np.round((vertices - lo) / scale).astype(np.uint8)
    tris = b"".join(struct.pack("<6H", *t, 0, 0, 0) for t in triangles)
    frame = struct.pack("<3f3f16s", *scale, *lo, b"frame0") + b"".join(bytes([*p, 0]) for p in packed)
    ofs_tris = 68
    ofs_frames = ofs_tris + len(tris)
    end = ofs_frames + len(frame)
    header = struct.pack(
        "<4s16i", b"IDP2", 8, 64, 64, len(frame), 0, len(vertices), 0, len(triangles), 0, 1,
        68, 68, ofs_tris, ofs_frames, end, end,
    )  # fmt: skip
    return header + tris + frame


BOX = np.array([[x, y, z] for x in (0, 1) for y in (0, 2) for z in (0, 3)], float)
BOX_TRIS = [(0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1), (2, 3, 7), (2, 7, 6), (0, 2, 6),
            (0, 6, 4), (1, 5, 7), (1, 7, 3)]  # fmt: skip


def test_md2_reader_restores_the_first_frame_and_refuses_what_is_not_md2():
    v, f = read_md2(md2(BOX, BOX_TRIS), "box.md2")
    assert f.shape == (12, 3) and f.max() == 7
    np.testing.assert_allclose(v, BOX, atol=3 / 255)
    with pytest.raises(MeshError, match="not an MD2"):
        read_md2(b"IDPO" + bytes(80), "x.md2")
    with pytest.raises(MeshError, match="past the end"):
        read_md2(md2(BOX, BOX_TRIS)[:-20], "cut.md2")


def test_class_rules_follow_folders_and_names_first_match_wins():
    assert model_class("models/soldiers/male/head03.md2") == "head"
    assert model_class("models/soldiers/male/body.md2") == "humanoid"
    assert model_class("models/weapons/pistol/pistol_clip.md2") == "ammo"
    assert model_class("models/weapons/pistol/pistol.md2") == "firearm"
    assert model_class("models/aircraft/drop_firebird/firebird.md2") == "aircraft"
    assert model_class("models/aircraft/drop_herakles/seats.md2") == "other"  # an interior part, not a craft
    assert model_class("models/objects/aircraft/crash_drop_raptor/part1.md2") == "wreckage"
    assert model_class("models/objects/vegi/fern/fern.md2") == "plant"
    assert model_class("models/geoscape/icon_recon.md2") == "other"


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb to write the test package")
def test_a_ufoai_build_from_a_real_deb_labels_splits_pools_copies_and_reads_back(tmp_path):
    from foundry3d.data.build import build
    from foundry3d.data.registry import load_dataset

    rng = np.random.default_rng(0)
    models = {}
    for cls, folder in [("plant", "objects/vegi/p{}/p.md2"), ("firearm", "weapons/w{}/w.md2")]:
        for i in range(5):
            stretch = np.array([1.0, 1.0, 4.0]) if cls == "plant" else np.array([4.0, 0.5, 1.0])
            models[f"models/{folder.format(i)}"] = md2(BOX * stretch * rng.uniform(0.8, 1.2, 3), BOX_TRIS)
    models["models/objects/vegi/p9/copy.md2"] = models["models/objects/vegi/p0/p.md2"]  # the same mesh again
    models["models/geoscape/icon.md2"] = md2(BOX, BOX_TRIS)  # no class: the pool
    models["models/objects/vegi/flat/leaf.md2"] = md2(BOX[:3], [(0, 1, 2)])  # one triangle: skipped
    pk3 = io.BytesIO()
    with zipfile.ZipFile(pk3, "w") as z:
        for name, data in models.items():
            z.writestr(name, data)
    pkg = tmp_path / "pkg"
    (pkg / ARCHIVE).parent.mkdir(parents=True)
    (pkg / ARCHIVE).write_bytes(pk3.getvalue())
    (pkg / "usr/share/doc/ufoai-data").mkdir(parents=True)
    (pkg / "usr/share/doc/ufoai-data/copyright").write_text("Files: *\nLicense: GPL-2+\n")
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN/control").write_text(
        "Package: ufoai-data\nVersion: 2.5-test\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n"
    )
    deb = tmp_path / "ufoai-data_2.5-test_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb)], check=True, capture_output=True)

    root = tmp_path / "cache"
    path = build("ufoai", root=str(root), points=2048, workers=1, deb=str(deb), progress=False)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["package_version"] == "2.5-test" and meta["source_package"] == "ufoai-data"
    assert meta["per_class"]["plant"] == 5 and meta["per_class"]["firearm"] == 5 and meta["copies"] == 1
    assert [s["shape"] for s in meta["skipped"]["shapes"]] == ["models/objects/vegi/flat/leaf.md2"]
    assert (path / "LICENSE-debian-copyright.txt").read_text().startswith("Files: *")
    shapes = json.loads((path / "shapes.json").read_text())
    labels = np.load(path / "labels.npy")
    copy = next(i for i, s in enumerate(shapes) if s["id"].endswith("copy.md2"))
    assert shapes[copy]["copy_of"] == "models/objects/vegi/p0/p.md2" and labels[copy] == -1
    splits = json.loads((path / "splits.json").read_text())
    assert len(splits["train"]) == 8 and len(splits["test"]) == 2 and copy in splits["pool"]
    test = load_dataset("ufoai:test", root=str(root))
    assert len(test) == 2 and test.classes[:2] == ["head", "ammo"]
    pts = np.asarray(test[0].points)
    assert test[0].label in (6, 2)  # plant or firearm
    assert pts.shape == (2048, 3) and np.abs(np.linalg.norm(pts, axis=1).max() - 1) < 1e-2
    # a second call reuses the finished dataset; a rebuild writes the same clouds (seeds from the shapes' ids)
    before = np.load(path / "points.npy")
    assert build("ufoai", root=str(root), deb=str(deb), progress=False) == path
    build("ufoai", root=str(root), points=2048, workers=2, deb=str(deb), force=True, progress=False)
    np.testing.assert_array_equal(np.load(path / "points.npy"), before)
