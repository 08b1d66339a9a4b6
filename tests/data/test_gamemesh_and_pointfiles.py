"""The game-mesh readers and the point-file readers on small files written in each real format."""

import struct

import numpy as np
import pytest

from foundry3d.data.gamemesh import read_g3d, read_pie, read_pmd
from foundry3d.data.mesh import MeshError
from foundry3d.data.pointfile import PointFileError, read_points

TETRA_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
TETRA_F = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])


def pmd_bytes(version: int = 4) -> bytes:
    body = struct.pack("<I", len(TETRA_V)) + (struct.pack("<I", 1) if version >= 4 else b"")
    for v in TETRA_V:
        body += struct.pack("<3f3f2f4B4f", *v, 0, 0, 1, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0)
    body += struct.pack("<I", len(TETRA_F)) + b"".join(struct.pack("<3H", *f) for f in TETRA_F)
    body += struct.pack("<I", 0) + struct.pack("<I", 0)  # no bones, no prop points
    return b"PSMD" + struct.pack("<II", version, len(body)) + body


def g3d_bytes(frames: int = 2) -> bytes:
    out = b"G3D" + bytes([4]) + struct.pack("<HB", 1, 0)
    name = b"mesh".ljust(64, b"\0")
    out += struct.pack("<64sIII3f3fffII", name, frames, len(TETRA_V), TETRA_F.size, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1)
    out += b"diffuse.bmp".ljust(64, b"\0")  # one texture flag -> one 64-byte path
    for f in range(frames):
        out += (TETRA_V + f).astype("<f4").tobytes()  # later frames move: only the first is read
    out += np.zeros((frames, len(TETRA_V), 3), "<f4").tobytes()  # normals
    out += np.zeros((len(TETRA_V), 2), "<f4").tobytes()  # texture coordinates
    return out + TETRA_F.astype("<u4").tobytes()


def test_pmd_reads_positions_and_triangles():
    for version in (3, 4):
        v, f = read_pmd(pmd_bytes(version))
        assert np.allclose(v, TETRA_V) and np.array_equal(f, TETRA_F)
    with pytest.raises(MeshError, match="PSMD"):
        read_pmd(b"nope" * 10)
    with pytest.raises(MeshError, match="truncated"):
        read_pmd(pmd_bytes()[:40])


def test_g3d_reads_the_first_frame():
    v, f = read_g3d(g3d_bytes())
    assert np.allclose(v, TETRA_V) and np.array_equal(f, TETRA_F)
    with pytest.raises(MeshError, match="version"):
        read_g3d(b"G3D" + bytes([3]) + b"\0" * 10)


def test_pie_reads_the_first_level_and_fans_polygons():
    text = "PIE 3\nTYPE 200\nLEVELS 2\nLEVEL 1\nPOINTS 4\n 0 0 0\n 1 0 0\n 1 1 0\n 0 1 0\n"
    text += "POLYGONS 1\n 200 4 0 1 2 3 0 0 1 0 1 1 0 1\nLEVEL 2\nPOINTS 3\n 9 9 9\n 9 9 8\n 9 8 9\n"
    v, f = read_pie(text.encode())
    assert v.shape == (4, 3) and f.tolist() == [[0, 1, 2], [0, 2, 3]]
    with pytest.raises(MeshError, match="PIE"):
        read_pie(b"OBJ\n")


@pytest.fixture
def cloud():
    return np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)


def test_point_files_in_every_format(tmp_path, cloud):
    import laspy
    from plyfile import PlyData, PlyElement

    v = np.array([tuple(p) for p in cloud], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(v, "vertex")], text=False).write(str(tmp_path / "a.ply"))
    np.savetxt(tmp_path / "a.xyz", cloud)
    np.savetxt(tmp_path / "a.csv", np.c_[cloud, np.ones(len(cloud))], delimiter=",")
    np.save(tmp_path / "a.npy", cloud)
    np.savez(tmp_path / "a.npz", points=cloud)
    head = "VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\nHEIGHT 1\nPOINTS {n}\n"
    (tmp_path / "a.pcd").write_bytes((head.format(n=len(cloud)) + "DATA binary\n").encode() + cloud.tobytes())
    (tmp_path / "b.pcd").write_text(
        head.format(n=len(cloud)) + "DATA ascii\n" + "\n".join(" ".join(map(str, p)) for p in cloud)
    )
    las = laspy.create(point_format=0, file_version="1.2")
    las.header.scales = [0.0001] * 3
    las.x, las.y, las.z = cloud[:, 0], cloud[:, 1], cloud[:, 2]
    las.write(str(tmp_path / "a.las"))
    las.write(str(tmp_path / "a.laz"))
    for name in ("a.ply", "a.xyz", "a.csv", "a.npy", "a.npz", "a.pcd", "b.pcd", "a.las", "a.laz"):
        got = read_points(tmp_path / name)
        assert got.shape == cloud.shape and np.allclose(got, cloud, atol=1e-3), name


