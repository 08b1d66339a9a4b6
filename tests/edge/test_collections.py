"""embed for collections (meshes, folders, globs, one index, resume, shards, merge) and search."""

import csv
import json

import numpy as np
import pytest
import torch
import trimesh

import foundry3d
from foundry3d.edge.embed import EmbedError, embed
from foundry3d.edge.index import read_index
from foundry3d.edge.search import SearchError, exact_top_k, merge, search
from foundry3d.models.checkpoint import save_release
from foundry3d.models.hub import create_student


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    teacher = foundry3d.create_model("test")
    return str(save_release(create_student(teacher, supertokens=4), tmp_path_factory.mktemp("s") / "student"))


@pytest.fixture
def scans(tmp_path):
    root = tmp_path / "scans"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        trimesh.creation.box(extents=rng.uniform(0.5, 2, 3)).export(root / "a" / f"box{i}.stl")
        np.save(root / "b" / f"blob{i}.npy", rng.normal(size=(600, 3)).astype(np.float32))
    trimesh.creation.icosphere(2).export(root / "a" / "ball.ply")  # a PLY with faces: sampled, not its vertices
    (root / "b" / "readme.md").write_text("ignored")
    return root


def _rows(folder):
    with open(folder / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_embed_a_folder_into_one_index_and_resume(student, scans, tmp_path, capsys):
    out = tmp_path / "idx"
    s = embed([str(scans)], model=student, out=str(out), progress=False)
    rows = _rows(out)
    assert len(rows) == 7 and all(r["status"] == "ok" for r in rows) and s["ignored"] == {".md": 1}
    emb = np.load(out / "embeddings.npy")
    assert emb.shape == (7, 64) and [int(r["row"]) for r in rows] == list(range(7))
    ball = next(r for r in rows if r["file"].endswith("ball.ply"))
    assert int(ball["points"]) == 16_384  # surface-sampled, not the icosphere's 162 vertices
    assert any("sampled on its surface" in w for w in s["warnings"][ball["file"]])
    z, box0 = np.load(out / "box0.npz"), next(r for r in rows if r["file"].endswith("box0.stl"))
    assert (
        box0["output"] == "box0.npz"
        and np.allclose(z["global"], emb[int(box0["row"])])
        and not list(out.glob("*.points.npy"))
    )  # per-point only on request
    again = embed([str(scans)], model=student, out=str(out), progress=False)
    assert again["reused"] == 7 and np.array_equal(np.load(out / "embeddings.npy"), emb)
    np.save(scans / "b" / "blob1.npy", np.random.default_rng(5).normal(size=(700, 3)).astype(np.float32))
    third = embed([str(scans)], model=student, out=str(out), progress=False)
    assert third["reused"] == 6 and len(third["outputs"]) == 7
    edited = next(r for r in _rows(out) if r["file"].endswith("blob1.npy"))
    assert edited["points"] == "700" and edited["output"] == "blob1.npz"


def test_a_failed_file_is_listed_with_its_reason(student, scans, tmp_path):
    (scans / "b" / "bad.xyz").write_text("1 2\n")
    with pytest.raises(EmbedError, match=r"bad\.xyz"):
        embed([str(scans / "b" / "*.*")], model=student, out=str(tmp_path / "o"), progress=False)
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in _rows(tmp_path / "o")}
    assert rows["bad.xyz"]["status"] == "failed" and "3 columns" in rows["bad.xyz"]["reason"]
    assert rows["readme.md"]["status"] == "failed"  # a glob takes what it matches; each failure says why
    assert rows["blob0.npy"]["status"] == "ok"


def test_shards_partition_the_inputs_and_merge_into_one_index(student, scans, tmp_path):
    whole = embed([str(scans)], model=student, out=str(tmp_path / "whole"), progress=False)
    parts = []
    for k in (1, 2, 3):
        try:
            embed([str(scans)], model=student, out=str(tmp_path / f"p{k}"), shard=f"{k}/3", progress=False)
            parts.append(str(tmp_path / f"p{k}"))
        except EmbedError as e:
            assert "holds none" in str(e)
    merged = merge(parts, out=str(tmp_path / "all"))
    assert merged["index"] == {"files": 7, "embedded": 7}
    idx = read_index(tmp_path / "all")
    by_file = {r["file"]: np.asarray(idx.embeddings[int(r["row"])]) for r in idx.ok()}
    ref = read_index(tmp_path / "whole")
    for r in ref.ok():
        assert np.allclose(by_file[r["file"]], ref.embeddings[int(r["row"])], atol=1e-6)
    assert (tmp_path / "all" / idx.ok()[0]["output"]).is_file()  # outputs stay in the shards, found from here
    with pytest.raises(EmbedError, match="K/N"):
        embed([str(scans)], model=student, out=str(tmp_path / "x"), shard="4/3", progress=False)
    assert whole["index"]["embedded"] == 7


