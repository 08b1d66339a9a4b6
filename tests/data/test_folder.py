"""Your own folder as a dataset: formats, labels, content-hash splits, the content cache, data info,
and the spec in every verb that reads data (distill with its probe, eval, export --int8)."""

import json
import shutil

import numpy as np
import pytest
import trimesh

from foundry3d.data.base import DatasetError
from foundry3d.data.folder import parse_folder_spec, split_of
from foundry3d.data.registry import dataset_info, load_dataset


def write_scans(root, per_class=6, seed=0):
    """Three classes of meshes (STL, OBJ, OFF with quads, a PLY with faces) and point files, an unlabelled
    file at the root, and files that must be skipped or ignored."""
    rng = np.random.default_rng(seed)
    makers = {
        "box": lambda: trimesh.creation.box(extents=rng.uniform(0.5, 2, 3)),
        "ball": lambda: trimesh.creation.icosphere(1, radius=rng.uniform(0.5, 2)),
        "can": lambda: trimesh.creation.cylinder(radius=rng.uniform(0.2, 1), height=rng.uniform(1, 3), sections=12),
    }
    for cls, make in makers.items():
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            m = make()
            kind = i % 4
            if kind == 0:
                m.export(root / cls / f"{cls}{i}.stl")
            elif kind == 1:
                m.export(root / cls / f"{cls}{i}.obj")
            elif kind == 2:
                m.export(root / cls / f"{cls}{i}.ply")  # a PLY with faces: sampled as a mesh
            else:
                np.save(root / cls / f"{cls}{i}.npy", (m.sample(700) * 1000).astype(np.float32))  # millimetres
    quad = "OFF\n8 6 0\n" + "".join(f"{x} {y} {z}\n" for x in (0, 1) for y in (0, 1) for z in (0, 1))
    quad += "4 0 1 3 2 1 0 0\n4 4 6 7 5\n4 0 4 5 1\n4 2 3 7 6\n4 0 2 6 4\n4 1 5 7 3\n"  # quads, one coloured
    (root / "box" / "cube.off").write_text(quad)
    np.savetxt(root / "loose.xyz", rng.normal(size=(300, 3)))
    (root / "notes.md").write_text("not a scan")
    (root / "ball" / "broken.ply").write_text("not a ply")
    (root / "can" / "few.xyz").write_text("0 0 0\n1 1 1\n")
    return root


@pytest.fixture
def scans(tmp_path, cache):
    return write_scans(tmp_path / "scans")


def test_spec_forms():
    assert parse_folder_spec("folder:/a/b") == (None, "/a/b")
    assert parse_folder_spec("folder:/a/b:test") == ("test", "/a/b")
    assert parse_folder_spec("folder:val@/a/b") == ("val", "/a/b")
    assert parse_folder_spec("/a/b/*.npy") == (None, "/a/b/*.npy")


def test_folder_reads_every_format_labels_and_splits(scans):
    info = dataset_info(f"folder:{scans}")
    assert info["classes"] == 3 and info["per_class"] == {"ball": 6, "box": 7, "can": 6}
    assert info["unlabelled"] == 1 and info["meshes"] == 16 and info["point_files"] == 4
    skipped = {s["file"]: s["reason"] for s in info["skipped"]}
    assert set(skipped) == {"ball/broken.ply", "can/few.xyz"} and "fewer than one patch" in skipped["can/few.xyz"]
    assert info["ignored"] == {".md": 1}
    train, test = load_dataset(f"folder:{scans}"), load_dataset(f"folder:{scans}:test")
    assert len(train) + len(test) == 20 and not {s.name for s in train} & {s.name for s in test}
    fit, val = load_dataset(f"folder:fit@{scans}"), load_dataset(f"folder:{scans}:val")
    assert len(fit) + len(val) == len(train)
    s = train[0]
    assert s.points.dtype == np.float32 and np.linalg.norm(s.points, axis=1).max() == pytest.approx(1, abs=1e-2)
    mm = next(x for x in load_dataset(f"folder:{scans}:all") if x.name.endswith(".npy"))
    assert np.abs(mm.points).max() <= 1.001  # millimetres normalised like everything else
    assert len(load_dataset(f"folder:{scans}:pool")) == (split_of_file(scans / "loose.xyz") != "test")
    globbed = load_dataset(f"{scans}/*/*.stl:all")
    assert len(globbed) == 6 and all(x.name.endswith(".stl") for x in globbed)


def split_of_file(path):
    import hashlib

    return split_of(hashlib.sha256(path.read_bytes()).hexdigest())


def test_splits_follow_content_and_the_cache_follows_content(scans, cache):
    before = {s.name: "test" for s in load_dataset(f"folder:{scans}:test")}
    (scans / "box" / "extra.stl").write_bytes(trimesh.creation.box(extents=(1, 2, 3)).export(file_type="stl"))
    after = {s.name for s in load_dataset(f"folder:{scans}:test")}
    assert set(before) <= after  # adding a file moves no other file
    shutil.move(scans / "ball" / "ball0.stl", scans / "ball" / "renamed.stl")
    clouds = sorted((cache / "datasets").rglob("*.npy"))
    stamps = {p: p.stat().st_mtime_ns for p in clouds}
    load_dataset(f"folder:{scans}:all")
    assert {p: p.stat().st_mtime_ns for p in clouds} == stamps  # renamed: not read again
    np.save(scans / "box" / "box3.npy", np.random.default_rng(9).normal(size=(800, 3)).astype(np.float32))
    load_dataset(f"folder:{scans}:all")
    assert len(sorted((cache / "datasets").rglob("*.npy"))) == len(clouds) + 1  # edited: read again


