"""``foundry3d study paper``: the paper's comparisons, regenerated on any teacher with one command.

Every student is distilled with the same engine, loss, data, steps and teacher-target cache; every
model (teacher, floor, students, experts, training-free ToMe / PiToMe on the teacher) goes through
the same held-out evaluation; each cell carries its 95 % CI, the encoder gain kept (paired
bootstrap against teacher and floor) and the model's FLOPs per cloud. Tables:

1. universal (Foundry, s = 16) vs task experts (logit KD), every model on every task;
2. the SuperToken ablation: foundry / kmeans / fps / mlp / mimic at s = 16 (and, named in kinds=[...], the paper's
   likely baselines kmeans_static, kmeans_xyz, fps_presample);
3. the number of SuperTokens s;
4. the gate: threshold r and top-k bypass at deployment, one gated student;
5. token merging: training-free ToMe / PiToMe on the teacher at the s = 16 student's FLOPs, and
   PatchMerger / ToMe / ToMe + DSO students trained with the FMD loss;
6. the token-count sweep (:mod:`foundry3d.token_sweep`): each kind's paired difference to DSO at clouds of
   more patch tokens, s fixed, so one SuperToken stands for 4 -> 16 tokens (``token_sweep.enabled=false``
   skips it).

Outputs in ``<out>``: ``study.json`` (every number, with the settings), ``study.md`` and
``study.html`` (rendered from the JSON by the report templates), ``figures/``. A re-run skips the
students, experts and evaluations it already has; with ``ledger=FOLDER`` (:mod:`foundry3d.ledger`, a committed
folder) also those another machine trained and scored, so a study longer than one machine's life finishes.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from foundry3d.config import load_config, partial_settings
from foundry3d.edge.flops import count_flops
from foundry3d.errors import ConfigError, Foundry3DError
from foundry3d.eval.results import comparison, eval_seconds, kinds_over_seeds
from foundry3d.eval.suite import EvalError, evaluate, parse_task, results_hold
from foundry3d.files import atomic_write, holds_record, run_folder, slug
from foundry3d.ledger import Ledger
from foundry3d.models.backbone import PointTransformer
from foundry3d.models.hub import load_teacher, model_hash, resolve
from foundry3d.models.merging import flops_matched_r
from foundry3d.models.student import student_kinds
from foundry3d.report.study_report import write_study_report
from foundry3d.token_sweep import SweepConfig, token_sweep
from foundry3d.train.distill import distill
from foundry3d.train.expert import expert
from foundry3d.train.runlog import training_seconds


class StudyError(Foundry3DError, RuntimeError):
    """A study folder that holds another study, or a study that cannot run."""


@dataclass
class StudyConfig:
    """What ``foundry3d study paper`` compares: teacher, tasks, the kinds and seeds of the ablation, the s
    sweep, gate, merging, experts, the recipes, and the token-count sweep."""

    teacher: str = "embedded"
    root: str | None = None
    tasks: list[str] = field(
        default_factory=lambda: [
            "svm:sh3d16",
            "svm:kicad33",
            "svm:oad",
            "fewshot:kicad33",
            "partseg:kicadparts",
            "fidelity:kicad33",
        ]
    )
    supertokens: int = 16
    # the students' distillation data (e.g. [folder:/scans]); None: the datasets the distill recipe names
    data: list[str] | None = None
    kinds: list[str] = field(
        default_factory=lambda: ["foundry", "kmeans", "fps", "mlp", "mimic", "patchmerger", "tome", "tome_dso"]
    )
    # engine.seed of the compared students: every kind of the ablation is distilled once per seed, so the
    # differences between kinds carry the training noise (the SuperToken question needs >= 3)
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    sweep: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    gate_r: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 0.9, 1.0])
    gate_keep: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    merging: list[str] = field(default_factory=lambda: ["tome", "pitome"])
    experts: list[str] = field(default_factory=lambda: ["cls:sh3d16", "cls:kicad33", "seg:kicadparts"])
    # the students' recipe: a partial DistillConfig (built-in name, YAML file or mapping) every student starts from
    distill: str | dict = "distill/study"
    gate_distill: list[str] = field(default_factory=lambda: ["student.gate=true", "loss.gate_lambda=0.01"])
    # experts: a short fine-tuning (head only for a third, then everything) and a KD of the same length;
    # segmentation at 1,024 points so that an expert costs minutes on a CPU
    expert_overrides: list[str] = field(
        default_factory=lambda: [
            "num_points=1024",
            "finetune.engine.steps=300",
            "finetune.frozen_steps=100",
            "kd.engine.steps=300",
            "finetune.engine.log_every=25",
            "kd.engine.log_every=25",
            "finetune.engine.tensorboard=false",
            "kd.engine.tensorboard=false",
            "finetune.engine.progress=false",
            "kd.engine.progress=false",
            # the engine settings the recorded experts ran with (see quickstart.py)
            *(
                f"{part}.engine.{kv}"
                for part in ("finetune", "kd")
                for kv in ("lr=0.001", "grad_clip=null", "ckpt_every=200")
            ),
        ]
    )
    eval: str | dict = "eval/quickstart"  # the protocols: a partial EvalConfig (the quickstart's)
    flops_points: int = 1024
    token_sweep: SweepConfig = field(default_factory=SweepConfig)
    # a committed folder (foundry3d.ledger) with every student's and expert's results, FLOPs and training cost,
    # so that a study resumed on another machine reads what it lists instead of training it again (when nothing
    # that determines it changed); the token-count sweep keeps its students there too unless token_sweep.ledger
    # names another folder. None keeps no ledger.
    ledger: str | None = None
    # torch threads of the study's training and evaluation (None: torch's default, all cores). The ledger's keys
    # hold the count (training is bit-identical only at a fixed one), so a study resumed elsewhere sets it here
    # rather than through the environment
    threads: int | None = None

    def validate(self) -> None:
        """Refuse values the study would fail on hours later (a bad task, kind, seed list, s, threshold, merging
        method or expert), one line naming the field and what it expects."""
        for task in self.tasks:
            try:
                parse_task(task)
            except EvalError as e:
                raise ConfigError(f"tasks: {e}") from None
        unknown = [k for k in self.kinds if k not in student_kinds()]
        if not self.kinds or unknown:
            raise ConfigError(f"kinds must be student kinds ({', '.join(student_kinds().names())}), got {self.kinds}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be one or more distinct seeds, got {self.seeds}")
        if self.supertokens < 1 or any(k < 1 for k in self.sweep) or any(k < 1 for k in self.gate_keep):
            raise ConfigError(
                f"supertokens, sweep and gate_keep must be SuperToken counts >= 1, got {self.supertokens}, "
                f"{self.sweep}, {self.gate_keep}"
            )
        if any(not 0.0 <= r <= 1.0 for r in self.gate_r):
            raise ConfigError(f"gate_r must be thresholds in [0, 1], got {self.gate_r}")
        if any(m not in MERGING for m in self.merging):
            raise ConfigError(f"merging must be among {', '.join(MERGING)}, got {self.merging}")
        bad = [e for e in self.experts if e.partition(":")[0] not in ("cls", "seg") or not e.partition(":")[2]]
        if bad:
            raise ConfigError(f"experts must be cls:DATASET or seg:DATASET, got {bad}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 or null (all cores), got {self.threads}")
        if self.ledger and Path(self.ledger).expanduser().exists() and not Path(self.ledger).expanduser().is_dir():
            raise ConfigError(f"ledger {self.ledger} is an existing file: expected a folder for the ledger")
        if self.flops_points < 32:
            raise ConfigError(f"flops_points must be >= 32 (at least one patch), got {self.flops_points}")


MERGING = ("tome", "pitome")  # the training-free merging methods a backbone spec can name (tome:SPEC, pitome:SPEC)


def _students(cfg: StudyConfig) -> dict[str, dict[str, Any]]:
    """Name -> distillation overrides of every student the study trains."""
    s = cfg.supertokens
    out: dict[str, dict[str, Any]] = {}
    for kind in cfg.kinds:
        out[f"{kind} s={s}"] = {"student.kind": kind, "student.supertokens": s}
        for seed in cfg.seeds[1:]:  # the first seed is the plain run every other table reads
            out[f"{kind} s={s} seed={seed}"] = {"student.kind": kind, "student.supertokens": s, "engine.seed": seed}
    if len(cfg.seeds) > 1:
        for ov in out.values():
            ov.setdefault("engine.seed", cfg.seeds[0])
    for k in cfg.sweep:
        out.setdefault(f"foundry s={k}", {"student.kind": "foundry", "student.supertokens": k})
    if cfg.gate_r or cfg.gate_keep:
        gated: dict[str, Any] = {"student.kind": "foundry", "student.supertokens": s}
        for o in cfg.gate_distill:
            key, _, value = o.partition("=")
            gated[key] = value
        out[f"foundry+gate s={s}"] = gated
    return out


def _fingerprint(name: str, cfg: StudyConfig, teacher_hash: str) -> dict[str, Any]:
    """What makes two studies in one folder the same study: its settings and teacher, but not where its ledger
    lives. The ledger folder says where finished results are kept, not what they are (its entries carry their
    own keys), so a study resumed with its ledger moved or turned on is still this study."""
    return _without_ledger({"study": name, "config": asdict(cfg), "teacher_hash": teacher_hash})


def _without_ledger(finger: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint with the ledger paths left out; also applied to a stored one, since folders written before
    the ledger left the fingerprint hold its path and are still the same study."""
    finger = json.loads(json.dumps(finger))
    finger.get("config", {}).pop("ledger", None)
    finger.get("config", {}).get("token_sweep", {}).pop("ledger", None)
    return finger


