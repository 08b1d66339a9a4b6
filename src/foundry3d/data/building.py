"""What every dataset builder shares: one build skeleton, one parallel pattern, one split rule, one metadata schema.

A dataset built from Debian packages is a :class:`DebianRecipe`: which packages, which of their files to
unpack, how one file becomes a point cloud (a picklable ``sample`` function), and how the kept shapes are
labelled. :func:`build_from_debian` runs every recipe through the same steps, download -> extract ->
parallel map -> label -> split -> metadata -> write, so every build is deterministic (per-shape seeds from
the shape's id, results in input order), uses every core with bounded memory, records the package versions
and licences, and is written atomically with the same kind of meta.json.

Heavy dependencies (scikit-learn, tqdm, trimesh) are imported where they are used, so a dataset's spec and
recipe can share one light module that the catalogue imports without them.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from foundry3d.data.base import DatasetError
from foundry3d.data.mesh import MeshError, shape_seed
from foundry3d.errors import InputError

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
    from tqdm.auto import tqdm

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
    from sklearn.model_selection import train_test_split

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


@dataclass
class Labelled:
    """What a recipe's ``label`` step hands back for the kept shapes (in the order the skeleton kept them).

    ``splits`` None: the standard rule (stratified train/test of the labelled shapes, the rest the pool).
    ``keep``: the shapes (indices into those handed to ``label``) the dataset holds when the recipe drops some
    itself (near-duplicates); labels, records, arrays and splits then refer to the kept ones in that order.
    """

    labels: np.ndarray | None  # class index per shape, -1 for the unlabelled pool; None: a scene set (per-point labels)
    classes: list[str]
    shapes: list[dict[str, Any]]  # one record per shape (``id`` first): shapes.json
    splits: dict[str, list[int]] | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # per-shape arrays beyond points and labels
    files: dict[str, Any] = field(default_factory=dict)  # further JSON files of the dataset
    meta: dict[str, Any] = field(default_factory=dict)  # the dataset's own meta.json fields
    keep: list[int] | None = None


@dataclass
class Sources:
    """What the download and extract steps produced: each package's .deb, version, unpacked folder, licence."""

    debs: dict[str, Path]
    versions: dict[str, str]
    folders: dict[str, Path]  # where each package's ``extract`` members were unpacked (once, under the cache)
    copyrights: dict[str, str]


@dataclass
class BuildRun:
    """What a build knows when it writes the record: the sources, the settings, its start, the skips, the splits."""

    src: Sources
    points: int
    seed: int
    t0: float
    skipped: list[dict[str, Any]]
    splits: dict[str, list[int]]


