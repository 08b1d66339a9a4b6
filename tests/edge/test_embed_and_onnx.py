import numpy as np
import pytest
import torch

import foundry3d
from foundry3d.edge.embed import EmbedError, embed
from foundry3d.models.checkpoint import save_release
from foundry3d.models.hub import create_student


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    teacher = foundry3d.create_model("test")
    return str(save_release(create_student(teacher, supertokens=4), tmp_path_factory.mktemp("s") / "student"))


def test_embed_writes_features_and_goes_on_past_a_bad_file(student, tmp_path):
    from plyfile import PlyData, PlyElement

    pts = np.random.default_rng(0).normal(size=(3000, 3)).astype(np.float32) * 5 + 100  # any units, any offset
    v = np.array([tuple(p) for p in pts], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(v, "vertex")]).write(str(tmp_path / "scan.ply"))
    np.savetxt(tmp_path / "other.xyz", pts[:1000])
    (tmp_path / "broken.xyz").write_text("1 2\n")
    files = [str(tmp_path / f) for f in ("scan.ply", "broken.xyz", "other.xyz")]
    with pytest.raises(EmbedError, match=r"broken\.xyz"):
        embed(files, model=student, out=str(tmp_path / "out"), point_features=True, progress=False)
    z = np.load(tmp_path / "out" / "scan.npz")
    c = z["tokens"].shape[0]
    per_point = np.load(tmp_path / "out" / "scan.points.npy")
    assert c == round(3000 / 16) and per_point.shape == (3000, 32) and z["global"].shape == (64,)
    assert per_point.dtype == np.float16 and np.isfinite(per_point).all() and int(z["model_points"]) == 3000
    assert z["assignment"].shape == (c,) and np.allclose(z["centres"].mean(0), pts.mean(0), atol=1.0)
    assert (tmp_path / "out" / "other.npz").exists()  # the file after the broken one was still embedded


def test_embed_keeps_same_stems_apart_and_records_dropped_nan_points(student, tmp_path):
    import json

    pts = np.random.default_rng(1).normal(size=(800, 3))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    np.savetxt(tmp_path / "a" / "scan.xyz", pts)
    scan_b = pts.copy()
    scan_b[::100] = np.nan  # a scanner's missing returns
    np.savetxt(tmp_path / "b" / "scan.xyz", scan_b)
    files = [str(tmp_path / "a" / "scan.xyz"), str(tmp_path / "b" / "scan.xyz")]
    summary = embed(files, model=student, out=str(tmp_path / "out"), point_features=False, progress=False)
    assert summary["outputs"] == {
        files[0]: str(tmp_path / "out" / "scan.npz"),
        files[1]: str(tmp_path / "out" / "scan_2.npz"),
    }
    assert "dropped 8 of 800 points" in summary["warnings"][files[1]][0]
    assert json.loads((tmp_path / "out" / "embed.json").read_text())["warnings"] == summary["warnings"]
    with pytest.raises(EmbedError, match="NaN"):
        embed(files[1:], model=student, out=str(tmp_path / "strict"), drop_nonfinite=False, progress=False)


def test_onnx_export_checks_and_int8(student, tmp_path, cache):
    pytest.importorskip("onnxruntime")
    from foundry3d.edge.export import ExportError, export_onnx
    from foundry3d.edge.onnx_runtime import OnnxModelError, OnnxPointModel, quantize_int8

    with pytest.raises(ExportError, match="too small"):
        export_onnx(student, tmp_path / "bad.onnx", num_points=40)
    res = export_onnx(student, tmp_path / "s.onnx", num_points=256)
    assert res["parity"][0]["max_abs_err"] < 1e-4
    m = OnnxPointModel(tmp_path / "s.onnx")
    x = np.random.default_rng(0).normal(size=(16, 256, 3)).astype(np.float32)
    x /= np.linalg.norm(x, axis=-1).max(1)[:, None, None]  # unit sphere, like the models' inputs
    for bad, msg in [(np.full((1, 256, 3), np.nan, np.float32), "NaN"), (x[:, :10], "fewer than"), (x[0], "shape")]:
        with pytest.raises(OnnxModelError, match=msg):
            m(bad)
    q = quantize_int8(tmp_path / "s.onnx", tmp_path / "s.int8.onnx", x)
    from foundry3d.edge.onnx_runtime import describe

    assert describe(q)["ops"].get("QuantizeLinear", 0) > 0 and describe(q)["opset"] >= 18
    a, b = m(x)[m.outputs[0]], OnnxPointModel(q)(x)[m.outputs[0]]
    assert a.shape == b.shape
    full, q8 = m(x), OnnxPointModel(q)(x)
    assert m.outputs == ["tokens", "centres", "assignment", "global"]
    for out in ("centres", "assignment"):  # grouping and routing stay fp32
        assert np.array_equal(full[out], q8[out]), out
    pa, pb = np.concatenate([a.max(1), a.mean(1)], -1), np.concatenate([b.max(1), b.mean(1)], -1)
    cos = (pa * pb).sum(-1) / np.linalg.norm(pa, axis=-1) / np.linalg.norm(pb, axis=-1)
    assert cos.mean() > 0.8, cos  # int8 keeps the pooled features' direction (a random 32-wide model)