def test_bad_point_files_name_the_file_and_the_problem(tmp_path):
    (tmp_path / "empty.xyz").write_text("")
    (tmp_path / "two.xyz").write_text("1 2\n3 4\n")
    (tmp_path / "nan.xyz").write_text("1 2 3\nnan 0 0\n")
    (tmp_path / "x.obj").write_text("v 0 0 0\n")
    (tmp_path / "c.pcd").write_text(
        "FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nPOINTS 1\nDATA binary_compressed\n"
    )
    for name, msg in [
        ("empty.xyz", "no points|columns"),
        ("two.xyz", "3 columns"),
        ("nan.xyz", "NaN"),
        ("x.obj", "unknown point-cloud format"),
        ("c.pcd", "binary_compressed"),
        ("missing.ply", "no such file"),
    ]:
        with pytest.raises(PointFileError, match=msg) as e:
            read_points(tmp_path / name)
        assert name in str(e.value)


def test_ply_files_from_older_exporters_are_read_leniently_and_say_so(tmp_path):
    """Shapes of real files in Debian's assimp-testmodels: Blender 2.4x header text, a face list
    declared on the vertex element, a truncated ASCII body, a truncated binary body."""
    from foundry3d.data.pointfile import PointFileWarning

    pts = np.random.default_rng(0).normal(size=(40, 3)).round(4)
    rows = "\n".join(" ".join(map(str, p)) for p in pts) + "\n"
    head = "ply\nformat ascii 1.0\n{extra}element vertex 40\nproperty float x\nproperty float y\nproperty float z\n"
    (tmp_path / "blender.ply").write_text(
        head.format(extra="Created by Blender3D 247 - www.blender.org\n")
        + "element face 0\nproperty list uchar uint vertex_indices\nend_header\n"
        + rows
    )
    (tmp_path / "listed.ply").write_text(
        head.format(extra="") + "property list uchar uint vertex_indices\nend_header\n" + rows
    )
    (tmp_path / "short.ply").write_text(head.format(extra="") + "end_header\n" + "\n".join(rows.splitlines()[:30]))
    for name, says in [
        ("blender.ply", "Created by Blender3D"),
        ("listed.ply", "strict reader"),
        ("short.ply", "30 of the 40"),
    ]:
        with pytest.warns(PointFileWarning, match=says):
            got = read_points(tmp_path / name)
        n = 30 if name == "short.ply" else 40
        assert np.allclose(got, pts[:n], atol=1e-4), name
    body = pts.astype("<f4").tobytes()
    binhead = (
        b"ply\nformat binary_little_endian 1.0\nelement vertex 40\n"
        b"property float x\nproperty float y\nproperty float z\nend_header\n"
    )
    (tmp_path / "cut.ply").write_bytes(binhead + body[:-7])
    with pytest.raises(PointFileError, match="7 bytes shorter") as e:
        read_points(tmp_path / "cut.ply")
    assert "cut.ply" in str(e.value)
    (tmp_path / "empty.ply").write_bytes(b"")
    with pytest.raises(PointFileError, match=r"empty\.ply"):
        read_points(tmp_path / "empty.ply")


def test_nan_points_are_dropped_only_when_asked(tmp_path):
    from foundry3d.data.pointfile import PointFileWarning

    (tmp_path / "scan.xyz").write_text("1 2 3\nnan 0 0\n4 5 6\n")
    with pytest.raises(PointFileError, match="1 of 3 points have NaN"):
        read_points(tmp_path / "scan.xyz")
    with pytest.warns(PointFileWarning, match="dropped 1 of 3"):
        assert read_points(tmp_path / "scan.xyz", drop_nonfinite=True).shape == (2, 3)
    (tmp_path / "void.xyz").write_text("nan nan nan\n")
    with pytest.raises(PointFileError, match="NaN"):
        read_points(tmp_path / "void.xyz", drop_nonfinite=True)
