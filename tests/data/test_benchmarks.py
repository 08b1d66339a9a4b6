"""Each benchmark loader on small fixtures written in exactly the official on-disk format."""

import json
import pickle

import h5py
import numpy as np
import pytest

from foundry3d.data.base import DatasetError
from foundry3d.data.benchmarks.modelnet import load_fewshot_fold
from foundry3d.data.registry import load_dataset

RNG = np.random.default_rng(0)


def cloud(n: int, extra: int = 0) -> np.ndarray:
    return (RNG.normal(size=(n, 3 + extra)) * 3 + 5).astype(np.float32)


def test_shapenet55_and_34(tmp_path):
    root = tmp_path / "ShapeNet55-34"
    (root / "shapenet_pc").mkdir(parents=True)
    names = [f"{syn}-{m:04d}.npy" for syn in ("02691156", "03001627", "04379243") for m in range(3)]
    for n in names:
        np.save(root / "shapenet_pc" / n, cloud(8192))
    for fam in ("ShapeNet-55", "ShapeNet-34"):
        (root / fam).mkdir()
        (root / fam / "train.txt").write_text("\n".join(names[i] for i in range(9) if i % 3 != 2) + "\n")
        (root / fam / "test.txt").write_text("\n".join(names[i] for i in range(9) if i % 3 == 2) + "\n")
    tr = load_dataset(f"shapenet55:train@{root}")
    te = load_dataset(f"shapenet55:test@{root}")
    assert len(tr) == 6 and len(te) == 3 and tr.classes == ["02691156", "03001627", "04379243"]
    s = te[1]
    assert s.points.shape == (8192, 3) and s.label == 1
    assert abs(np.linalg.norm(s.points, axis=1).max() - 1) < 1e-5 and np.abs(s.points.mean(0)).max() < 1e-4
    assert len(load_dataset(f"shapenet34:train@{root}")) == 6
    (root / "shapenet_pc" / names[2]).unlink()
    with pytest.raises(FileNotFoundError, match=names[2]):
        te[0]
    with pytest.raises(DatasetError, match="ShapeNet-55"):
        load_dataset(f"shapenet55:train@{tmp_path}")


def test_modelnet40_three_layouts(tmp_path):
    classes = ["airplane", "night_stand", "table"]
    # (c) ply_hdf5_2048
    h5 = tmp_path / "modelnet40_ply_hdf5_2048"
    h5.mkdir()
    (h5 / "shape_names.txt").write_text("\n".join(classes) + "\n")
    for split, files in (("train", 2), ("test", 1)):
        for k in range(files):
            with h5py.File(h5 / f"ply_data_{split}{k}.h5", "w") as f:
                f["data"] = RNG.normal(size=(4, 2048, 3)).astype(np.float32)
                f["label"] = np.array([[0], [1], [2], [1]], np.uint8)
                f["normal"] = RNG.normal(size=(4, 2048, 3)).astype(np.float32)
                f["faceId"] = np.zeros((4, 2048), np.int32)
    d = load_dataset(f"modelnet40:train@{h5}")
    assert len(d) == 8 and d.classes == classes and d[1].label == 1 and d[0].normals.shape == (2048, 3)
    # (a) normal_resampled txt
    txt = tmp_path / "modelnet40_normal_resampled"
    txt.mkdir()
    (txt / "modelnet40_shape_names.txt").write_text("\n".join(classes) + "\n")
    ids = {"train": ["airplane_0001", "night_stand_0001", "table_0001"], "test": ["night_stand_0002"]}
    for split, sids in ids.items():
        (txt / f"modelnet40_{split}.txt").write_text("\n".join(sids) + "\n")
        for sid in sids:
            cls = "_".join(sid.split("_")[:-1])
            (txt / cls).mkdir(exist_ok=True)
            np.savetxt(txt / cls / f"{sid}.txt", cloud(100, 3), delimiter=",", fmt="%.6f")
    d = load_dataset(f"modelnet40:train@{txt}")
    assert [d[i].label for i in range(3)] == [0, 1, 2] and d[1].points.shape == (100, 3)
    assert d[1].normals.shape == (100, 3)
    # (b) .dat pickles take precedence in the same folder
    pts = [cloud(8192, 3) for _ in range(2)]
    with open(txt / "modelnet40_test_8192pts_fps.dat", "wb") as f:
        pickle.dump([pts, [np.array([2], np.int32), np.array([0], np.int32)]], f)
    d = load_dataset(f"modelnet40:test@{txt}")
    assert len(d) == 2 and d.labels().tolist() == [2, 0] and d[0].points.shape == (8192, 3)


