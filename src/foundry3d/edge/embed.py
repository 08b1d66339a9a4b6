"""``foundry3d embed``: run a model on your own point-cloud files (any size) and save its features.

Inputs are files, folders (read recursively) and globs. For each file: the coordinates are read
(:mod:`foundry3d.data.pointfile`; a mesh is sampled on its surface by area, seeded by its content), centred and scaled
into the unit sphere (the transform is saved), split into N / 16 patches (or ``groups``), and
passed through the model. Written to ``<out>/<file stem>.npz``:

* ``global``  (2D,)   pooled [max, mean] feature of the whole cloud;
* ``tokens``  (c, D)  output token features, ``centres`` (c, 3) their patch centres (input units);
* ``assignment`` (c,) each token's SuperToken, for students that have one;
* ``centre``, ``scale``: the normalisation, ``model``, ``model_hash``;
* ``model_points``    how many points the model saw (a seeded subsample above ``max_points``);

and with ``point_features=True`` ``<out>/<file stem>.points.npy`` (N, D): per-point features (3-NN
inverse-distance propagation of the tokens), float16, appended to the file chunk by chunk (memory holds one chunk).

The whole collection gets one ``embeddings.npy`` + ``index.csv`` (:mod:`foundry3d.edge.index`), which
``foundry3d search`` reads. A re-run into the same folder skips the files already embedded with the same
model and content; ``shard="K/N"`` embeds one of N disjoint parts (``foundry3d merge`` joins them).

A file that cannot be read (empty, wrong columns, unknown format, fewer points than one patch) is
reported with its name and the others are still processed; ``embed.json`` lists the failures, the
warnings (points with NaN coordinates dropped, a truncated or oddly written file read leniently)
and which output each input went to (inputs with the same stem get ``_2``, ``_3`` ...).
"""

from __future__ import annotations

import glob
import json
import os
import time
import warnings
import zlib
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from foundry3d.data.folder import SEED, SUFFIXES, file_sha, is_mesh, mesh_cloud
from foundry3d.data.mesh import MeshError, shape_seed
from foundry3d.data.pointfile import PointFileError, PointFileWarning, read_points
from foundry3d.edge.index import INDEX_FILES, read_index, write_index
from foundry3d.errors import Foundry3DError
from foundry3d.files import atomic_write, run_folder, user_path
from foundry3d.models.base import PointModel, normalize_cloud
from foundry3d.models.heads import interpolate, three_nn
from foundry3d.models.hub import model_hash, resolve


class EmbedError(Foundry3DError, RuntimeError):
    """Some input files could not be embedded (each is named in the message)."""


MAX_POINTS = 1_000_000  # clouds above this run the model on a seeded subsample of this many points
MESH_POINTS = 16_384  # points sampled on a mesh's surface