def test_big_clouds_run_the_model_on_a_bounded_subsample_and_stream_per_point_features(student, tmp_path):
    pts = np.random.default_rng(2).normal(size=(5000, 3)).astype(np.float32)
    np.save(tmp_path / "big.npy", pts)
    summary = embed(
        [str(tmp_path / "big.npy")], model=student, out=str(tmp_path / "o"), point_features=True,
        max_points=1000, progress=False,
    )  # fmt: skip
    z = np.load(tmp_path / "o" / "big.npz")
    assert int(z["model_points"]) == 1000 and z["tokens"].shape[0] == round(1000 / 16)
    assert np.load(tmp_path / "o" / "big.points.npy", mmap_mode="r").shape == (5000, 32)
    assert "seeded subsample of 1000" in summary["warnings"][str(tmp_path / "big.npy")][0]
    again = embed([str(tmp_path / "big.npy")], model=student, out=str(tmp_path / "o2"), max_points=1000, progress=False)
    assert np.array_equal(np.load(again["written"][0])["global"], z["global"])  # the subsample is seeded


def test_load_embed_and_onnx_give_one_embedding_for_raw_units(student, tmp_path):
    pytest.importorskip("onnxruntime")
    from foundry3d.edge.export import export_onnx
    from foundry3d.edge.onnx_runtime import OnnxPointModel
    from foundry3d.models.base import UnnormalizedInputWarning

    raw = (np.random.default_rng(5).normal(size=(512, 3)) * 80 + 1000).astype(np.float32)  # millimetres, offset
    np.save(tmp_path / "scan.npy", raw)
    model = foundry3d.load(student)
    api = model.embed(raw).numpy()
    cli = np.load(
        embed([str(tmp_path / "scan.npy")], model=student, out=str(tmp_path / "e"), progress=False)["written"][0]
    )["global"]
    export_onnx(student, tmp_path / "s.onnx", num_points=512)
    graph = OnnxPointModel(tmp_path / "s.onnx")(raw[None])["global"][0]
    assert np.abs(api - cli).max() < 1e-5 and np.abs(api - graph).max() < 1e-4
    scaled = model.embed(raw / 1000.0).numpy()  # the same shape in metres: the same embedding
    assert np.abs(api - scaled).max() < 1e-4
    with pytest.warns(UnnormalizedInputWarning, match="unit sphere"):
        model.forward_features(torch.from_numpy(raw)[None])


def test_export_keeps_a_dynamic_batch_whatever_the_eval_chunk_size(student, tmp_path):
    """The tokenizer's eval chunking compares the patch count with chunk_groups; in export that comparison must
    not become a guard that fixes the batch to the example's (2 clouds x g patches == chunk_groups here)."""
    pytest.importorskip("onnxruntime")
    from foundry3d.edge.export import export_onnx
    from foundry3d.edge.onnx_runtime import OnnxPointModel

    model = foundry3d.load(student)
    model.tokenizer.chunk_groups = 2 * model.groups_for(512)
    export_onnx(model, tmp_path / "s.onnx", num_points=512)
    graph = OnnxPointModel(tmp_path / "s.onnx")
    for b in (1, 3):
        x = np.random.default_rng(b).normal(size=(b, 512, 3)).astype(np.float32)
        assert graph(x)["global"].shape[0] == b
