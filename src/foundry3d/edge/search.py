"""``foundry3d search`` and ``foundry3d merge``: nearest shapes in an embedding index, and sharded indexes made one.

Similarity is the cosine of global embeddings centred on the index's mean: pooled features of one model
share a large common direction, so raw cosines of unrelated shapes all read close to 1 (the ranking is
the same only when the mean is negligible). Below ``ANN_FROM`` embeddings every query is compared with
every embedding (numpy, in chunks: memory stays bounded for any size); from ``ANN_FROM`` on, an HNSW graph
(faiss, the ``search`` extra: kept by Meta, one wheel per platform on PyPI, no compiler, and the
reference implementation other ANN libraries benchmark against) is built once, saved beside the index
and reused while the embeddings are unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from foundry3d.edge.embed import embed_points, read_cloud
from foundry3d.edge.index import INDEX_FILES, Index, read_index, write_index
from foundry3d.errors import Foundry3DError
from foundry3d.files import atomic_write, run_folder, user_path

ANN_FROM = 100_000  # embeddings from which search uses the HNSW graph (faiss) instead of exact search
CHUNK = 65_536  # rows compared at once by exact search
HNSW_M, HNSW_EF_BUILD = 32, 200


class SearchError(Foundry3DError, ValueError):
    """A query, index or setting that search cannot use."""


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def index_mean(emb: np.ndarray) -> np.ndarray:
    """The mean embedding of an index, summed in chunks in float64 so a memory-mapped index of millions of rows
    is never loaded whole."""
    total = np.zeros(emb.shape[1], np.float64)
    for s in range(0, len(emb), CHUNK):
        total += np.asarray(emb[s : s + CHUNK], np.float64).sum(0)
    return (total / max(len(emb), 1)).astype(np.float32)


def exact_top_k(emb: np.ndarray, mean: np.ndarray | None, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cosines)`` of the ``k`` nearest embeddings of each query (Q, k), best first. ``mean`` None:
    ``emb`` already holds centred unit vectors (:func:`unit_rows`)."""
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for s in range(0, len(emb), CHUNK):
        block = np.asarray(emb[s : s + CHUNK], np.float32)
        block = block if mean is None else _unit(block - mean)
        sims = q @ block.T
        best_s = np.concatenate([best_s, sims], 1)
        best_i = np.concatenate([best_i, np.broadcast_to(np.arange(s, s + len(block)), sims.shape)], 1)
        if best_s.shape[1] > k:
            keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, 1), np.take_along_axis(best_s, order, 1)


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _key(index: Index) -> dict[str, int]:
    st = (index.folder / "embeddings.npy").stat()
    return {"rows": len(index.embeddings), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def unit_rows(index: Index, mean: np.ndarray) -> np.ndarray:
    """The index's embeddings centred and scaled to unit length, computed once and kept beside the index
    (``unit.npy``, memory-mapped) while the embeddings are unchanged: exact search is then one product."""
    path, key_path = index.folder / "unit.npy", index.folder / "unit.json"
    key = {**_key(index), "mean": hashlib.sha256(mean.tobytes()).hexdigest()[:16]}
    try:
        if json.loads(key_path.read_text()) == key:
            return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        pass

    def write(tmp: str) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=index.embeddings.shape)
        for s in range(0, len(index.embeddings), CHUNK):
            out[s : s + CHUNK] = _unit(np.asarray(index.embeddings[s : s + CHUNK], np.float32) - mean)
        out.flush()
        del out

    atomic_write(path, write)
    atomic_write(key_path, lambda tmp: Path(tmp).write_text(json.dumps(key)))
    return np.load(path, mmap_mode="r", allow_pickle=False)


