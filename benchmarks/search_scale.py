"""Search at scale: exact (numpy) against HNSW (faiss) on 10^4, 10^5 and 10^6 embeddings.

The embeddings are synthetic: 1,000 Gaussian clusters on a 32-dimensional subspace lifted into 384
dimensions (the width of the embedded teacher's pooled features) with a little noise everywhere, since a
model's embeddings span few directions; with full-rank isotropic noise instead, nearest neighbours are
near-ties and every ANN method's recall drops (0.79 at 10^5 in a first run of this script). The code timed
is the library's own: exact search on the cached centred unit rows (``unit_rows``, ``exact_top_k``) and the
HNSW graph (``hnsw_index`` and its search). Recall@10 is
the share of the exact top 10 the HNSW search returns, over 200 queries. Run it on a quiet machine:

    python benchmarks/search_scale.py --out docs/edge/search_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from foundry3d.edge import search as S
from foundry3d.edge.index import read_index, write_index
from foundry3d.files import atomic_write


def collection(n: int, dim: int = 384, latent: int = 32, clusters: int = 1000, seed: int = 0) -> np.ndarray:
    """Clustered points on a ``latent``-dimensional subspace, mapped into ``dim`` with a little noise: pooled
    embeddings of one model span few directions (the map and cluster centres are the same for every call)."""
    fixed = np.random.default_rng(12345)
    lift = fixed.normal(size=(latent, dim)).astype(np.float32) / np.sqrt(latent)
    centres = fixed.normal(size=(clusters, latent)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        k = min(100_000, n - s)
        z = centres[rng.integers(0, clusters, k)] + 0.5 * rng.normal(size=(k, latent)).astype(np.float32)
        out[s : s + k] = z @ lift + 0.05 * rng.normal(size=(k, dim)).astype(np.float32)
    return out


def measure(n: int, queries: int, work: Path) -> dict:
    import faiss

    emb = collection(n)
    folder = work / f"n{n}"
    folder.mkdir()
    rows = [{"file": f"f{i}", "status": "ok", "row": i, "output": "", "sha256": ""} for i in range(n)]
    write_index(folder, rows, emb)
    idx = read_index(folder)
    mean = S.index_mean(idx.embeddings)
    q = S._unit(collection(queries, seed=1) - mean)
    t0 = time.perf_counter()
    unit = S.unit_rows(idx, mean)  # once per index, like the HNSW graph
    unit_s = time.perf_counter() - t0
    exact_s = []
    for i in range(min(queries, 20)):
        t0 = time.perf_counter()
        S.exact_top_k(unit, None, q[i : i + 1], 10)
        exact_s.append(time.perf_counter() - t0)
    want, _ = S.exact_top_k(unit, None, q, 10)
    t0 = time.perf_counter()
    graph = S.hnsw_index(idx, mean)
    build = time.perf_counter() - t0
    graph.hnsw.efSearch = 128
    ann_s = []
    got = np.zeros((queries, 10), np.int64)
    for i in range(queries):
        t0 = time.perf_counter()
        _, found = graph.search(q[i : i + 1], 10)
        ann_s.append(time.perf_counter() - t0)
        got[i] = found[0]
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(want, got)]))
    return {
        "embeddings": n,
        "exact_query_ms": {"median": 1e3 * float(np.median(exact_s)), "p90": 1e3 * float(np.quantile(exact_s, 0.9))},
        "unit_rows_s": round(unit_s, 2),
        "hnsw_build_s": round(build, 1),
        "hnsw_query_ms": {"median": 1e3 * float(np.median(ann_s)), "p90": 1e3 * float(np.quantile(ann_s, 0.9))},
        "recall_at_10": recall,
        "faiss": faiss.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out", default="docs/edge/search_scale.json")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            rows.append(measure(n, a.queries, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    record = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "hnsw": {"M": S.HNSW_M, "efConstruction": S.HNSW_EF_BUILD, "efSearch": 128},
        "rows": rows,
        "command": "python benchmarks/search_scale.py",
    }
    atomic_write(Path(a.out), lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))


if __name__ == "__main__":
    main()