def test_bad_folder_specs_are_one_line_errors(tmp_path, cache):
    with pytest.raises(DatasetError, match="is not a folder"):
        load_dataset(f"folder:{tmp_path}/nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no readable point file or mesh"):
        load_dataset(f"folder:{tmp_path}/empty")
    with pytest.raises(DatasetError, match="has no split 'tset'"):
        load_dataset(f"folder:tset@{tmp_path}")


def test_distill_eval_and_int8_calibration_on_a_folder(tmp_path, cache):
    pytest.importorskip("onnxruntime")
    scans = write_scans(tmp_path / "scans", per_class=10)  # enough files for labelled fit and val splits
    import foundry3d
    from foundry3d.edge.export import export_onnx

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    teacher = tmp_path / "teacher"
    from foundry3d.models.checkpoint import save_release

    save_release(foundry3d.create_model("test"), teacher)
    run = foundry3d.distill(
        teacher=str(teacher), data=f"folder:{scans}", supertokens=2, out=tmp_path / "run",
        overrides=["data.num_points=256", "engine.steps=4", "engine.batch_size=4", "engine.eval_every=4",
                   "engine.progress=false", "engine.tensorboard=false"],
    )  # fmt: skip
    cfg = json.loads((tmp_path / "run" / "release" / "config.json").read_text())["meta"]["config"]
    assert cfg["probe"]["datasets"] == [f"folder:{scans}"]  # the run's own data, recorded as resolved
    last = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert any(k.startswith("svm_folder:") for k in json.dumps(last).split('"'))
    res = foundry3d.evaluate(run["release"], tasks=[f"svm:folder:{scans}"], out=tmp_path / "eval",
                             overrides=["svm.num_points=256", "progress=false"])  # fmt: skip
    task = res["tasks"][f"svm:folder:{scans}"]
    assert task["test_shapes"] == len(load_dataset(f"folder:{scans}:test").labelled())
    out = export_onnx(run["release"], tmp_path / "s.onnx", num_points=256, int8=True, verify=False)
    assert out["int8"]["calibration"].endswith(f"of folder:{scans}")  # the model's own data by default


def test_bad_files_among_good_ones_are_skipped_with_reasons(tmp_path, cache):
    import struct

    root = tmp_path / "mixed"
    (root / "a" / "loop").mkdir(parents=True)
    (root / "a" / "loop" / "back").symlink_to(root / "a", target_is_directory=True)  # a symlink loop
    rng = np.random.default_rng(0)
    for i in range(4):
        np.save(root / "a" / f"p{i}.npy", rng.normal(size=(200, 3)))
    (root / "a" / "huge.stl").write_bytes(b"\0" * 80 + struct.pack("<I", 10**9) + b"\0" * 100)  # claims 1e9
    (root / "a" / "verts.obj").write_text("".join(f"v {x} {y} {z}\n" for x, y, z in rng.normal(size=(50, 3))))
    info = dataset_info(f"folder:{root}")
    reasons = {s["file"]: s["reason"] for s in info["skipped"]}
    assert info["read"] == 5 and "declares 1,000,000,000 triangles" in reasons["a/huge.stl"]
    assert "a/verts.obj" not in reasons  # a mesh file without faces: its 50 vertices are the cloud


def test_a_class_of_one_file_is_a_one_line_eval_error(tmp_path, cache):
    from foundry3d.eval.suite import EvalError, evaluate

    root = tmp_path / "one"
    rng = np.random.default_rng(1)
    for cls in ("x", "y"):
        (root / cls).mkdir(parents=True)
    for i in range(3):
        np.save(root / "x" / f"x{i}.npy", rng.normal(size=(300, 3)))
    lone = root / "y" / "y0.npy"
    while True:  # class y's only file, with content that hashes into test: train then holds one class
        np.save(lone, rng.normal(size=(300, 3)))
        if split_of_file(lone) == "test":
            break
    assert set(load_dataset(f"folder:{root}").labels().tolist()) <= {0}
    with pytest.raises(EvalError, match="needs at least 2 classes"):
        evaluate("random:test", tasks=[f"svm:folder:{root}"], out=tmp_path / "e", overrides=["progress=false"])


def test_pretrain_on_a_folder(scans, tmp_path):
    import foundry3d

    out = foundry3d.pretrain(
        data=f"folder:{scans}", out=tmp_path / "pre",
        overrides=["model.variant=test", "data.num_points=256", "engine.steps=2", "engine.batch_size=4",
                   "engine.progress=false", "engine.tensorboard=false", "probe.enabled=false"],
    )  # fmt: skip
    cfg = json.loads((tmp_path / "pre" / "release" / "config.json").read_text())["meta"]
    assert cfg["datasets"] == [f"folder:{scans}"] and out["release"]