@torch.no_grad()
def embed_points(
    model: PointModel,
    points: np.ndarray,
    groups: int | None = None,
    point_features: np.ndarray | None = None,
    max_points: int = MAX_POINTS,
    chunk: int = 200_000,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Features of one cloud (N, 3) in input units.

    Above ``max_points`` points the model runs on a seeded random subsample of ``max_points`` (time and
    memory stay bounded; ``model_points`` records it). ``point_features``, an (N, D) array
    (or a sink taking the chunks in order, as the .npy writer of ``embed`` does), is filled chunk by chunk with
    each point's feature: 3-NN inverse-distance propagation of the tokens."""
    x_all, centre, scale = normalize_cloud(points)
    n = len(points)
    pick = None
    if n > max_points:
        pick = np.sort(np.random.default_rng(0).choice(n, max_points, replace=False))
    x = torch.from_numpy(x_all if pick is None else x_all[pick])[None]
    g = groups or model.groups_for(x.shape[1])
    g = min(g, x.shape[1])
    out = model.forward_features(x, num_groups=g)
    tokens = out["tokens"].float()
    res = {
        "global": model.forward_head(out)[0].numpy(),
        "tokens": tokens[0].numpy(),
        "centres": (out["centres"][0].numpy() * scale + centre).astype(np.float32),
        "centre": centre.astype(np.float64),
        "scale": np.float64(scale),
        "model_points": np.int64(x.shape[1]),
    }
    if "assignment" in out:
        res["assignment"] = out["assignment"][0].numpy()
    if point_features is not None:
        cen = out["centres"]
        starts = range(0, n, chunk)
        for s in tqdm(starts, desc="per-point features", unit="chunk", disable=not progress or n <= chunk):
            q = torch.from_numpy(x_all[s : s + chunk])[None]
            idx, w = three_nn(q, cen)
            point_features[s : s + chunk] = interpolate(tokens, idx, w)[0].numpy().astype(np.float16)
    return res


def embed(
    files: list[str],
    model: str = "embedded",
    out: str = "runs/embed",
    groups: int | None = None,
    point_features: bool = False,
    drop_nonfinite: bool = True,
    threads: int | None = None,
    progress: bool = True,
    max_points: int = MAX_POINTS,
    mesh_points: int = MESH_POINTS,
    shard: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run a model on your own point-cloud files and save their global and token features (.npz).

    Args:
        files: point files (.ply, .pcd, .las/.laz, .xyz/.txt/.csv, .npy/.npz) and meshes (.stl, .obj, .off,
            .glb/.gltf, .ply with faces) of any size, folders (read recursively) and globs ("scans/**/*.ply").
        model: release folder, embedded[:NAME] or another model spec.
        out: folder for <file stem>.npz, the collection's embeddings.npy + index.csv, and embed.json. A re-run
            into the same folder skips files already embedded with the same model and content.
        groups: patches per cloud (default: points / 16).
        point_features: also write per-point features (3-NN propagation), float16, to <stem>.points.npy
            (N x D: 384 MB for a 1M-point scan with a 192-wide model).
        drop_nonfinite: drop points with NaN/inf coordinates (scanners' missing returns) with a
            warning; otherwise such a file is an error.
        threads: torch threads (default: all cores).
        progress: show a progress bar over the files (and the per-point stage of big clouds).
        max_points: clouds with more points run the model on a seeded random subsample of this many
            (time and memory bounded; per-point features still cover every point).
        mesh_points: points sampled on a mesh's surface (by area, seeded by the file's content).
        shard: K/N to embed only the K-th of N disjoint parts of the inputs (by a hash of each path), e.g. on
            N machines; `foundry3d merge` joins the shards' indexes into one.
        overwrite: start the folder afresh (removes only what embed wrote there) instead of resuming it.
    """
    if not files:
        raise EmbedError("embed needs at least one input file, folder or glob")
    if groups is not None and groups < 1:
        raise EmbedError(f"groups must be >= 1, got {groups}")
    if max_points < 64:
        raise EmbedError(f"max_points must be >= 64, got {max_points}")
    if mesh_points < 64:
        raise EmbedError(f"mesh_points must be >= 64, got {mesh_points}")
    part = parse_shard(shard)
    if threads is not None:
        if threads < 1:
            raise EmbedError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    folder = user_path(out)
    inputs, ignored = expand_inputs(files, folder)
    if part is not None:
        inputs = [f for f in inputs if zlib.crc32(f.encode()) % part[1] == part[0] - 1]
    if not inputs:
        raise EmbedError(
            f"no point file or mesh in {' '.join(files)}"
            + (f" (shard {shard} holds none of them)" if part else f"; readable: {', '.join(SUFFIXES)}")
        )
    net, info = resolve(model)
    with run_folder(folder, "embed", _embed_outputs(folder), overwrite, legacy=_legacy_embed) as folder:
        return _embed_files(
            inputs, net, info, folder, groups, point_features, drop_nonfinite, progress, max_points, mesh_points,
            {"shard": shard, "ignored": ignored},
        )  # fmt: skip


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """``(K, N)`` of ``K/N`` (1 <= K <= N)."""
    if shard is None:
        return None
    k, slash, n = shard.partition("/")
    if not (slash and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise EmbedError(f"--shard {shard}: expected K/N with 1 <= K <= N, e.g. 2/8")
    return int(k), int(n)


def expand_inputs(inputs: list[str], out: Path) -> tuple[list[str], dict[str, int]]:
    """Files of every input (a folder recursively, a glob by its matches), in order, without repeats; a folder
    walk never enters ``out`` (our own outputs are not inputs); and how many files of other kinds a folder
    held, by suffix."""
    skip = os.path.realpath(out)
    found: list[str] = []
    ignored: dict[str, int] = {}
    for item in inputs:
        path = os.path.expanduser(item)
        if glob.has_magic(path):
            found += sorted(m for m in glob.glob(path, recursive=True) if os.path.isfile(m))
        elif os.path.isdir(path):
            for d, dirs, names in sorted(os.walk(path)):
                dirs.sort()
                if os.path.realpath(d) == skip or os.path.realpath(d).startswith(skip + os.sep):
                    dirs.clear()
                    continue
                for name in sorted(names):
                    suffix = os.path.splitext(name)[1].lower()
                    if name.startswith("."):
                        continue
                    if suffix in SUFFIXES:
                        found.append(os.path.join(d, name))
                    else:
                        ignored[suffix or "(no suffix)"] = ignored.get(suffix or "(no suffix)", 0) + 1
        else:
            found.append(path)
    seen: set[str] = set()
    keep = []
    for f in found:
        real = os.path.realpath(f)
        if real in seen:
            continue
        seen.add(real)
        keep.append(f)
    return keep, ignored


def read_cloud(path: str, drop_nonfinite: bool, mesh_points: int) -> tuple[np.ndarray, str, str]:
    """Coordinates of a point file, or a mesh's surface sample; with the file's content hash and how it was read."""
    p = Path(path)
    if not p.is_file():
        raise PointFileError(f"{path}: no such file")
    sha = file_sha(p)
    if p.suffix.lower() in SUFFIXES and is_mesh(p):
        try:
            pts, _, how = mesh_cloud(p, mesh_points, shape_seed(SEED, sha))
        except MeshError as e:
            raise PointFileError(f"{path}: {e}") from e
        return pts.astype(np.float32), sha, how
    return read_points(path, drop_nonfinite=drop_nonfinite), sha, "points"


def _embed_outputs(folder: Path) -> tuple[str, ...]:
    """What an earlier embed wrote into ``folder`` (its embed.json lists it)."""
    try:
        written = json.loads((folder / "embed.json").read_text()).get("written", [])
    except (OSError, ValueError, AttributeError):
        written = []
    return ("embed.json", *INDEX_FILES, *(Path(w).name for w in written if isinstance(w, str)))


def _legacy_embed(folder: Path) -> bool:
    """A folder written by a foundry3d embed from before run markers: its embed.json lists every file."""
    return (folder / "embed.json").is_file()


class _Appender:
    """Takes ``embed_points``' per-point chunks (they come in order) and appends them to an open .npy body."""

    def __init__(self, f: Any) -> None:
        self.f = f

    def __setitem__(self, rows: slice, value: np.ndarray) -> None:
        self.f.write(np.ascontiguousarray(value, dtype=np.float16).tobytes())


def _run_model(
    net: PointModel,
    pts: np.ndarray,
    groups: int | None,
    max_points: int,
    per_point: Path | None,
    progress: bool,
) -> dict[str, np.ndarray]:
    """One model pass; with ``per_point`` the per-point features go straight into that file (atomically)."""
    box: dict[str, np.ndarray] = {}

    def run(arr: np.ndarray | None) -> None:
        box.update(embed_points(net, pts, groups, arr, max_points, progress=progress))
        if not (np.isfinite(box["global"]).all() and np.isfinite(box["tokens"]).all()):
            raise PointFileError("the model's output holds NaN or infinite values: nothing written")

    if per_point is None:
        run(None)
        return box

    def write(tmp: str) -> None:  # an .npy written chunk after chunk: memory holds one chunk, not N x D
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False}
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_2_0(f, {**header, "shape": (len(pts), net.num_features // 2)})
            run(_Appender(f))  # type: ignore[arg-type]  # an array-like sink taking rows by slice

    atomic_write(per_point, write)
    return box


def _embed_files(
    files: list[str],
    net: PointModel,
    info: dict[str, Any],
    folder: Path,
    groups: int | None,
    point_features: bool,
    drop_nonfinite: bool,
    progress: bool,
    max_points: int,
    mesh_points: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    mhash = model_hash(net)
    inputs = {os.path.realpath(Path(f).expanduser()) for f in files}
    prev = read_index(folder, missing_ok=True)
    prev_json = _read_json(folder / "embed.json")
    earlier = [w for w in prev_json.get("written", []) if isinstance(w, str)]
    rows: list[dict[str, Any]] = []
    embs: list[np.ndarray] = []
    if prev is not None and prev.model_hash == mhash:  # same model: its rows stay, re-runs skip their files
        for r in prev.ok():
            if (folder / r["output"]).is_file():
                rows.append({**r, "row": len(embs)})
                embs.append(np.asarray(prev.embeddings[int(r["row"])], np.float32))
    done = {r["file"]: r for r in rows}
    listed = set(files)
    rows = [r for r in rows if r["file"] not in listed]  # this run's files are listed in its order
    written = sorted({*earlier, *(str(folder / r["output"]) for r in rows)})
    used = {_output_name(w) for w in earlier} | {_output_name(r["output"]) for r in done.values()}
    failed: dict[str, str] = {}
    seconds: dict[str, float] = {}
    notes: dict[str, list[str]] = {}
    outputs: dict[str, str] = {}
    reused = 0
    last_flush = time.time()
    for i, f in enumerate(tqdm(files, desc="embed", unit="file", disable=not progress or len(files) < 2)):
        t0 = time.time()
        old = done.get(f)
        try:
            if old is not None and Path(f).is_file() and file_sha(Path(f)) == old["sha256"]:
                rows.append(old)  # embedded before with this model and this content
                outputs[f] = str(folder / old["output"])
                reused += 1
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", PointFileWarning)
                pts, sha, how = read_cloud(f, drop_nonfinite, mesh_points)
            for w in caught:
                if issubclass(w.category, PointFileWarning):
                    notes.setdefault(str(f), []).append(str(w.message))
                    print(f"foundry3d embed: warning: {w.message}", flush=True)
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            need = max(net.tcfg.group_size, 1)
            if len(pts) < need:
                raise PointFileError(f"{f}: {len(pts)} points, fewer than one patch of the model ({need})")
            if old is not None:
                name = Path(old["output"]).stem  # the same file, edited: its output is replaced
            else:
                stem, k = Path(f).stem, 1
                while (name := stem if k == 1 else f"{stem}_{k}") in used:
                    k += 1
            target, per_point = folder / f"{name}.npz", folder / f"{name}.points.npy"
            if {os.path.realpath(target), os.path.realpath(per_point)} & inputs:
                raise PointFileError(f"{f}: its output {target} is one of the inputs: choose another --out")
            res = _run_model(net, pts, groups, max_points, per_point if point_features else None, progress)
        except (PointFileError, ValueError, OSError) as e:
            failed[str(f)] = str(e)
            reason = str(e).replace(f"{f}: ", "")
            rows.append({"file": f, "points": "", "status": "failed", "reason": reason})
            print(f"foundry3d embed: skipped {f}: {reason}", flush=True)
            continue
        used.add(name)
        if point_features:
            written.append(str(per_point))
        if how != "points":
            notes.setdefault(str(f), []).append(how)
        if res["model_points"] < len(pts):
            note = f"{f}: {len(pts)} points; the model ran on a seeded subsample of {int(res['model_points'])}"
            notes.setdefault(str(f), []).append(note)
            print(f"foundry3d embed: {note} (max_points)", flush=True)
        res["model"] = np.array(info["model"])
        res["model_hash"] = np.array(mhash)
        atomic_write(target, partial(_savez, arrays=res))
        written.append(str(target))
        outputs[str(f)] = str(target)
        seconds[str(f)] = round(time.time() - t0, 2)
        rows.append({"file": f, "points": len(pts), "status": "ok", "reason": "", "sha256": sha,
                     "output": target.name, "row": len(embs)})  # fmt: skip
        embs.append(res["global"].astype(np.float32))
        if time.time() - last_flush > 60 and i < len(files) - 1:  # a killed run keeps what it embedded
            write_index(folder, rows, np.stack(embs))
            last_flush = time.time()
    width = net.num_features
    write_index(folder, rows, np.stack(embs) if embs else np.zeros((0, width), np.float32))
    summary = {
        "model": info["model"],
        "model_hash": mhash,
        "written": sorted(set(written)),
        "outputs": outputs,
        "failed": failed,
        "warnings": notes,
        "seconds": seconds,
        "reused": reused,
        "index": {"embeddings": "embeddings.npy", "rows": "index.csv", "files": len(rows), "embedded": len(embs)},
        "mesh_rule": f"meshes: {mesh_points} points sampled on the surface by area (seed from the file's content)",
        **extra,
    }
    atomic_write(folder / "embed.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    if failed:
        why = "; ".join(f"{Path(f).name}: {e.split(': ', 1)[-1]}" for f, e in list(failed.items())[:3])
        more = f"; and {len(failed) - 3} more (index.csv lists all)" if len(failed) > 3 else ""
        raise EmbedError(
            f"{len(failed)} of {len(files)} file(s) could not be embedded ({why}{more}); "
            f"the other {len(files) - len(failed)} are in {folder}"
        )
    return summary


def _savez(tmp: str, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to exactly ``tmp`` (given a path, numpy would append .npz)."""
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its own flags


def _output_name(path: str) -> str:
    """The name an output was written under: ``a.b.npz`` and ``a.b.points.npy`` are both ``a.b``."""
    return Path(path).name.removesuffix(".npz").removesuffix(".points.npy")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
