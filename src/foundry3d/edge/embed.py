"""``foundry3d embed``: run a model on your own point-cloud files (any size) and save its features.

For each file: the coordinates are read (:mod:`foundry3d.data.pointfile`), centred and scaled
into the unit sphere (the transform is saved), split into N / 16 patches (or ``groups``), and
passed through the model. Written to ``<out>/<file stem>.npz``:

* ``global``  (2D,)   pooled [max, mean] feature of the whole cloud;
* ``tokens``  (c, D)  output token features, ``centres`` (c, 3) their patch centres (input units);
* ``points``  (N, D)  per-point features (3-NN inverse-distance propagation of the tokens), float16,
  unless ``point_features=False``;
* ``assignment`` (c,) each token's SuperToken, for students that have one;
* ``centre``, ``scale``: the normalisation, ``model``, ``model_hash``.

A file that cannot be read (empty, NaN, wrong columns, unknown format) is reported with its name
and the others are still processed; the summary lists the failures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from foundry3d.data.pointfile import PointFileError, read_points
from foundry3d.errors import Foundry3DError
from foundry3d.models.checkpoint import atomic_write
from foundry3d.models.heads import interpolate, three_nn
from foundry3d.models.hub import model_hash, resolve


class EmbedError(Foundry3DError, RuntimeError):
    """Some input files could not be embedded (each is named in the message)."""


@torch.no_grad()
def embed_points(
    model: torch.nn.Module,
    points: np.ndarray,
    groups: int | None = None,
    point_features: bool = True,
    chunk: int = 200_000,
) -> dict[str, np.ndarray]:
    """Features of one cloud (N, 3) in input units."""
    centre = points.mean(0)
    scale = float(np.linalg.norm(points - centre, axis=1).max()) or 1.0
    x = torch.from_numpy(((points - centre) / scale).astype(np.float32))[None]
    g = groups or model.groups_for(len(points))
    g = min(g, len(points))
    out = model.forward_features(x, num_groups=g)
    tokens = out["tokens"].float()
    res = {
        "global": model.forward_head(out)[0].numpy(),
        "tokens": tokens[0].numpy(),
        "centres": (out["centers"][0].numpy() * scale + centre).astype(np.float32),
        "centre": centre.astype(np.float64),
        "scale": np.float64(scale),
    }
    if "assignment" in out:
        res["assignment"] = out["assignment"][0].numpy()
    if point_features:
        feats = np.empty((len(points), tokens.shape[-1]), np.float16)
        cen = out["centers"]
        for s in range(0, len(points), chunk):
            q = x[:, s : s + chunk]
            idx, w = three_nn(q, cen)
            feats[s : s + chunk] = interpolate(tokens, idx, w)[0].numpy().astype(np.float16)
        res["points"] = feats
    return res


def embed(
    files: list[str],
    model: str = "embedded",
    out: str = "runs/embed",
    groups: int | None = None,
    point_features: bool = True,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run a model on your own point-cloud files and save global, token and per-point features (.npz).

    Args:
        files: .ply, .pcd, .las/.laz, .xyz/.txt/.csv, .npy/.npz files of any size.
        model: release folder, embedded[:NAME] or another model spec.
        out: folder for <file stem>.npz and embed.json.
        groups: patches per cloud (default: points / 16).
        point_features: also write per-point features (3-NN propagation), float16.
        threads: torch threads (default: all cores).
        progress: show a progress bar over the files.
    """
    if not files:
        raise EmbedError("embed needs at least one input file")
    if groups is not None and groups < 1:
        raise EmbedError(f"groups must be >= 1, got {groups}")
    if threads is not None:
        if threads < 1:
            raise EmbedError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    net, info = resolve(model)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written, failed, seconds = [], {}, {}
    for f in tqdm(files, desc="embed", unit="file", disable=not progress or len(files) < 2, dynamic_ncols=True):
        t0 = time.time()
        try:
            pts = read_points(f)
            need = max(net.tcfg.group_size, 1)
            if len(pts) < need:
                raise PointFileError(f"{f}: {len(pts)} points, fewer than the model's patch size ({need})")
            res = embed_points(net, pts, groups, point_features)
        except (PointFileError, ValueError) as e:
            failed[str(f)] = str(e)
            print(f"foundry3d embed: skipped {f}: {e}", flush=True)
            continue
        res["model"] = np.array(info["model"])
        res["model_hash"] = np.array(model_hash(net))
        target = folder / f"{Path(f).stem}.npz"
        atomic_write(target, lambda tmp, r=res: np.savez(open(tmp, "wb"), **r))  # noqa: SIM115
        written.append(str(target))
        seconds[str(f)] = round(time.time() - t0, 2)
    summary = {"model": info["model"], "written": written, "failed": failed, "seconds": seconds}
    atomic_write(folder / "embed.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    if failed:
        raise EmbedError(
            f"{len(failed)} of {len(files)} file(s) could not be embedded ({', '.join(failed)}); "
            f"the other {len(written)} were written to {folder}"
        )
    return summary