def test_dat_pickle_with_foreign_globals_is_refused(tmp_path):
    import argparse

    (tmp_path / "modelnet40_shape_names.txt").write_text("a\n")
    with open(tmp_path / "modelnet40_train_8192pts_fps.dat", "wb") as f:
        pickle.dump([[argparse.Namespace(x=1)], [np.array([0])]], f)
    with pytest.raises(DatasetError, match="holds objects other than numpy arrays"):
        load_dataset(f"modelnet40:train@{tmp_path}")


@pytest.mark.parametrize("spelling", ["5way_10shot", "5way10shot"])
def test_modelnet_fewshot_folds(tmp_path, spelling):
    folder = tmp_path / "ModelNetFewshot" / spelling
    folder.mkdir(parents=True)
    for fold in range(2):
        fold_data = {
            "train": [(cloud(8192, 3), i // 10, 7 + i // 10) for i in range(50)],
            "test": [(cloud(8192, 3), i // 20, 7 + i // 20) for i in range(100)],
        }
        with open(folder / f"{fold}.pkl", "wb") as f:
            pickle.dump(fold_data, f)
    support, query = load_fewshot_fold(tmp_path / "ModelNetFewshot", 5, 10, 1)
    assert len(support) == 50 and len(query) == 100 and support[0].points.shape == (8192, 3)
    assert sorted(set(query.labels().tolist())) == [0, 1, 2, 3, 4]
    q = load_dataset(f"modelnet40_fewshot:5way_10shot/1/test@{tmp_path / 'ModelNetFewshot'}")
    assert len(q) == 100
    with pytest.raises(DatasetError, match="10way_10shot"):
        load_fewshot_fold(tmp_path / "ModelNetFewshot", 10, 10, 0)


def test_scanobjectnn_variants(tmp_path):
    root = tmp_path / "ScanObjectNN"
    for folder, suffix in (
        ("main_split", "objectdataset.h5"),
        ("main_split_nobg", "objectdataset.h5"),
        ("main_split", "objectdataset_augmentedrot_scale75.h5"),
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for prefix, n in (("training", 6), ("test", 3)):
            with h5py.File(root / folder / f"{prefix}_{suffix}", "w") as f:
                f["data"] = RNG.normal(size=(n, 2048, 3)).astype(np.float32)
                f["label"] = np.arange(n) % 15
                f["mask"] = np.zeros((n, 2048), np.int64)
    for variant in ("scanobjectnn_objbg", "scanobjectnn_objonly", "scanobjectnn_hardest"):
        tr = load_dataset(f"{variant}:train@{root}")
        assert len(tr) == 6 and tr.num_classes == 15 and tr[2].label == 2
        assert len(load_dataset(f"{variant}:test@{root}")) == 3
    (root / "main_split_nobg" / "test_objectdataset.h5").write_bytes(b"not hdf5")
    with pytest.raises(DatasetError, match=r"test_objectdataset\.h5"):
        load_dataset(f"scanobjectnn_objonly:test@{root}")


def test_shapenetpart(tmp_path):
    root = tmp_path / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    (root / "train_test_split").mkdir(parents=True)
    cats = [("Airplane", "02691156"), ("Bag", "02773838")]
    (root / "synsetoffset2category.txt").write_text("".join(f"{n}\t{s}\n" for n, s in cats))
    files = {"train": [], "val": [], "test": []}
    for (_name, syn), parts in zip(cats, ([0, 1, 2, 3], [4, 5])):
        (root / syn).mkdir()
        for m, split in enumerate(["train", "train", "val", "test"]):
            n = 500 + m
            arr = np.concatenate([cloud(n, 3), RNG.choice(parts, size=(n, 1)).astype(np.float32)], 1)
            np.savetxt(root / syn / f"m{m}.txt", arr, fmt="%.6f")
            files[split].append(f"shape_data/{syn}/m{m}")
    for split, items in files.items():
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(items))
    tv = load_dataset(f"shapenetpart:trainval@{root}")
    te = load_dataset(f"shapenetpart:test@{root}")
    assert len(tv) == 6 and len(te) == 2 and tv.classes == ["Airplane", "Bag"]
    s = te[1]
    assert s.category == 1 and set(s.parts.tolist()) <= {4, 5} and s.points.shape == (503, 3)
    assert tv.part_spec.category_parts[1] == [4, 5] and tv.part_spec.category_parts[0] == [0, 1, 2, 3]


def test_unknown_and_unbuilt(cache):
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(DatasetError, match="foundry3d data build sh3d16"):
        load_dataset("sh3d16:train")
    with pytest.raises(DatasetError, match="needs its folder"):
        load_dataset("modelnet40:train")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("modelnet40:train@/no/such/folder")