def study(
    name: str = "paper",
    config: str | Path | dict | None = None,
    overrides: list[str] | dict | None = None,
    out: str | Path = "runs/paper",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Regenerate the paper's comparisons on a teacher: experts, ablations, s sweep, gate, token merging.

    Args:
        name: the study (paper).
        config: YAML with StudyConfig fields.
        overrides: dotted KEY=VALUE changes, e.g. supertokens=8 or "sweep=[1,16]".
        out: study folder (study.json, study.md, study.html, figures, every run).
        overwrite: start the study again in ``out``.
    """
    if name != "paper":
        raise StudyError(f"unknown study {name!r}; studies: paper")
    cfg = load_config(StudyConfig, config, overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    teacher = load_teacher(cfg.teacher)
    finger = _fingerprint(name, cfg, model_hash(teacher))
    with run_folder(
        out, "study", STUDY_FILES, overwrite, legacy=holds_record("study_config.json", "teacher_hash")
    ) as folder:
        return _run(folder, name, cfg, teacher, finger)


# Everything a study writes into its folder (--overwrite removes these and nothing else).
STUDY_FILES = (
    "study_config.json",
    "study.json",
    "study.md",
    "study.html",
    "figures",
    "students",
    "experts",
    "eval",
    "cache",
    "sweep",
)


def _run(out: Path, name: str, cfg: StudyConfig, teacher: Any, finger: dict[str, Any]) -> dict[str, Any]:
    fp = out / "study_config.json"
    if fp.exists() and _without_ledger(json.loads(fp.read_text())) != finger:
        raise StudyError(
            f"{out} holds a study with other settings or another teacher; pass --overwrite or another --out"
        )
    atomic_write(fp, lambda tmp: Path(tmp).write_text(json.dumps(finger, indent=2)))
    t0 = time.time()
    models: dict[str, dict[str, Any]] = {
        "teacher": {"spec": cfg.teacher, "group": "reference"},
        "floor": {"spec": f"floor:{cfg.teacher}", "group": "reference"},
    }
    seconds: dict[str, float] = {}
    # every model's tokens against the study's teacher, whose tokens are computed once (kept in the cache)
    protocol = [f"fidelity.teacher={cfg.teacher}", f"cache_dir={out / 'cache'}"]
    book = _Book(cfg, protocol, finger["teacher_hash"])
    x = torch.randn(1, cfg.flops_points, 3, generator=torch.Generator().manual_seed(0))
    scored: dict[str, dict[str, Any]] = {}

    def score(mname: str, m: dict[str, Any]) -> None:
        """Evaluate one model and count its FLOPs (or read both from the ledger), then record it in the ledger:
        each trained model is scored right after its training, so a study cut short keeps what it finished."""
        t1 = time.time()
        kept = book.stored(mname)
        if kept:
            scored[mname], m["flops"], m["params"] = kept["results"], kept["flops"], kept["params"]
            return
        record = evaluate(
            m["spec"], cfg.tasks, config=cfg.eval, overrides=protocol, out=out / "eval", root=cfg.root,
            name=slug(mname),
        )  # fmt: skip
        assert isinstance(record, dict)  # a record (only compare=... returns text)
        scored[mname] = record
        m["flops"], m["params"] = _flops(m["spec"], x, cfg)
        seconds[f"eval {mname}"] = round(time.time() - t1, 1)
        book.write(mname, {"results": record, "flops": m["flops"], "params": m["params"]})

    # 1. students (one teacher-target cache for all), each scored once trained; the gated one at every r and top-k
    for sname, ov in _students(cfg).items():
        run = out / "students" / slug(sname)
        t1 = time.time()
        overrides_list = [f"data.cache_dir={out / 'cache'}", *(f"{k}={v}" for k, v in ov.items())]
        if cfg.root:
            overrides_list.append(f"data.root={cfg.root}")
        if cfg.data:
            overrides_list.append(f"data.datasets=[{', '.join(cfg.data)}]")
        variants = _gate_variants(cfg, sname) if "gate" in sname else {}
        key = book.ledger.distill_key(book.teacher_hash, cfg.distill, [f"teacher={cfg.teacher}", *overrides_list],
                                      cfg.root) if book.ledger else None  # fmt: skip
        if not book.read(sname, key, run / "release", [*variants] or [sname]):
            distill(teacher=cfg.teacher, config=cfg.distill, overrides=overrides_list, out=run, resume=run.exists())
        seconds[f"distill {sname}"] = round(time.time() - t1, 1)
        group = "gate" if variants else "seed" if " seed=" in sname else "student"
        spec = str(run / "release")
        book.trained(sname, key, lambda run=run: training_seconds(run))
        members = {vname: f"{spec}?{option}" for vname, option in variants.items()} or {sname: spec}
        for mname, mspec in members.items():
            models[mname] = {"spec": mspec, "group": group, **({} if variants else {"kind": ov["student.kind"]})}
            book.origin[mname] = sname
            score(mname, models[mname])
    # 2. experts
    for task in cfg.experts:
        run = out / "experts" / slug(task)
        t1 = time.time()
        ex = [*cfg.expert_overrides, f"student.supertokens={cfg.supertokens}"]
        if cfg.root:
            ex.append(f"root={cfg.root}")
        ename = f"expert {task}"
        key = book.ledger.expert_key(book.teacher_hash, task, cfg.teacher, ex) if book.ledger else None
        release = run / "kd" / "release"
        if not book.read(ename, key, release, [ename]):
            release = Path(expert(task, cfg.teacher, out=run, overrides=ex, resume=run.exists())["release"])
        seconds[f"expert {task}"] = round(time.time() - t1, 1)
        models[ename] = {"spec": str(release), "group": "expert"}
        book.trained(ename, key, lambda run=run: _expert_seconds(run))
        book.origin[ename] = ename
        score(ename, models[ename])
    # 3. training-free merging on the teacher at the s-student's FLOPs
    ref = models.get(f"foundry s={cfg.supertokens}")
    for method in cfg.merging:
        r = _matched_r(teacher, ref["flops"] if ref else None, cfg)
        models[f"{method} (training-free) r={r}"] = {"spec": f"{method}:{cfg.teacher}?r={r}", "group": "merging"}
    # 4. evaluation and FLOPs of the models that need no training (teacher, floor, merging), every model in order
    for mname, m in models.items():
        if mname not in scored:
            score(mname, m)
    results = {k: scored[k] for k in models}
    comp = comparison(
        results["teacher"], results["floor"], {k: v for k, v in results.items() if k not in ("teacher", "floor")}
    )
    # 5. the token-count sweep: the study's own recipe and protocols at each cloud size
    sweep = None
    if cfg.token_sweep.enabled:
        t1 = time.time()
        extra = [*([f"data.root={cfg.root}"] if cfg.root else [])]
        extra += [f"data.datasets=[{', '.join(cfg.data)}]"] if cfg.data else []
        sweep_cfg = cfg.token_sweep
        if cfg.ledger and not sweep_cfg.ledger:
            sweep_cfg = SweepConfig(**{**asdict(sweep_cfg), "ledger": cfg.ledger})
        sweep = token_sweep(sweep_cfg, out / "sweep", cfg.teacher, cfg.distill, extra, cfg.eval, root=cfg.root)
        seconds["token sweep"] = round(time.time() - t1, 1)
    record = {
        "seeds": seed_table(cfg, results),
        "token_sweep": sweep,
        "study": name,
        "config": asdict(cfg),
        "recipes": {"distill": partial_settings(cfg.distill), "eval": partial_settings(cfg.eval)},
        "teacher": {"spec": cfg.teacher, "hash": model_hash(teacher), "name": teacher.cfg.name},
        "models": models,
        "tasks": cfg.tasks,
        "comparison": _without_items(comp),
        "results": {k: {"model": v["model"], "tasks": v["tasks"]} for k, v in results.items()},
        "seconds": {**seconds, "total": round(time.time() - t0, 1)},  # this call's wall times (a resume skips work)
        "cost": _costs(cfg, results, sweep, book.train_seconds),
        "machine": _machine(),
    }
    text = json.dumps(record, separators=(",", ":"), default=float)  # per-item arrays: compact, a few MB
    atomic_write(out / "study.json", lambda tmp: Path(tmp).write_text(text))
    paths = write_study_report(out, record)
    return {"study": str(out / "study.json"), **paths}


def _costs(
    cfg: StudyConfig, results: dict[str, Any], sweep: dict[str, Any] | None, train: dict[str, float]
) -> dict[str, Any]:
    """What the study's pieces cost in seconds, from the runs' own logs and records (``train``: each student's and
    expert's, from its log or, trained on another machine, its ledger entry): a study resumed across sessions
    skips what it has, so the wall time of its last call is not what it cost."""
    students = {s: train[s] for s in _students(cfg)}
    experts = {task: train[f"expert {task}"] for task in cfg.experts}
    evals = {m: eval_seconds(r) for m, r in results.items()}
    parts = {
        "students": round(sum(students.values()), 1),
        "experts": round(sum(experts.values()), 1),
        "evaluations": round(sum(evals.values()), 1),
        "token sweep": float(sweep["seconds_total"]) if sweep else 0.0,
    }
    return {"parts": parts, "total": round(sum(parts.values()), 1), "students": students, "experts": experts,
            "evaluations": evals}  # fmt: skip


def seed_table(cfg: StudyConfig, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every ablation kind over the study's seeds, per task: mean, spread and each seed's value, the paired
    difference to Foundry's DSO (same items, same seeds) with its 95 % CI, and the context R^2 of the token
    fidelity task, (R^2 - R^2_mlp) / (1 - R^2_mlp): the share of the cross-token part of the teacher's output
    a kind recovers (mlp mixes nothing across tokens). Empty with one seed."""
    if len(cfg.seeds) < 2:
        return {}
    s = cfg.supertokens
    names = {k: [f"{k} s={s}", *(f"{k} s={s} seed={x}" for x in cfg.seeds[1:])] for k in cfg.kinds}
    names = {k: v for k, v in names.items() if all(n in results for n in v)}
    table: dict[str, Any] = {"seeds": cfg.seeds, "tasks": {}}
    for task in cfg.tasks:
        proto = task.split(":", 1)[0]
        runs = {k: [results[n]["tasks"][task] for n in v] for k, v in names.items() if task in results[v[0]]["tasks"]}
        table["tasks"][task] = kinds_over_seeds(proto, runs, "foundry", "minus_foundry", ref_minus_kind=False)
    return table


def _without_items(comp: dict[str, Any]) -> dict[str, Any]:
    """The comparison without its copies of every model's per-item arrays (``results`` keeps them once)."""

    def strip(res: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in res.items() if k != "per_item"}

    return {
        task: {
            "teacher": strip(row["teacher"]),
            "floor": strip(row["floor"]),
            "students": {n: {**st, "result": strip(st["result"])} for n, st in row["students"].items()},
        }
        for task, row in comp.items()
    }


def _flops(spec: str, x: torch.Tensor, cfg: StudyConfig) -> tuple[float, int]:
    """A model's FLOPs per cloud of ``cfg.flops_points`` points and its parameter count."""
    net, info = resolve(spec)
    return count_flops(net, x, num_groups=net.groups_for(cfg.flops_points))["flops"], int(info["params"])


def _expert_seconds(run: Path) -> float:
    """An expert's training cost: its runs (fine-tuning, then KD) each log their steps."""
    return round(sum(training_seconds(d) for d in sorted(run.iterdir()) if d.is_dir()), 3)


def _gate_variants(cfg: StudyConfig, gated: str) -> dict[str, str]:
    """The gated student's deployments the study scores: name -> the option its spec takes (r=..., keep=...)."""
    out = {f"{gated} r={r}": f"r={r}" for r in cfg.gate_r}
    out.update({f"{gated} keep={k}": f"keep={k}" for k in cfg.gate_keep if k <= 64})
    return out


class _Book:
    """The study's side of the ledger (:mod:`foundry3d.ledger`): which models are read from it, which trained
    run each evaluated model comes from (to record it once scored), and every run's training cost."""

    def __init__(self, cfg: StudyConfig, protocol: list[str], teacher_hash: str) -> None:
        self.cfg, self.protocol, self.teacher_hash = cfg, protocol, teacher_hash
        self.ledger = Ledger(Path(cfg.ledger).expanduser()) if cfg.ledger else None
        self.kept: dict[str, dict[str, Any]] = {}  # evaluated model -> its stored evaluation (results, FLOPs)
        self.origin: dict[str, str] = {}  # evaluated model -> the run (student or expert) it comes from
        self.keys: dict[str, dict[str, Any] | None] = {}
        self.train_seconds: dict[str, float] = {}

    def read(self, run: str, key: dict[str, Any] | None, release: Path, names: list[str]) -> bool:
        """Whether run ``run`` (whose release would be ``release``) is read from the ledger: its weights are not
        here, its entry has the same key and holds every evaluation ``names`` as measured now."""
        if self.ledger is None or key is None or release.exists() or release.parent.exists():
            return False
        entry = self.ledger.get("study", run, key)
        evals = (entry or {}).get("evals", {})
        cfg = self.cfg
        if entry is None or not all(
            n in evals and results_hold(evals[n]["results"], cfg.tasks, cfg.eval, self.protocol, cfg.root)
            for n in names
        ):
            return False
        self.kept.update({n: evals[n] for n in names})
        self.train_seconds[run] = float(entry["seconds"]["train"])
        return True

    def trained(self, run: str, key: dict[str, Any] | None, seconds: Any) -> None:
        """Run ``run`` (a student or expert) has its weights, here or in the ledger under ``key``; its training
        cost from ``seconds()`` unless read."""
        self.keys[run] = key
        if run not in self.train_seconds:
            self.train_seconds[run] = float(seconds())

    def stored(self, name: str) -> dict[str, Any] | None:
        """Model ``name``'s evaluation as the ledger keeps it, when the model was read from it."""
        return self.kept.get(name)

    def write(self, name: str, evaluation: dict[str, Any]) -> None:
        """Record model ``name``'s evaluation (and its run's cost) in the ledger."""
        run = self.origin.get(name)
        key = self.keys.get(run) if run else None
        if self.ledger is None or run is None or key is None:
            return  # teacher, floor and training-free merging are recomputed from the teacher wherever it runs
        record = {"evals": {name: evaluation}, "seconds": {"train": self.train_seconds[run]}}
        self.ledger.put("study", run, key, record)


def _matched_r(teacher: PointTransformer, target: float | None, cfg: StudyConfig) -> int:
    """ToMe/PiToMe merges per block so that the teacher's FLOPs match the s-student's (``target`` FLOPs)."""
    groups = teacher.groups_for(cfg.flops_points)
    x = torch.randn(1, cfg.flops_points, 3, generator=torch.Generator().manual_seed(0))
    if target is None:  # no reference student: the s SuperTokens as the mean token count
        return flops_matched_r(groups, teacher.num_blocks, cfg.supertokens)
    best, err = 0, float("inf")
    for r in range(0, groups // 2 + 1):
        net, _ = resolve(f"tome:{cfg.teacher}?r={r}")
        f = count_flops(net, x, num_groups=groups)["flops"]
        if abs(f - target) < err:
            best, err = r, abs(f - target)
    return best


def _machine() -> dict[str, Any]:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__}