def test_search_finds_the_query_and_writes_a_csv(student, scans, tmp_path):
    embed([str(scans)], model=student, out=str(tmp_path / "idx"), progress=False)
    q = scans / "a" / "box1.stl"
    res = search(str(tmp_path / "idx"), [str(q)], top_k=3, out=str(tmp_path / "s"), progress=False)
    assert [r["rank"] for r in res] == [1, 2, 3] and res[0]["file"] == str(q) and res[0]["cosine"] > 0.999
    with open(tmp_path / "s" / "results.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 3
    copy = tmp_path / "copy.stl"  # same content elsewhere: its stored embedding is used
    copy.write_bytes(q.read_bytes())
    assert search(str(tmp_path / "idx"), [str(copy)], top_k=1, out=str(tmp_path / "s2"))[0]["file"] == str(q)
    fresh = tmp_path / "new.npy"  # not in the index: embedded by the index's own model
    np.save(fresh, np.load(scans / "b" / "blob2.npy") * 3 + 1)
    assert search(str(tmp_path / "idx"), [str(fresh)], top_k=1, out=str(tmp_path / "s3"))[0]["file"].endswith(
        "blob2.npy"
    )
    with pytest.raises(SearchError, match="did not make this index"):
        search(str(tmp_path / "idx"), [str(fresh)], model="random:test", out=str(tmp_path / "s4"))
    np.save(tmp_path / "tiny.npy", np.random.default_rng(3).normal(size=(4, 3)))
    with pytest.raises(SearchError, match="fewer than one patch"):
        search(str(tmp_path / "idx"), [str(tmp_path / "tiny.npy")], out=str(tmp_path / "s6"))
    with pytest.raises(Exception, match="not an embedding index"):
        search(str(scans), [str(q)], out=str(tmp_path / "s5"))
    info = json.loads((tmp_path / "idx" / "embed.json").read_text())
    assert info["model_hash"] and info["index"]["embedded"] == 7


def test_exact_top_k_matches_a_full_sort():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(1000, 16)).astype(np.float32)
    mean = emb.mean(0)
    q = rng.normal(size=(4, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    import foundry3d.edge.search as s

    old, s.CHUNK = s.CHUNK, 97  # many chunks
    try:
        rows, sims = exact_top_k(emb, mean, q, 5)
    finally:
        s.CHUNK = old
    unit = (emb - mean) / np.linalg.norm(emb - mean, axis=1, keepdims=True)
    full = np.argsort(-(q @ unit.T), axis=1)[:, :5]
    assert np.array_equal(rows, full) and np.allclose(sims[:, 0], (q @ unit.T).max(1), atol=1e-6)


def test_hnsw_path_agrees_with_exact_search(student, tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    import foundry3d.edge.search as s
    from foundry3d.edge.index import write_index

    rng = np.random.default_rng(1)
    folder = tmp_path / "big"
    folder.mkdir()
    emb = rng.normal(size=(3000, 64)).astype(np.float32)
    rows = [{"file": f"f{i}.npy", "points": 100, "status": "ok", "reason": "", "sha256": f"{i:064x}",
             "output": f"f{i}.npz", "row": i} for i in range(3000)]  # fmt: skip
    write_index(folder, rows, emb)
    (folder / "embed.json").write_text(json.dumps({"model": "x", "model_hash": ""}))
    q = tmp_path / "q.npy"
    np.save(q, rng.normal(size=(300, 3)).astype(np.float32))
    monkeypatch.setattr(s, "_query", lambda *a: s._unit(emb[7] - s.index_mean(emb)))
    monkeypatch.setattr(s, "ANN_FROM", 1000)
    ann = search(str(folder), [str(q)], top_k=10, out=str(tmp_path / "a"), progress=False)
    exact = search(str(folder), [str(q)], top_k=10, exact=True, out=str(tmp_path / "e"), progress=False)
    assert (folder / "hnsw.faiss").is_file() and ann[0]["file"] == "f7.npy"
    assert len({r["file"] for r in ann} & {r["file"] for r in exact}) >= 8  # recall@10 on this toy index


def test_a_resumed_folder_never_gives_a_new_file_an_earlier_files_output_name(student, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rng = np.random.default_rng(4)
    np.save(tmp_path / "a" / "scan.v2.npy", rng.normal(size=(300, 3)))
    embed([str(tmp_path / "a")], model=student, out=str(tmp_path / "o"), point_features=True, progress=False)
    np.save(tmp_path / "b" / "scan.v2.npy", rng.normal(size=(300, 3)))  # another file, the same stem
    # another model: the earlier rows are not reused, but their files stay and keep their names
    s = embed([str(tmp_path / "b")], model="random:test", out=str(tmp_path / "o"), progress=False)
    assert (tmp_path / "o" / "scan.v2.points.npy").is_file()
    assert s["outputs"][str(tmp_path / "b" / "scan.v2.npy")].endswith("scan.v2_2.npz")
