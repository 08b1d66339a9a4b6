"""End to end on real meshes nobody here tuned on: CGAL's demo and example data as a user's folder.

The Debian package ``libcgal-demo`` (source ``cgal``; GPL-3+ / LGPL-3+ per CGAL package, Debian's
``copyright`` file) carries ~150 mesh files (OFF, PLY, OBJ, STL): animals, people, machine parts and
geometric solids. No dataset, corpus or test of foundry3d reads it. This script lays it out the way a
user would (one sub-folder per class for the files the table below names, every other file at the root,
unlabelled; copies with identical content kept once), then runs the four commands of a user with the
embedded teacher: distill on the folder, eval (teacher, floor, student) on its held-out content-hash
test split, embed the folder, search it. The record is ``docs/e2e_cgal/record.json``.

    python benchmarks/e2e_folder.py --out runs/e2e_cgal

The class table is a hand labelling by file name (the only protocol choice here), written before any
model saw the data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import foundry3d
from foundry3d.data.registry import dataset_info
from foundry3d.edge.embed import EmbedError
from foundry3d.files import atomic_write

PACKAGE = "libcgal-demo"
SUFFIXES = (".off", ".ply", ".obj", ".stl")
CLASSES = {
    "animal": "armadillo bear bear_bis bull bunny00 camel cow dino diplodocus ChineseDragon-10kv elephant "
    "elephant-with-holes refined_elephant elk hippo1 hippo2 kitten lion lion-head pig triceratops",
    "human": "man mannequin-devil hand head homer nefertiti",
    "machine_part": "anchor anchor_dense blade couplingdown dragknob fandisk fandisk_large fandisk-box joint part "
    "pinion pinion_small rotor rotor_small turbine spool itemb mech-holes-shark pipe handle beam",
    "solid": "cube cube-meshed cube-shuffled cube4-shuffled cube_poly cube_quad small_cube translated-cube sphere "
    "sphere966 larger_sphere geosphere ellipsoid tetrahedron reference_tetrahedron tet-shuffled octahedron "
    "icosahedron cylinder cylinder_locally_refined pyramid torus_quad 3torus double-torus-3-holes "
    "double-torus-example knot knot1 knot2 eight oblong oblong-shuffled blob blob-closed blobby blobby-shuffled",
}
LABEL = {stem: cls for cls, names in CLASSES.items() for stem in names.split()}
QUERIES = ["cow", "rotor", "hand", "knot1"]


def fetch(work: Path) -> tuple[Path, str]:
    """Download and unpack the package; its version."""
    work.mkdir(parents=True, exist_ok=True)
    if not list(work.glob(f"{PACKAGE}_*.deb")):
        subprocess.run(["apt-get", "download", PACKAGE], cwd=work, check=True, capture_output=True)
    deb = next(work.glob(f"{PACKAGE}_*.deb"))
    version = deb.name.split("_")[1]
    raw = work / "raw"
    if not raw.is_dir():
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "deb")], check=True)
        raw.mkdir()
        for tgz in sorted((work / "deb").rglob("*.tar.gz")):
            with tarfile.open(tgz) as t:
                t.extractall(raw / tgz.name.split(".")[0], filter="data")
    return raw, version


def lay_out(raw: Path, scans: Path) -> dict[str, int]:
    """Class folders for the labelled stems, the rest at the root; one copy per content."""
    if scans.exists():
        shutil.rmtree(scans)
    scans.mkdir(parents=True)
    seen: set[str] = set()
    counts: dict[str, int] = {}
    for f in sorted(p for p in raw.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES):
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        if sha in seen:
            continue
        seen.add(sha)
        cls = LABEL.get(f.stem)
        folder = scans / cls if cls else scans
        folder.mkdir(exist_ok=True)
        target = folder / f.name
        if target.exists():
            target = folder / f"{f.stem}-{sha[:6]}{f.suffix}"
        shutil.copyfile(f, target)
        counts[cls or "(unlabelled)"] = counts.get(cls or "(unlabelled)", 0) + 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/e2e_cgal")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--record", default="docs/e2e_cgal/record.json")
    a = ap.parse_args()
    out = Path(a.out)
    raw, version = fetch(out / "package")
    scans = out / "scans"
    layout = lay_out(raw, scans)
    spec = f"folder:{scans}"
    info = dataset_info(spec)
    t0 = time.time()
    run = foundry3d.distill(
        teacher="embedded",
        data=spec,
        supertokens=16,
        out=out / "student",
        overrides=[f"engine.steps={a.steps}", "engine.batch_size=32", "engine.eval_every=100",
                   "engine.progress=false", "engine.tensorboard=false", "engine.threads=1"],
        overwrite=True,
    )  # fmt: skip
    distill_s = round(time.time() - t0, 1)
    task = f"svm:{spec}"
    scores = {}
    for name, model in (("teacher", "embedded"), ("floor", "floor:embedded"), ("student", run["release"])):
        res = foundry3d.evaluate(
            model, tasks=[task], out=out / "eval", name=name, overrides=["progress=false"], overwrite=True
        )
        r = res["tasks"][task]
        if name == "teacher":
            res_teacher_model = res["model"]
        scores[name] = {"acc": r["acc"], "ci95": r["ci95"], "train_shapes": r["train_shapes"],
                        "test_shapes": r["test_shapes"]}  # fmt: skip
    from foundry3d.eval.results import compare

    table = compare([str(out / "eval" / n) for n in ("teacher", "floor", "student")])
    try:
        foundry3d.embed([str(scans)], model=run["release"], out=str(out / "index"), progress=False, overwrite=True)
    except EmbedError as e:  # some files cannot be embedded: each is listed with its reason, the rest are indexed
        print(f"embed: {e}")
    emb = json.loads((out / "index" / "embed.json").read_text())
    queries = [str(next(scans.rglob(f"{q}.*"))) for q in QUERIES]
    hits = foundry3d.search(str(out / "index"), queries, top_k=4, out=str(out / "search"), overwrite=True)
    record = {
        "package": {"name": PACKAGE, "version": version, "licence": "GPL-3+ / LGPL-3+ (Debian copyright of cgal)"},
        "layout": layout,
        "data_info": {k: info[k] for k in ("files", "read", "classes", "per_class", "unlabelled", "splits")},
        "skipped": info["skipped"],
        "distill": {"teacher": "embedded", "supertokens": 16, "steps": a.steps, "batch_size": 32,
                    "seconds": distill_s, "release_hash": foundry3d.load(run["release"]).release_hash[:16]},
        "teacher_model": res_teacher_model,  # what "embedded" resolved to (name by the weights' hash)
        "eval": scores,
        "kept": table if isinstance(table, (dict, list, str)) else str(table),
        "embed": {"files": emb["index"]["files"], "embedded": emb["index"]["embedded"], "failed": emb["failed"]},
        "search": [{k: h[k] for k in ("query", "rank", "file", "cosine")} for h in hits],
        "command": "python benchmarks/e2e_folder.py --out runs/e2e_cgal",
    }  # fmt: skip
    for h in record["search"]:
        h["query"], h["file"] = str(Path(h["query"]).relative_to(scans)), str(Path(h["file"]).relative_to(scans))
    path = Path(a.record)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, default=str) + "\n"))
    print(json.dumps(record["eval"], indent=1))


if __name__ == "__main__":
    main()