class DebianRecipe:
    """The parts of a dataset build that differ between datasets; :func:`build_from_debian` runs the rest.

    Subclasses set the class attributes and implement ``jobs``, ``sample`` and ``label``; ``attribution`` and
    ``skip_record`` have defaults. ``sample`` must be a plain function (a ``staticmethod``): it runs in
    worker processes.
    """

    name: ClassVar[str]  # cache folder (``<cache>/datasets/<name>-v<version>``) and meta name
    version: ClassVar[str]  # the format version readers expect (from :mod:`foundry3d.data.catalogue`)
    packages: ClassVar[tuple[str, ...]]  # the Debian packages it reads
    extract: ClassVar[dict[str, tuple[str, ...]]] = {}  # package -> member patterns unpacked into the cache
    default_points: ClassVar[int] = 4096
    min_points: ClassVar[int] = 2048
    errors: ClassVar[tuple[type[Exception], ...]] = (MeshError,)  # what ``sample`` raises for a shape to skip
    sort_by_key: ClassVar[bool] = False  # keep shapes sorted by key (jobs streamed in archive order)

    def folder(self) -> str:
        """The cache folder name (a recipe restricted for tests returns a separate ``-subset`` name)."""
        return self.name

    def jobs(self, src: Sources, points: int) -> Iterable[tuple[str, Any]]:
        """(shape key, job) pairs in a stable order; the job is what ``sample`` needs besides the points."""
        raise NotImplementedError

    @staticmethod
    def sample(job: Any, points: int, seed: int) -> Any:
        """One shape -> its sampled result (first item: the (points, 3) unit-sphere cloud); raise one of
        ``errors`` to skip the shape with a reason."""
        raise NotImplementedError

    def label(self, keys: list[str], jobs: list[Any], results: list[Any], src: Sources) -> Labelled:
        """Classes, labels, shape records (and any further arrays, files, splits) of the kept shapes (``jobs``: what
        ``describe`` kept of each)."""
        raise NotImplementedError

    def attribution(self, labelled: Labelled, src: Sources) -> str:
        """ATTRIBUTION.md: where the shapes come from and under which licence."""
        pkgs = ", ".join(f"{p} {v}" for p, v in src.versions.items())
        return (
            f"# {self.name} attribution\n\nPoint clouds sampled from the 3D models of the Debian package(s) {pkgs}; "
            "their licences (LICENSE-debian-copyright*.txt next to this file) apply to the derived clouds.\n"
        )

    def record(self, lab: Labelled, run: BuildRun) -> dict[str, Any]:
        """meta.json: the schema every labelled set shares (:func:`base_meta`) plus the recipe's own fields; a
        dataset of another kind (a scene set) writes its own record."""
        src, points, seed, t0, skipped, splits = run.src, run.points, run.seed, run.t0, run.skipped, run.splits
        assert lab.labels is not None, f"{self.name}: a dataset without shape labels writes its own record"
        return base_meta(
            self.name, self.version, " + ".join(self.packages), " / ".join(src.versions[p] for p in self.packages),
            points, seed, t0, skipped, lab.classes, lab.labels, splits, **lab.meta,
        )  # fmt: skip

    def describe(self, job: Any) -> Any:
        """What the build keeps of a job for ``label`` and ``skip_record`` (default: the job itself); a recipe whose
        jobs carry file contents keeps less, so a large package never sits in memory whole."""
        return job

    def skip_record(self, key: str, job: Any, reason: str) -> dict[str, Any]:
        """How a skipped shape is recorded in meta.json."""
        return {"shape": key, "reason": reason}


def _sample_one(args: tuple[Callable[..., Any], tuple[type[Exception], ...], str, Any, int, int]) -> tuple[str, Any]:
    """Worker entry point: ('ok', result) or ('skip', reason) for one shape, seeded from its key."""
    sample, errors, key, job, points, seed = args
    try:
        return "ok", sample(job, points, shape_seed(seed, key))
    except errors as e:
        return "skip", str(e)


def fetch_sources(recipe: DebianRecipe, cache: Path, debs: dict[str, str | Path] | None = None) -> Sources:
    """Download (or take from ``debs``) each package, read its version and copyright, unpack its ``extract``
    members once into ``<cache>/src/<package>_<version>``."""
    from foundry3d.data.debian import download_package, extract_members, iter_members, package_version

    unknown = sorted(set(debs or {}) - set(recipe.packages))
    if unknown:
        raise InputError(f"deb for {', '.join(unknown)}: {recipe.name} reads only {', '.join(recipe.packages)}")
    found: dict[str, Path] = {}
    versions: dict[str, str] = {}
    folders: dict[str, Path] = {}
    copyrights: dict[str, str] = {}
    for pkg in recipe.packages:
        given = (debs or {}).get(pkg)
        deb = Path(given) if given else download_package(pkg, cache)
        if not deb.is_file():
            raise InputError(f"deb {deb}: no such file (expected the {pkg} .deb)")
        found[pkg], versions[pkg] = deb, package_version(deb)
        folders[pkg] = cache / "src" / f"{pkg}_{versions[pkg]}"
        patterns = list(recipe.extract.get(pkg, ()))
        if patterns and not (folders[pkg] / ".complete").exists():
            extract_members(deb, folders[pkg], [*patterns, f"usr/share/doc/{pkg}/copyright"])
            (folders[pkg] / ".complete").write_text("ok\n")
        extracted = folders[pkg] / f"usr/share/doc/{pkg}/copyright"
        if extracted.exists():
            copyrights[pkg] = extracted.read_text(errors="replace")
        else:
            for _, data in iter_members(deb, [f"usr/share/doc/{pkg}/copyright"]):
                copyrights[pkg] = data.decode(errors="replace")
    return Sources(found, versions, folders, copyrights)


