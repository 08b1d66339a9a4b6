"""The token-count sweep: in which regime does a learned assignment (DSO) beat clustering?

s = 16 SuperTokens fixed, clouds of more points and patch tokens (64 tokens per 1,024 points, the teacher's
ratio), so that one SuperToken stands for 4, 16, (64) tokens. Every kind is distilled with the same recipe
(the quickstart's engine and steps; the teacher's targets cached once per size: the students' tokenizer is
the frozen copy, so a step costs DSO + encoder + CAU only) and several seeds, then scored on the held-out
test splits at that size next to the teacher and the floor (95 % CIs). Each kind's difference to DSO is
paired over the same test items and seeds; token fidelity also gives the context R² (the share of the
cross-token part of the teacher's output a kind recovers, against the mlp student of the same seed).

Sizes beyond the points a dataset stores are refused with the stored count (no resampling with replacement
pretends to be a bigger cloud). A re-run skips the students and evaluations it already has.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from foundry3d.data.registry import dataset_base, dataset_info
from foundry3d.errors import ConfigError
from foundry3d.eval.results import comparison, eval_seconds, gain_kept, kinds_over_seeds, primary
from foundry3d.eval.suite import EvalError, evaluate, parse_task, results_hold
from foundry3d.files import FolderBusy
from foundry3d.ledger import Ledger
from foundry3d.models.hub import resolve
from foundry3d.train.distill import distill
from foundry3d.train.runlog import training_seconds

# the DSO before the ladder chose its defaults (docs/study/ladder.json): kind foundry_before
BEFORE_LADDER = ["student.count_grad=false", "student.empty_bins=fallback", "loss.tau_end=1.0"]
BUSY_POLL_S = 30.0  # how often a sweep looks again at a student another process is working on
KINDS = ("foundry", "kmeans", "kmeans_static", "kmeans_xyz", "fps", "fps_presample", "mlp", "mimic")
TASKS = ("svm:sh3d16", "svm:kicad33", "fewshot:kicad33", "fidelity:kicad33")  # each with headroom at 1,024 points
# measured at the larger sizes (no headroom at 1,024 in the study's record); the kinds are compared on one only
# where teacher - floor has its 95 % CI above 0 at that size
LARGE_TASKS = ("partseg:kicadparts",)


@dataclass
class SweepConfig:
    """What the sweep compares, at which sizes, with which seeds."""

    enabled: bool = True
    sizes: list[int] = field(default_factory=lambda: [1024, 4096])  # points per cloud (64 patch tokens / 1,024)
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    before: bool = True  # also the DSO of before the ladder (foundry_before): what the defaults changed
    supertokens: int = 16
    steps: int = 600
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    large_tasks: list[str] = field(default_factory=lambda: list(LARGE_TASKS))  # only at sizes >= large_from
    large_from: int = 4096
    # a dataset cache folder for some sizes (e.g. {16384: ~/.cache/foundry3d-16k}): the same datasets built with
    # more points per shape (`foundry3d data build sh3d16 --points 16384 --root ...`), so the other sizes keep
    # reading the standard builds and their records stay comparable
    roots: dict[int, str] = field(default_factory=dict)
    # a folder of committed per-student outcomes (foundry3d.ledger): each student's results and costs are
    # recorded there, and a student whose run folder is gone (a new machine) is read from it instead of
    # retrained when nothing that determines it has changed; None keeps no ledger
    ledger: str | None = None
    # torch threads of a sweep process (None: all cores). 1 lets two sweeps share two cores; a ledger's key holds
    # it (training is bit-identical only at a fixed thread count), so the study and the script use the same
    threads: int | None = 1

    def root_at(self, n: int, root: str | None) -> str | None:
        """The dataset cache folder of cloud size ``n``: its own where ``roots`` names one, else ``root``."""
        return {int(k): v for k, v in self.roots.items()}.get(n, root)

    def tasks_at(self, n: int) -> list[str]:
        """The tasks teacher and floor are measured on at cloud size ``n``: every size's, then the large sizes' own
        (the kinds are compared on those only where they have headroom)."""
        return [*self.tasks, *(t for t in self.large_tasks if n >= self.large_from and t not in self.tasks)]

    def validate(self) -> None:
        """Refuse sizes below 256 points, repeated seeds, a sweep without DSO and counts below 1."""
        if not self.sizes or min(self.sizes) < 256:
            raise ConfigError(f"token_sweep.sizes must be cloud sizes >= 256 points, got {self.sizes}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"token_sweep.seeds must be distinct seeds, got {self.seeds}")
        if "foundry" not in self.kinds:
            raise ConfigError(f"token_sweep.kinds must hold foundry (every difference is to DSO), got {self.kinds}")
        for name in ("tasks", "large_tasks"):
            for task in getattr(self, name):
                try:
                    parse_task(task)  # a bad task fails now, not after hours of the study's other parts
                except EvalError as e:
                    raise ConfigError(f"{name}: {e}") from None
        if self.large_from < 1:
            raise ConfigError(f"token_sweep.large_from must be a cloud size >= 1, got {self.large_from}")
        for k, v in self.roots.items():
            if not str(k).isdigit() or int(k) not in self.sizes or not isinstance(v, str) or not v:
                raise ConfigError(
                    f"token_sweep.roots maps a sweep size to a dataset folder, got {k!r}: {v!r} (sizes {self.sizes})"
                )
        if self.ledger and Path(self.ledger).expanduser().exists() and not Path(self.ledger).expanduser().is_dir():
            raise ConfigError(f"token_sweep.ledger {self.ledger} is an existing file: expected a folder for the ledger")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"token_sweep.threads must be >= 1 or null (all cores), got {self.threads}")
        if self.steps < 1 or self.supertokens < 1:
            raise ConfigError(f"token_sweep.steps and supertokens must be >= 1, got {self.steps}, {self.supertokens}")


def check_sizes(sizes: list[int], tasks: list[str], root: str | None = None) -> None:
    """Refuse a size larger than the points some task's dataset stores, naming each short dataset (a dataset
    that makes its clouds at any size, e.g. ``synthetic``, stores no count and limits nothing)."""
    names = sorted({dataset_base(t.split(":", 1)[1]) for t in tasks})
    infos = {n: dataset_info(n, root) for n in names}
    stored = {n: int(i["points_per_shape"]) for n, i in infos.items() if "points_per_shape" in i}
    for n in sizes:
        short = {k: v for k, v in stored.items() if v < n}
        if short:
            shown = ", ".join(f"{k} stores {v}" for k, v in short.items())
            limit = min(stored.values())
            raise ConfigError(f"sweep size {n}: larger than the points a dataset stores ({shown}); expected <= {limit}")


def token_sweep(
    cfg: SweepConfig,
    out: Path,
    teacher: str = "embedded",
    recipe: str | dict = "distill/quickstart",
    recipe_overrides: list[str] | None = None,
    eval_config: str | dict = "eval/quickstart",
    root: str | None = None,
) -> dict[str, Any]:
    """Distil and evaluate every kind at every size and seed into ``out/points<N>/``; the record (summary per
    size, wall times, machine) is returned.

    Args:
        cfg: kinds, sizes, seeds, steps, tasks.
        out: the sweep's folder (students, evaluations and the teacher-target cache of each size).
        teacher: the teacher spec every kind is distilled from.
        recipe: the partial distillation config every student starts from (default: the quickstart's).
        recipe_overrides: changes to it every student shares (data, root); the sweep sets steps, cloud size,
            patch tokens, s and seed after them.
        eval_config: the partial evaluation config (default: the quickstart's protocols).
        root: dataset cache folder.
    """
    for n in cfg.sizes:
        check_sizes([n], cfg.tasks_at(n), cfg.root_at(n, root))
    threads = cfg.threads
    if threads:
        torch.set_num_threads(threads)
    kinds: dict[str, list[str]] = {k: [f"student.kind={k}"] for k in cfg.kinds}
    if cfg.before:
        kinds["foundry_before"] = ["student.kind=foundry", *BEFORE_LADDER]
    t0, sizes = time.time(), {}
    ledger = Ledger(Path(cfg.ledger).expanduser()) if cfg.ledger else None
    teacher_hash = resolve(teacher)[1]["hash"]
    teacher_model: dict[str, Any] | None = None
    for n in cfg.sizes:
        root_n = cfg.root_at(n, root)
        groups = round(n * 64 / 1024)
        ev = [
            f"svm.num_points={n}",
            f"fidelity.num_points={n}",
            f"partseg.num_points={n}",  # its patch count follows the backbone's ratio: the sweep's tokens
            f"fidelity.teacher={teacher}",
        ]
        folder = out / f"points{n}"
        ev += [f"threads={threads}" if threads else "threads=null", "progress=false", f"cache_dir={folder / 'cache'}"]
        holds = partial(results_hold, task_names=cfg.tasks_at(n), config=eval_config, overrides=ev, root=root_n)
        refs = {
            name: _reference(ledger, n, name, spec, teacher_hash, holds, root_n, partial(
                evaluate, spec, cfg.tasks_at(n), config=eval_config, overrides=ev, out=folder / "eval", name=name,
                root=root_n,
            ), here=(folder / "eval" / name / "results.json").exists())
            for name, spec in (("teacher", teacher), ("floor", f"floor:{teacher}"))
        }  # fmt: skip
        # a large size's own task is compared only where the teacher's encoder adds something over its floor
        spare = {t: headroom(t, refs) for t in cfg.tasks_at(n) if t not in cfg.tasks}
        tasks = [*cfg.tasks, *(t for t, h in spare.items() if h["headroom"])]
        held = partial(results_hold, task_names=tasks, config=eval_config, overrides=ev, root=root_n)
        runs: dict[str, dict[int, dict[str, Any]]] = {k: {} for k in kinds}
        seconds: dict[str, Any] = {}
        # seed-major: a killed sweep has every kind at the seeds it reached. A student whose folder or ledger
        # claim another process holds (a second sweep into the same folder, or a study's sweep in its own
        # folder sharing the ledger) is left to it and read once that process lets go, so parallel sweeps share
        # the work instead of stopping or training it twice.
        todo = [(seed, kind) for seed in cfg.seeds for kind in kinds]
        while todo:
            busy = []
            for seed, kind in todo:
                name = f"{kind}_seed{seed}"
                run = folder / "students" / name
                overrides = [
                    *(recipe_overrides or []),
                    "data.cache_views=1",
                    f"engine.steps={cfg.steps}",
                    "engine.warmup_steps=50",
                    "engine.progress=false",
                    f"student.supertokens={cfg.supertokens}",
                    f"data.num_points={n}",
                    f"data.num_groups={groups}",
                    f"engine.seed={seed}",
                    f"data.cache_dir={folder / 'cache'}",
                    *([f"data.root={root_n}"] if root_n else []),
                    *kinds[kind],
                ]
                have = (run / "release" / "model.safetensors").exists()
                key = ledger.distill_key(teacher_hash, recipe, overrides, root_n) if ledger else None
                with ledger.claim(f"points{n}", name, key) if ledger and key else nullcontext(True) as mine:
                    if not mine:  # another process trains it: come back once it lets go
                        busy.append((seed, kind))
                        continue
                    # trained elsewhere (another machine, or another process sharing the ledger), if at all
                    entry = None if have else _stored(ledger, f"points{n}", name, key, held)
                    if entry is not None:
                        runs[kind][seed], seconds[name] = entry["results"], entry["seconds"]
                        continue
                    try:
                        if not have:
                            distill(teacher=teacher, config=recipe, overrides=overrides, out=run, resume=run.exists())
                        res = evaluate(
                            str(run / "release"), tasks, config=eval_config, overrides=ev, out=folder / "eval",
                            name=name, root=root_n,
                        )  # fmt: skip
                    except FolderBusy:
                        busy.append((seed, kind))
                        continue
                    runs[kind][seed] = _record(res)
                    seconds[name] = {"train": training_seconds(run), "eval": eval_seconds(runs[kind][seed])}
                    if ledger and key:
                        res = runs[kind][seed]
                        ledger.put(f"points{n}", name, key, {"weights_hash": res["model"]["hash"], "results": res,
                                                             "seconds": seconds[name]})  # fmt: skip
            if busy:
                print(f"token sweep: {len(busy)} student(s) at {n} points are another process's; waiting", flush=True)
                if len(busy) == len(todo):  # nothing else to do here: wait for the other process to let go
                    time.sleep(BUSY_POLL_S)
            todo = busy
        runs = {k: dict(sorted(v.items())) for k, v in runs.items()}  # seed order, whichever finished first
        seconds.update({f"{k} eval": eval_seconds(v) for k, v in refs.items()})
        no_room = {t: h for t, h in spare.items() if not h["headroom"]}
        sizes[str(n)] = size_summary(n, groups, cfg, refs, runs, seconds, tasks, no_room)
        teacher_model = teacher_model or refs["teacher"]["model"]
    return {
        "wall_this_call": round(time.time() - t0, 1),  # a resumed call skips what it has: the cost is seconds_total
        "what": f"token-count sweep at s = {cfg.supertokens}: each kind's difference to DSO against tokens per "
        "SuperToken",
        "config": asdict(cfg),
        "teacher": teacher,
        # what the spec resolved to (name, hash): "embedded" names whichever teacher is the default when it runs
        "teacher_model": teacher_model,
        "sizes": sizes,
        "seconds_total": round(sum(r["seconds"]["total"] for r in sizes.values()), 1),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": threads,
            "torch": torch.__version__,
        },
    }


def _reference(
    ledger: Ledger | None,
    n: int,
    name: str,
    spec: str,
    teacher_hash: str,
    holds: Callable[[dict[str, Any]], bool],
    root: str | None,
    work: Callable[[], Any],
    here: bool,
) -> dict[str, Any]:
    """Teacher or floor scored at size ``n`` (``work()``), or read from the ledger where this machine has no
    scores of its own (``here``) and the stored ones hold: at the largest sizes they cost as much as several
    students."""
    if ledger is None:
        return _record(_when_free(work))
    key = ledger.key(teacher_hash, {"reference": spec}, [], root)
    entry = ledger.get(f"points{n}", name, key)
    if entry is not None and not here and holds(entry["results"]):
        return dict(entry["results"])
    res = _record(_when_free(work))
    ledger.put(f"points{n}", name, key, {"results": res})
    return res


def _stored(
    ledger: Ledger | None, group: str, name: str, key: dict[str, Any] | None, holds: Callable[[dict[str, Any]], bool]
) -> dict[str, Any] | None:
    """The ledger's entry of student ``name`` when it was made under ``key`` and its results hold as the sweep
    would evaluate them now, else None."""
    if ledger is None or key is None:
        return None
    entry = ledger.get(group, name, key)
    return entry if entry is not None and holds(entry["results"]) else None


def _when_free(work: Callable[[], Any]) -> Any:
    """``work()``, retried every ``BUSY_POLL_S`` while another process holds the folder it writes into."""
    while True:
        try:
            return work()
        except FolderBusy:
            time.sleep(BUSY_POLL_S)


def _record(res: Any) -> dict[str, Any]:
    assert isinstance(res, dict)  # evaluate returns text only for compare=...
    return res


def headroom(task: str, refs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Teacher, floor and teacher - floor with its paired 95 % CI on ``task``; ``headroom`` when the CI is above 0."""
    proto = task.split(":", 1)[0]
    t, f = refs["teacher"]["tasks"][task], refs["floor"]["tasks"][task]
    g = gain_kept(proto, t, f, t)
    return {k: g[k] for k in ("teacher", "floor", "gap", "gap_ci95", "headroom")}


def size_summary(
    n: int,
    groups: int,
    cfg: SweepConfig,
    refs: dict[str, dict[str, Any]],
    runs: dict[str, dict[int, dict[str, Any]]],
    seconds: dict[str, Any],
    tasks_run: list[str] | None = None,
    no_headroom: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Teacher and floor (with the headroom: teacher - floor and its CI), then every kind over seeds with its
    paired difference to DSO (the foundry kind, with the defaults the ladder chose) and, for token fidelity,
    the context R² against the mlp student of the same seed. ``no_headroom``: the large sizes' tasks left out
    because the teacher's encoder adds nothing there (teacher - floor with its CI)."""
    dso, seeds = "foundry", cfg.seeds
    first = {k: v[seeds[0]] for k, v in runs.items()}
    comp = comparison(refs["teacher"], refs["floor"], first)
    tasks: dict[str, Any] = {}
    for task in cfg.tasks if tasks_run is None else tasks_run:
        proto = task.split(":", 1)[0]
        row: dict[str, Any] = {
            "teacher": primary(refs["teacher"]["tasks"][task], proto),
            "floor": primary(refs["floor"]["tasks"][task], proto),
            "headroom": next(iter(comp[task]["students"].values()))["gain"]["gap_ci95"] if task in comp else None,
        }
        per_kind = {kind: [per_seed[s]["tasks"][task] for s in seeds] for kind, per_seed in runs.items()}
        row["kinds"] = kinds_over_seeds(proto, per_kind, dso, "dso_minus", ref_minus_kind=True)
        tasks[task] = row
    return {
        "points": n,
        "tokens": groups,
        "tokens_per_supertoken": groups / cfg.supertokens,
        "dso": dso,
        "tasks": tasks,
        "no_headroom": no_headroom or {},
        "seconds": {**seconds, "total": round(sum(_flat(v) for v in seconds.values()), 1)},
    }


def _flat(v: Any) -> float:
    return float(sum(v.values())) if isinstance(v, dict) else float(v)
