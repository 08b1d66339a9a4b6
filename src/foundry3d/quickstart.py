"""``foundry3d quickstart``: the whole promise on real shapes, on a laptop CPU, in minutes.

Stages (each shows progress; a re-run skips finished stages, ``overwrite`` redoes them):

1. data     build SH3D-16 and KiCad-33/Parts from their Debian packages if missing
2. distill  one pass of the embedded teacher feeds a cache of targets; students at s = 1, 4, 16
3. eval     teacher and students through the same evaluation suite
4. bench    parameters, FLOPs, latency and memory of teacher and students at several point counts
5. report   ``report.md`` + self-contained ``report.html`` with tables, plots and SuperToken renders

The quick recipe fits a 10-minute budget on 2 cores; ``full`` runs longer distillation and the
full evaluation and benchmark protocols. Both recipes are written into the report.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from foundry3d.config import load_config
from foundry3d.data.build import build
from foundry3d.data.debian import PackageError
from foundry3d.edge.bench import bench
from foundry3d.errors import Foundry3DError
from foundry3d.eval.suite import evaluate
from foundry3d.files import atomic_write, holds_record, run_folder
from foundry3d.models.hub import load_teacher, model_hash
from foundry3d.report.quickstart_report import build_report
from foundry3d.report.supertokens import supertoken_figures
from foundry3d.train.distill import distill


class QuickstartError(Foundry3DError, RuntimeError):
    """The output folder holds a different run, or a stage cannot run."""


@dataclass
class Recipe:
    """The quickstart's recipe: the students (s values), datasets, tasks, distillation and evaluation settings,
    and what to benchmark."""

    supertokens: list[int] = field(default_factory=lambda: [1, 4, 16])
    build: list[str] = field(default_factory=lambda: ["sh3d16", "kicad"])  # embedded datasets to build if missing
    tasks: list[str] = field(
        default_factory=lambda: [
            "svm:sh3d16",
            "svm:kicad33",
            "fewshot:kicad33",
            "partseg:kicadparts",
            "fidelity:kicad33",
        ]
    )
    showcase: list[str] = field(default_factory=lambda: ["sh3d16:test", "kicad33:test"])  # occupancy + renders
    # the students' and the protocols' recipes: partial configs (a built-in name under foundry3d/configs, a YAML
    # file, or a mapping) that every student and evaluation starts from
    distill: str | dict = "distill/quickstart"
    eval: str | dict = "eval/quickstart"
    bench_points: list[int] = field(default_factory=lambda: [1024, 8192, 32768])
    bench_batches: list[int] = field(default_factory=lambda: [1, 32])
    bench_budget_s: float = 1.5
    bench_batch32_max_points: int = 2048  # batch 32 only up to this many points (time)


QUICK = Recipe(
    # part segmentation (no headroom on the embedded teacher and the slowest task) runs in --full and the study
    tasks=["svm:sh3d16", "svm:kicad33", "fewshot:kicad33", "fidelity:kicad33"],
)
FULL = Recipe(
    build=["sh3d16", "kicad", "kicadboards"],
    tasks=[
        "svm:sh3d16",
        "svm:kicad33",
        "fewshot:kicad33",
        "partseg:kicadparts",
        "fidelity:kicad33",
        "sceneseg:kicadboards",
    ],
    distill="distill/quickstart_full",
    eval="eval/quickstart_full",
    bench_budget_s=6.0,
    bench_batch32_max_points=8192,
)


def _stage_path(out: Path, name: str) -> Path:
    return out / "stages" / f"{name}.json"


def _done(out: Path, name: str) -> dict[str, Any] | None:
    p = _stage_path(out, name)
    return json.loads(p.read_text()) if p.exists() else None


def _finish(out: Path, name: str, result: dict[str, Any], t0: float) -> dict[str, Any]:
    result = {**result, "seconds": round(time.time() - t0, 1)}
    atomic_write(_stage_path(out, name), lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2, default=str)))
    print(f"[quickstart] {name}: done in {result['seconds']} s", flush=True)
    return result


def quickstart(
    out: str | Path = "runs/quickstart",
    full: bool = False,
    overwrite: bool = False,
    teacher: str = "embedded",
    root: str | None = None,
    recipe: str | Path | Recipe | None = None,
) -> dict[str, Any]:
    """The main job: data, embedded teacher, SuperToken students, evaluation with the floor, bench, report.

    Args:
        out: output folder; a re-run skips finished stages (an interrupted run resumes).
        full: the longer recipe (more distillation steps, full protocols).
        overwrite: discard the folder's previous quickstart run.
        teacher: teacher release or embedded[:NAME].
        root: dataset cache folder.
        recipe: a YAML file with Recipe fields (or, from Python, a Recipe) replacing the quick/full
            recipes, e.g. to run on other datasets.
    """
    if recipe is None:
        recipe = FULL if full else QUICK
    elif not isinstance(recipe, Recipe):
        recipe = load_config(Recipe, recipe)
    t_model = load_teacher(teacher)
    finger = {
        "mode": "full" if full else "quick",
        "teacher": teacher,
        "teacher_hash": model_hash(t_model),
        "recipe": asdict(recipe),
        "root": root,
    }
    with run_folder(
        out, "quickstart", QUICKSTART_FILES, overwrite, legacy=holds_record("quickstart.json", "recipe")
    ) as folder:
        return _run(folder, recipe, finger, teacher, root)


# Everything the quickstart writes into its folder (--overwrite removes these and nothing else).
QUICKSTART_FILES = (
    "quickstart.json",
    "stages",
    "students",
    "eval",
    "bench",
    "cache",
    "figures",
    "report.md",
    "report.html",
    "report.json",
)


def _run(out: Path, recipe: Recipe, finger: dict[str, Any], teacher: str, root: str | None) -> dict[str, Any]:
    fp = out / "quickstart.json"
    if fp.exists() and json.loads(fp.read_text()) != finger:
        raise QuickstartError(
            f"{out} holds a different quickstart run ({json.loads(fp.read_text())['mode']} "
            f"recipe or another teacher); pass --overwrite to replace it or choose another --out"
        )
    atomic_write(fp, lambda tmp: Path(tmp).write_text(json.dumps(finger, indent=2)))
    stages: dict[str, Any] = {}
    t_all = time.time()
    stages["data"] = _done(out, "data") or _stage_data(out, recipe, root)
    stages["distill"] = _done(out, "distill") or _stage_distill(out, recipe, teacher, root)
    stages["eval"] = _done(out, "eval") or _stage_eval(out, recipe, teacher, stages["distill"], root)
    stages["bench"] = _done(out, "bench") or _stage_bench(out, recipe, teacher, stages["distill"])
    stages["report"] = _done(out, "report") or _stage_report(out, recipe, finger, stages)
    print(stages["report"]["table"])
    print(f"\nreport: {out / 'report.html'}  (total {time.time() - t_all:.0f} s this run)")
    return stages


def _stage_data(out: Path, recipe: Recipe, root: str | None) -> dict[str, Any]:
    t0 = time.time()
    paths = {}
    for name in recipe.build:
        print(f"[quickstart] data: {name} (built once from its Debian package, then reused)", flush=True)
        try:
            paths[name] = str(build(name, root=root))
        except PackageError as e:
            raise QuickstartError(f"could not build the embedded dataset {name}: {e}") from e
    return _finish(out, "data", {"paths": paths}, t0)


def _stage_distill(out: Path, recipe: Recipe, teacher: str, root: str | None) -> dict[str, Any]:
    t0 = time.time()
    students, timings = {}, {}
    for s in recipe.supertokens:
        print(f"[quickstart] distill: student with s = {s} SuperTokens", flush=True)
        t1 = time.time()
        ov = [f"data.cache_dir={out / 'cache'}", *([f"data.root={root}"] if root else [])]
        run = out / "students" / f"s{s}"
        distill(teacher=teacher, supertokens=s, config=recipe.distill, overrides=ov, out=run, resume=run.exists())
        students[str(s)] = str(out / "students" / f"s{s}" / "release")
        timings[str(s)] = round(time.time() - t1, 1)
    return _finish(out, "distill", {"students": students, "seconds_per_student": timings}, t0)


def _models(teacher: str, distill_result: dict[str, Any], floor: bool = True) -> dict[str, str]:
    """teacher, its training-free floor and the students (the floor is not benchmarked: it is the tokenizer)."""
    refs = {"teacher": teacher, **({"floor": f"floor:{teacher}"} if floor else {})}
    return {**refs, **{f"s={s}": p for s, p in distill_result["students"].items()}}


def _stage_eval(out: Path, recipe: Recipe, teacher: str, distilled: dict[str, Any], root: str | None) -> dict:
    t0 = time.time()
    results = {}
    for name, spec in _models(teacher, distilled).items():
        print(f"[quickstart] eval: {name}", flush=True)
        ov = [f"fidelity.teacher={teacher}"]  # the reference every model's tokens are compared with
        r = evaluate(
            spec,
            recipe.tasks,
            config=recipe.eval,
            overrides=ov,
            out=out / "eval",
            root=root,
            name=name.replace("=", ""),
        )
        results[name] = r
    return _finish(out, "eval", {"results": results, "tasks": recipe.tasks}, t0)


def _stage_bench(out: Path, recipe: Recipe, teacher: str, distilled: dict[str, Any]) -> dict[str, Any]:
    t0 = time.time()
    models = _models(teacher, distilled, floor=False)
    print(
        f"[quickstart] bench: batches {recipe.bench_batches} at {recipe.bench_points} points (batch > 1 up to "
        f"{recipe.bench_batch32_max_points} points), one process per measurement",
        flush=True,
    )
    result = bench(
        list(models.values()),
        recipe.bench_points,
        recipe.bench_batches,
        out=out / "bench",
        budget_s=recipe.bench_budget_s,
        batch_max_points=recipe.bench_batch32_max_points,
        names=list(models),
    )
    return _finish(out, "bench", result, t0)


def _stage_report(out: Path, recipe: Recipe, finger: dict[str, Any], stages: dict[str, Any]) -> dict[str, Any]:
    t0 = time.time()
    occ = supertoken_figures(out, stages["distill"]["students"], recipe.showcase, finger.get("root"))
    stages = {**stages, "occupancy": occ}
    table, paths = build_report(out, recipe, finger, stages)
    return _finish(out, "report", {"table": table, "occupancy": stages["occupancy"], **paths}, t0)