def build_from_debian(
    recipe: DebianRecipe,
    root: str | Path | None = None,
    points: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    debs: dict[str, str | Path] | None = None,
    total: int | None = None,
) -> Path:
    """Build ``recipe``'s dataset once (later calls reuse it): download -> extract -> parallel map -> label ->
    split -> metadata -> write (atomically: a half-built dataset is never read); returns its folder."""
    from foundry3d.data.store import DatasetWriter, cache_dir, dataset_dir, is_complete

    points = recipe.default_points if points is None else points
    if points < recipe.min_points:
        raise InputError(f"points={points}: store at least {recipe.min_points} points per shape (the protocols' sizes)")
    final = dataset_dir(recipe.folder(), recipe.version, root)
    if is_complete(final) and not force:
        return final
    t0 = time.time()
    cache = cache_dir(root)
    src = fetch_sources(recipe, cache, debs)
    keys: list[str] = []
    jobs: list[Any] = []

    def tasks() -> Iterator[tuple[Any, ...]]:
        for key, job in recipe.jobs(src, points):
            keys.append(key)
            jobs.append(recipe.describe(job))
            yield (recipe.sample, recipe.errors, key, job, points, seed)

    results = list(parallel_map(_sample_one, tasks(), workers, recipe.name, progress, total=total, chunksize=8))
    if not results:
        raise DatasetError(f"{recipe.name}: {', '.join(recipe.packages)} held no shape to sample")
    order = sorted(range(len(keys)), key=keys.__getitem__) if recipe.sort_by_key else range(len(keys))
    kept = [i for i in order if results[i][0] == "ok"]
    skipped = [recipe.skip_record(keys[i], jobs[i], results[i][1]) for i in order if results[i][0] != "ok"]
    if not kept:
        raise DatasetError(f"{recipe.name}: none of the {len(keys)} shapes could be sampled ({skipped[0]['reason']})")
    lab = recipe.label([keys[i] for i in kept], [jobs[i] for i in kept], [results[i][1] for i in kept], src)
    if lab.keep is not None:
        kept = [kept[j] for j in lab.keep]
    splits = lab.splits
    if splits is None:
        if lab.labels is None:
            raise DatasetError(f"{recipe.name}: a recipe without shape labels must split the dataset itself")
        tr, te = split_or_all(lab.labels)
        splits = {"train": tr, "test": te, "pool": [int(i) for i in np.flatnonzero(lab.labels < 0)]}
    w = DatasetWriter(final)
    try:
        w.array("points", np.stack([results[i][1][0] for i in kept]).astype(np.float16))
        if lab.labels is not None:
            w.array("labels", lab.labels.astype(np.int16))
        for name, value in lab.arrays.items():
            w.array(name, value)
        w.json("shapes.json", lab.shapes)
        w.json("classes.json", lab.classes)
        w.json("splits.json", splits)
        for name, value in lab.files.items():
            w.json(name, value)
        w.text("ATTRIBUTION.md", recipe.attribution(lab, src))
        one = len(recipe.packages) == 1
        for pkg, text in src.copyrights.items():
            w.text("LICENSE-debian-copyright.txt" if one else f"LICENSE-debian-copyright-{pkg}.txt", text)
        meta = recipe.record(lab, BuildRun(src, points, seed, t0, skipped, splits))
        return w.commit(meta)
    except BaseException:
        w.abort()
        raise


def recipe_builder(recipe: Callable[[], DebianRecipe]) -> Callable[..., Path]:
    """The standard build function of a one-package recipe (what a spec's ``builder`` names and ``foundry3d data
    build`` calls): ``(root, points, seed, workers, deb, force, progress) -> folder``."""
    (package,) = recipe().packages

    def build(
        root: str | Path | None = None,
        points: int | None = None,
        seed: int = 0,
        workers: int | None = None,
        deb: str | Path | None = None,
        force: bool = False,
        progress: bool = True,
    ) -> Path:
        debs = {package: deb} if deb else None
        return build_from_debian(recipe(), root, points, seed, workers, force, progress, debs)

    build.__doc__ = f"Build {recipe().name} from ``{package}`` (downloaded with apt-get unless ``deb`` is given)."
    return build
