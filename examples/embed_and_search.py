"""Embed a folder of scans (or generated shapes) and find each one's nearest neighbour by cosine.

    python examples/embed_and_search.py                 # generated shapes: spheres, boxes, rods
    python examples/embed_and_search.py scans/*.ply     # your files, any units
    python examples/embed_and_search.py --model runs/s16/release scans/*.ply

Every embedding comes from ``model.embed``: the cloud is centred and scaled into the unit sphere first,
so units and position do not matter.
"""

from __future__ import annotations

import argparse

import numpy as np

import foundry3d


def generated(rng: np.random.Generator, n: int = 1024) -> dict[str, np.ndarray]:
    """Three kinds of shape, two of each, at different scales and positions."""
    shapes = {}
    for i in range(2):
        s, t = rng.uniform(0.5, 50), rng.normal(size=3) * 100
        ball = rng.normal(size=(n, 3))
        shapes[f"sphere{i}"] = ball / np.linalg.norm(ball, axis=1, keepdims=True) * s + t
        shapes[f"box{i}"] = rng.uniform(-1, 1, size=(n, 3)) * [1, 0.6, 0.3] * s + t
        shapes[f"rod{i}"] = np.c_[rng.uniform(-1, 1, n) * 3, rng.normal(size=(n, 2)) * 0.05] * s + t
    return shapes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", help="point-cloud files (default: generated shapes)")
    ap.add_argument("--model", default="embedded", help="any model spec (default: the packaged teacher)")
    args = ap.parse_args()
    clouds = {f: foundry3d.read_points(f) for f in args.files} or generated(np.random.default_rng(0))
    model = foundry3d.load(args.model)
    names = list(clouds)
    emb = np.stack([model.embed(clouds[n]).numpy() for n in names])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    for i, name in enumerate(names):
        j = int(sim[i].argmax())
        print(f"{name:>12}  nearest: {names[j]:<12} cosine {sim[i, j]:.3f}")


if __name__ == "__main__":
    main()