def hnsw_index(index: Index, mean: np.ndarray, progress: bool = False) -> Any:
    """The HNSW graph of ``index`` (inner product of centred unit vectors), loaded or built and saved."""
    faiss = _faiss()
    path, key_path = index.folder / "hnsw.faiss", index.folder / "hnsw.json"
    key = {**_key(index), "m": HNSW_M}
    try:
        if json.loads(key_path.read_text()) == key:
            return faiss.read_index(str(path))
    except (OSError, ValueError, RuntimeError):
        pass
    if progress:
        print(f"foundry3d search: building the HNSW graph of {len(index.embeddings)} embeddings (once)", flush=True)
    graph = faiss.IndexHNSWFlat(index.embeddings.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = HNSW_EF_BUILD
    for s in range(0, len(index.embeddings), CHUNK):
        graph.add(np.ascontiguousarray(_unit(np.asarray(index.embeddings[s : s + CHUNK], np.float32) - mean)))
    atomic_write(path, lambda tmp: faiss.write_index(graph, tmp))
    atomic_write(key_path, lambda tmp: Path(tmp).write_text(json.dumps(key)))
    return graph


def search(
    index: str,
    queries: list[str],
    top_k: int = 10,
    model: str | None = None,
    out: str = "runs/search",
    exact: bool = False,
    centre: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Find the shapes of an embedding index most similar to your query files (cosine), as a table and a CSV.

    Args:
        index: a folder written by `foundry3d embed FILES --out FOLDER` (or `foundry3d merge`).
        queries: point files or meshes to look up; a file whose content is in the index uses its stored embedding.
        top_k: neighbours listed per query.
        model: the model that embeds queries not in the index (default: the index's own, checked by hash).
        out: folder for results.csv (one row per query and rank).
        exact: compare with every embedding even in a large index (default: exact below 100,000 embeddings,
            an HNSW graph from there, with the search extra).
        centre: cosine of embeddings centred on the index's mean (raw pooled embeddings all point one way).
        overwrite: replace the results in out.
        progress: say when the HNSW graph is being built.
    """
    if not queries:
        raise SearchError("search needs at least one query file")
    if top_k < 1:
        raise SearchError(f"top_k must be >= 1, got {top_k}")
    idx = read_index(user_path(index, "index"))
    assert idx is not None
    ok = idx.ok()
    if not ok:
        raise SearchError(f"{index}: the index holds no embedded file")
    by_sha = {r["sha256"]: int(r["row"]) for r in ok}
    rows = [int(r["row"]) for r in ok]
    if len(rows) != len(idx.embeddings) or rows != sorted(rows):
        emb = np.asarray(idx.embeddings)[rows]  # rows left behind by edited files are not searched
    else:
        emb = idx.embeddings
    files = [r["file"] for r in ok]
    mean = index_mean(emb) if centre else np.zeros(emb.shape[1], np.float32)
    qvecs = np.stack([_query(q, idx, by_sha, model, mean) for q in queries])
    k = min(top_k, len(emb))
    faiss = _faiss()
    method = "exact"
    if not exact and len(emb) >= ANN_FROM and emb is idx.embeddings:
        if faiss is None:
            print("foundry3d search: exact search (pip install 'foundry3d[search]' for HNSW on large indexes)")
        else:
            graph = hnsw_index(idx, mean, progress)
            graph.hnsw.efSearch = max(128, 2 * k)
            sims, found = graph.search(np.ascontiguousarray(qvecs, np.float32), k)
            method = "hnsw"
    if method == "exact" and emb is idx.embeddings:
        found, sims = exact_top_k(unit_rows(idx, mean), None, qvecs, k)
    elif method == "exact":
        found, sims = exact_top_k(emb, mean, qvecs, k)
    results = [
        {"query": q, "rank": r + 1, "file": files[int(found[i, r])], "cosine": round(float(sims[i, r]), 4)}
        for i, q in enumerate(queries)
        for r in range(k)
        if found[i, r] >= 0
    ]
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=["query", "rank", "file", "cosine"], lineterminator="\n")
    w.writeheader()
    w.writerows(results)
    with run_folder(user_path(out), "search", ("results.csv",), overwrite) as folder:
        atomic_write(folder / "results.csv", lambda tmp: Path(tmp).write_text(text.getvalue()))
    print(f"foundry3d search: {len(emb)} embeddings, {method} search, centred={centre}; {folder / 'results.csv'}")
    return results


def _query(q: str, idx: Index, by_sha: dict[str, int], model: str | None, mean: np.ndarray) -> np.ndarray:
    """The centred unit embedding of one query file."""
    try:
        pts, sha, _ = read_cloud(os.path.expanduser(q), True, 16_384)
    except (ValueError, OSError) as e:
        raise SearchError(f"query {q}: {e}") from e
    if sha in by_sha and model is None:
        vec = np.asarray(idx.embeddings[by_sha[sha]], np.float32)
    else:
        net = _model(idx, model)
        if len(pts) < net.tcfg.group_size:
            raise SearchError(f"query {q}: {len(pts)} points, fewer than one patch of the index's model "
                              f"({net.tcfg.group_size})")  # fmt: skip
        vec = embed_points(net, pts)["global"].astype(np.float32)
    return _unit(vec - mean)


_MODELS: dict[str, Any] = {}


def _model(idx: Index, spec: str | None) -> Any:
    """The model that embeds queries: ``spec`` or the index's own, which must have made the index."""
    from foundry3d.models.hub import model_hash, resolve

    spec = spec or idx.model
    if spec not in _MODELS:
        try:
            _MODELS[spec] = resolve(spec)[0]
        except Foundry3DError as e:
            raise SearchError(f"the index was made with model {idx.model}, which cannot be loaded here ({e}); "
                              "pass --model with the same model") from e  # fmt: skip
    net = _MODELS[spec]
    if idx.model_hash and model_hash(net) != idx.model_hash:
        raise SearchError(
            f"--model {spec} (hash {model_hash(net)}) did not make this index (model {idx.model}, hash "
            f"{idx.model_hash}): queries must be embedded by the index's model"
        )
    return net


def merge(indexes: list[str], out: str = "runs/index", overwrite: bool = False) -> dict[str, Any]:
    """Merge the indexes of several embed runs (e.g. the shards of embed --shard K/N) into one index.

    Args:
        indexes: folders written by `foundry3d embed` with the same model.
        out: folder for the merged embeddings.npy, index.csv and embed.json (per-file outputs stay where they are).
        overwrite: replace an earlier merge in out.
    """
    if not indexes:
        raise SearchError("merge needs at least one index folder")
    parts = [read_index(user_path(p, "index")) for p in indexes]
    hashes = {p.model_hash for p in parts if p is not None}
    if len(hashes) > 1:
        raise SearchError(f"the indexes were made by different models ({', '.join(sorted(hashes))}): cannot merge")
    target = user_path(out)
    rows: list[dict[str, Any]] = []
    embs: list[np.ndarray] = []
    seen: set[str] = set()
    for p in parts:
        assert p is not None
        for r in p.rows:
            if r["file"] in seen:
                continue
            seen.add(r["file"])
            row: dict[str, Any] = dict(r)
            if r["status"] == "ok":
                row["output"] = os.path.relpath(p.folder.resolve() / r["output"], target.resolve())
                row["row"] = len(embs)
                embs.append(np.asarray(p.embeddings[int(r["row"])], np.float32))
            rows.append(row)
    first = parts[0]
    assert first is not None
    with run_folder(target, "embed", ("embed.json", *INDEX_FILES),
                    overwrite) as folder:  # fmt: skip
        width = first.embeddings.shape[1]
        write_index(folder, rows, np.stack(embs) if embs else np.zeros((0, width), np.float32))
        summary = {
            "model": first.model,
            "model_hash": first.model_hash,
            "merged_from": [str(p.folder) for p in parts if p is not None],
            "index": {"files": len(rows), "embedded": len(embs)},
            "written": [],
        }
        atomic_write(folder / "embed.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    return summary
