"""What every dataset builder shares: one parallel pattern, one split rule, one metadata schema.

A builder (``sh3d``, ``kicad``, ``corpus``, ``kicadboards``) is a recipe: which Debian packages, which
members, how one member becomes a point cloud (a picklable job), and how the kept shapes are labelled
and split. The rest is here, so every build is deterministic (per-shape seeds from the shape's id,
results in input order), uses every core with bounded memory, and writes the same kind of meta.json.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

SPLIT_SEED = 0
TEST_FRACTION = 0.2
SAMPLING = "area-weighted uniform surface sampling (trimesh.sample.sample_surface), per-shape seed"
NORMALISATION = "centroid at origin, max norm 1"


def workers(n: int | None) -> int:
    """Worker processes for a build: ``n``, or every core when unset."""
    return max(1, n if n else (os.cpu_count() or 1))


def parallel_map(
    fn: Callable[[Any], Any],
    jobs: Iterable[Any],
    n_workers: int | None = None,
    desc: str = "build",
    progress: bool = True,
    total: int | None = None,
    block: int = 128,
    chunksize: int = 4,
) -> Iterator[Any]:
    """``fn`` over ``jobs`` on a process pool, results in input order. Jobs are read ``block`` at a
    time while the previous block runs, so a large archive streams through without being held whole."""
    bar = tqdm(total=total, desc=desc, unit="shape", disable=not progress, dynamic_ncols=True)
    it = iter(jobs)
    try:
        with mp.get_context("fork").Pool(workers(n_workers)) as pool:
            pending = None
            while True:
                chunk = list(itertools.islice(it, block))
                nxt = pool.map_async(fn, chunk, chunksize=chunksize) if chunk else None
                if pending is not None:
                    for r in pending.get():
                        bar.update(1)
                        yield r
                if nxt is None:
                    break
                pending = nxt
    finally:
        bar.close()


def stratified_split(labels: np.ndarray, seed: int = SPLIT_SEED, test: float = TEST_FRACTION) -> tuple[list, list]:
    """Stratified train/test indices of the labelled entries (label >= 0), fixed seed."""
    idx = np.flatnonzero(labels >= 0)
    tr, te = train_test_split(idx, test_size=test, random_state=seed, stratify=labels[idx])
    return sorted(int(i) for i in tr), sorted(int(i) for i in te)


def split_or_all(labels: np.ndarray) -> tuple[list, list]:
    """``stratified_split``, or everything in train when a class is too small to split (subset builds)."""
    counts = Counter(int(v) for v in labels[labels >= 0])
    if counts and min(counts.values()) >= 2:
        return stratified_split(labels)
    return [int(i) for i in np.flatnonzero(labels >= 0)], []


def base_meta(
    name: str,
    version: str,
    source_package: str,
    package_version: str,
    points: int,
    seed: int,
    t0: float,
    skipped: list[dict[str, Any]],
    classes: list[str],
    labels: np.ndarray,
    splits: dict[str, list[int]],
    **extra: Any,
) -> dict[str, Any]:
    """The metadata every built dataset carries (``extra`` adds the dataset's own fields)."""
    return {
        "name": name,
        "version": version,
        "source_package": source_package,
        "package_version": package_version,
        "points_per_shape": points,
        "dtype": "float16",
        "normalisation": NORMALISATION,
        "sampling": SAMPLING,
        "seed": seed,
        "split_seed": SPLIT_SEED,
        "test_fraction": TEST_FRACTION,
        "shapes": len(labels),
        "labelled": int((labels >= 0).sum()),
        "pool": int((labels < 0).sum()),
        "classes": classes,
        "per_class": {c: int((labels == i).sum()) for i, c in enumerate(classes)},
        "splits": {k: len(v) for k, v in splits.items()},
        "skipped": {"count": len(skipped), "shapes": skipped},
        **extra,
        "build_seconds": round(time.time() - t0, 1),
    }
