"""``foundry3d eval``: one protocol for every model (teacher, floor, any student kind, baseline).

Tasks are ``PROTOCOL:DATASET[@ROOT]`` with protocols ``svm``, ``fewshot``, ``partseg``,
``finetune`` and ``fidelity``. Every headline is measured on the dataset's *test* split, which no
pretraining, distillation or model selection reads; choices (SVM C, ...) use the training split
only. Each result keeps its per-item outcomes, so intervals are bootstrap 95 % CIs over test items
and comparisons between models are paired (:mod:`foundry3d.eval.results`).

Features are extracted once per (model, dataset content, protocol) and cached on disk; results
accumulate in ``<out>/<name>/results.json`` and a task is reused only when the model hash, the
dataset's content fingerprint and every setting the task reads are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from foundry3d.config import load_config, to_dict
from foundry3d.data.base import DatasetError
from foundry3d.data.benchmarks.modelnet import load_fewshot_fold
from foundry3d.data.registry import load_dataset, parse_spec
from foundry3d.data.transforms import Sampling
from foundry3d.errors import ConfigError, Foundry3DError
from foundry3d.eval.fewshot import FewShotConfig, fewshot_from_features, fewshot_from_folds
from foundry3d.eval.fidelity import FidelityConfig, fidelity_protocol
from foundry3d.eval.finetune import FinetuneConfig, finetune_protocol
from foundry3d.eval.metrics import accuracies
from foundry3d.eval.partseg import PartSegConfig, partseg_protocol
from foundry3d.eval.results import PRIMARY, bootstrap_ci, format_table
from foundry3d.eval.results import compare as compare_results
from foundry3d.eval.sceneseg import SceneSegConfig, sceneseg_protocol
from foundry3d.eval.svm import C_GRID, fit_svm, svm_probe
from foundry3d.files import atomic_write, holds_record, run_folder, user_path
from foundry3d.models.base import PointModel
from foundry3d.models.baselines import MergedBackbone
from foundry3d.models.features import extract
from foundry3d.models.floor import Floor
from foundry3d.models.hub import EMBEDDED, load_teacher, model_hash, resolve, teacher_config

PROTOCOLS = ("svm", "fewshot", "partseg", "finetune", "fidelity", "sceneseg")
DEFAULT_TASKS = ["svm:sh3d16", "svm:kicad33", "fewshot:kicad33", "partseg:kicadparts"]


@dataclass
class SVMConfig:
    num_points: int = 1024
    sampling: Sampling = "first"
    grid: list[float] = field(default_factory=lambda: list(C_GRID))
    published: bool = True  # also report SVC(C=0.012) on raw features, for comparison with papers
    cv_max_samples: int | None = 2000  # choose C by CV on at most this many training shapes (stratified)
    seed: int = 0

    def validate(self) -> None:
        if self.num_points < 32:
            raise ConfigError(f"svm.num_points must be >= 32 (at least one patch), got {self.num_points}")
        if not self.grid or not all(math.isfinite(c) and c > 0 for c in self.grid):
            raise ConfigError(f"svm.grid must be a non-empty list of finite C values > 0, got {self.grid}")
        if self.cv_max_samples is not None and self.cv_max_samples < 10:
            raise ConfigError(f"svm.cv_max_samples must be >= 10 (or null), got {self.cv_max_samples}")


@dataclass
class EvalConfig:
    svm: SVMConfig = field(default_factory=SVMConfig)
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    partseg: PartSegConfig = field(default_factory=PartSegConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)
    sceneseg: SceneSegConfig = field(default_factory=SceneSegConfig)
    batch_size: int = 64
    threads: int | None = None
    progress: bool = True
    # "test": train -> test, the held-out headline. "val": fit -> val, a validation split carved from
    # train, for choosing recipes and settings without ever reading a test split.
    splits: Literal["test", "val"] = "test"

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 (or null for all cores), got {self.threads}")


# The settings each protocol reads (a result is reused only if all of them are unchanged).
READS = {
    "svm": ("svm",),
    "fewshot": ("fewshot", "svm"),  # few-shot shares the SVM's feature extraction
    "partseg": ("partseg",),
    "finetune": ("finetune",),
    "fidelity": ("fidelity",),
    "sceneseg": ("sceneseg",),
}


class EvalError(Foundry3DError, ValueError):
    """A task, model or dataset that the evaluation cannot use."""


def parse_task(task: str) -> tuple[str, str, str | None]:
    proto, sep, rest = task.partition(":")
    if "=" in task and proto not in PROTOCOLS:
        raise EvalError(
            f"{task!r} is a setting, not a task: on the command line put KEY=VALUE settings before --tasks "
            "(or after a lone --), e.g. foundry3d eval svm.repeats=5 --model M --tasks svm:sh3d16"
        )
    if not sep or proto not in PROTOCOLS:
        raise EvalError(
            f"unknown task {task!r}: tasks are PROTOCOL:DATASET[@ROOT] with PROTOCOL in {', '.join(PROTOCOLS)}; "
            f"the default suite is {', '.join(DEFAULT_TASKS)}"
        )
    name, split, root = parse_spec(rest)
    if split is not None:
        raise EvalError(
            f"task {task!r} names a split ({split!r}): tasks train on the dataset's train split and score "
            f"its test split; write {proto}:{name}"
        )
    return proto, name, root


def _hits(y: np.ndarray, pred: np.ndarray) -> dict[str, list]:
    return {"score": (np.asarray(y) == np.asarray(pred)).astype(np.int8).tolist()}


class Runner:
    def __init__(self, model: PointModel, info: dict, cfg: EvalConfig, folder: Path, root: str | None) -> None:
        self.model, self.info, self.cfg, self.folder, self.root = model, info, cfg, folder, root

    def data(self, name: str, split: str, root: str | None) -> Any:
        if self.cfg.splits == "val":
            split = {"train": "fit", "trainval": "fit", "test": "val"}.get(split, split)
        spec = f"{name}:{split}" + (f"@{root}" if root else "")
        return load_dataset(spec, root=self.root)

    def labelled(self, name: str, split: str, root: str | None) -> Any:
        """``data`` without unlabelled items, for the tasks that train on labels (a folder's root-level files)."""
        ds = self.data(name, split, root)
        return ds.labelled() if hasattr(ds, "labelled") else ds

    def features(self, ds: Any, num_points: int, sampling: Sampling = "first") -> dict[str, np.ndarray]:
        key = json.dumps(
            {"model": self.info["hash"], "data": ds.fingerprint(), "points": num_points, "sampling": sampling},
            sort_keys=True,
        )
        path = self.folder / "features" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    cached = {k: z[k] for k in z.files}
                if {"features", "labels"} <= cached.keys():
                    return cached
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
                pass  # a truncated, key-less or corrupt cache entry is recomputed, never trusted
            path.unlink(missing_ok=True)
        out = extract(
            self.model,
            ds,
            num_points=num_points,
            sampling=sampling,
            batch_size=self.cfg.batch_size,
            progress=self.cfg.progress,
            desc=f"{ds.name}:{ds.split}",
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), **out))  # type: ignore[arg-type]  # noqa: SIM115
        return out

    def svm(self, name: str, root: str | None) -> dict[str, Any]:
        c = self.cfg.svm
        tr, te = self.labelled(name, "train", root), self.labelled(name, "test", root)
        have = sorted({int(v) for v in tr.labels()})
        if len(have) < 2:
            names = [tr.classes[i] for i in have] if tr.classes else have
            raise EvalError(
                f"svm:{tr.name}: its {tr.split} split holds labelled shapes of {len(have)} class(es) {names}; "
                "a classifier needs at least 2 classes with shapes in train (a class of one file may sit wholly "
                "in test)"
            )
        a, b = self.features(tr, c.num_points, c.sampling), self.features(te, c.num_points, c.sampling)
        clf, used = fit_svm(
            a["features"], a["labels"], "standardized", seed=c.seed, grid=tuple(c.grid), cv_max_samples=c.cv_max_samples
        )
        pred = clf.predict(b["features"])
        out: dict[str, Any] = {**accuracies(b["labels"], pred), **used, "per_item": _hits(b["labels"], pred)}
        if c.published:
            out["acc_published"] = svm_probe(a["features"], a["labels"], b["features"], b["labels"], "published")["acc"]
        out.update(train_shapes=len(tr), test_shapes=len(te), num_points=c.num_points, sampling=c.sampling)
        return {**out, **_data_ids(te)}

    def fewshot(self, name: str, root: str | None) -> dict[str, Any]:
        c = self.cfg.fewshot
        if name == "modelnet40_fewshot":  # the official Point-BERT folds
            folds = []
            for f in range(c.folds):
                s, q = load_fewshot_fold(Path(root or self.root or "."), c.way, c.shot, f)
                fs, fq = self.features(s, 1024), self.features(q, 1024)
                folds.append((fs["features"], fs["labels"], fq["features"], fq["labels"]))
            res = fewshot_from_folds(folds, c)
            ids: dict[str, Any] = {"dataset_version": f"modelnet40_fewshot {c.way}way_{c.shot}shot"}
        else:
            tr, te = self.labelled(name, "train", root), self.labelled(name, "test", root)
            sv = self.cfg.svm  # the SVM's clouds, so both protocols share one feature extraction
            a, b = self.features(tr, sv.num_points, sv.sampling), self.features(te, sv.num_points, sv.sampling)
            res = fewshot_from_features(a["features"], a["labels"], b["features"], b["labels"], c)
            ids = _data_ids(te)
        res["per_item"] = {"score": res["folds"]}
        return {**res, "way": c.way, "shot": c.shot, "query": c.query, "fold_seed": c.seed, "method": c.method, **ids}

    def partseg(self, name: str, root: str | None) -> dict[str, Any]:
        if not hasattr(self.model, "forward_intermediates") and self.cfg.partseg.features == "blocks":
            raise EvalError(f"{self.info['model']} has no forward_intermediates: use partseg.features=output")
        train = self.data(name, "trainval" if name == "shapenetpart" else "train", root)
        test = self.data(name, "test", root)
        res = partseg_protocol(
            self.model, train, test, self.cfg.partseg, self.folder / f"partseg-{name}", progress=self.cfg.progress
        )
        return {**res, "head_steps": self.cfg.partseg.engine.steps, **_data_ids(test)}

    def finetune(self, name: str, root: str | None) -> dict[str, Any]:
        tr, te = self.data(name, "train", root), self.data(name, "test", root)
        res = finetune_protocol(self.model, tr, te, self.cfg.finetune, self.folder / f"finetune-{name}")
        return {**res, **_data_ids(te)}

    def sceneseg(self, name: str, root: str | None) -> dict[str, Any]:
        tr, te = self.data(name, "train", root), self.data(name, "test", root)
        res = sceneseg_protocol(self.model, tr, te, self.cfg.sceneseg, self.folder / f"sceneseg-{name}")
        return {**res, **_data_ids(te)}

    def fidelity(self, name: str, root: str | None) -> dict[str, Any]:
        c = self.cfg.fidelity
        teacher, spec = reference_teacher(self.model, c.teacher)
        te = self.data(name, "test", root)
        res = fidelity_protocol(self.model, teacher, te, c)
        return {**res, "teacher": spec, "teacher_hash": model_hash(teacher), **_data_ids(te)}


def _data_ids(ds: Any) -> dict[str, str]:
    return {"dataset_version": ds.version, "dataset_fingerprint": ds.fingerprint()}


def reference_teacher(model: PointModel, spec: str) -> tuple[PointModel, str]:
    """The teacher a fidelity task compares with: ``spec``, or (``auto``) the model itself when it is
    a backbone, the backbone under a floor or merged teacher, or a student's own embedded teacher."""
    if spec != "auto":
        return load_teacher(spec), spec
    inner = getattr(model, "model", model)
    if getattr(inner, "kind", "") == "backbone":
        return inner, "itself"
    if isinstance(inner, (Floor, MergedBackbone)):  # floor, merged teacher
        return inner.backbone, "its backbone"
    want = getattr(getattr(inner, "cfg", None), "teacher_hash", "")
    for key in EMBEDDED.names():
        try:
            t = load_teacher(f"embedded:{key}")
        except (ValueError, OSError):
            continue
        if getattr(t, "release_hash", "") == want:
            return t, f"embedded:{key}"
    raise EvalError(
        "fidelity needs the student's teacher: pass fidelity.teacher=PATH (its teacher is not an embedded one; "
        f"teacher hash {want[:16]}, teacher config {teacher_config(inner).name})"
    )


def evaluate(
    model: str | nn.Module | None = None,
    tasks: list[str] | None = None,
    config: str | Path | dict | None = None,
    overrides: list[str] | dict | None = None,
    out: str | Path = "runs/eval",
    root: str | None = None,
    name: str | None = None,
    overwrite: bool = False,
    compare: list[str] | None = None,
) -> dict[str, Any] | str:
    """Evaluate a model on held-out tasks (scores with 95 % CIs), or compare evaluated models.

    Args:
        model: release folder, embedded[:NAME], random:VARIANT, floor:SPEC, tome:SPEC?r=N, or SPEC?r=0.7
            for a gated student at threshold r.
        tasks: PROTOCOL:DATASET[@ROOT] with PROTOCOL svm, fewshot, partseg, finetune, fidelity or sceneseg,
            DATASET a built dataset or your labelled folder:PATH (default:
            svm:sh3d16 svm:kicad33 fewshot:kicad33 partseg:kicadparts).
        config: YAML with protocol settings (EvalConfig fields).
        overrides: dotted KEY=VALUE protocol settings, e.g. fewshot.way=10 or splits=val.
        out: results folder; each model gets <out>/<name>/results.json.
        root: dataset cache folder for the embedded datasets.
        name: subfolder for this model (default: derived from the model spec).
        overwrite: recompute this model's tasks and clear its feature cache.
        compare: instead of evaluating, print the results of a teacher, its floor and students (their
            results.json files or folders) with the encoder gain kept per task.
    """
    if compare:
        return compare_results(compare)  # the CLI prints it
    if model is None:
        raise EvalError("eval needs a model (--model SPEC), or --compare RESULTS...")
    cfg = load_config(EvalConfig, config, overrides)
    tasks = list(tasks or DEFAULT_TASKS)
    parsed = [parse_task(t) for t in tasks]  # fail on a bad task name before any work
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    net, info = resolve(model)
    name = name or _safe(info["model"])
    if name in (".", "..") or "/" in name or "\\" in name:
        raise EvalError(f"--name {name!r} must be a plain folder name (no path separators)")
    if user_path(out).exists() and not user_path(out).is_dir():
        raise EvalError(f"--out {out} is an existing file: expected a folder for the results")
    with run_folder(
        user_path(out) / name, "eval", EVAL_FILES, overwrite, legacy=holds_record("results.json", "tasks")
    ) as folder:
        return _evaluate(net, info, cfg, tasks, parsed, folder, root, name)


EVAL_FILES = ("results.json", "features")  # what eval writes into a model's folder (all --overwrite removes)


def _evaluate(
    net: PointModel,
    info: dict[str, Any],
    cfg: EvalConfig,
    tasks: list[str],
    parsed: list[tuple[str, str, str | None]],
    folder: Path,
    root: str | None,
    name: str,
) -> dict[str, Any]:
    path = folder / "results.json"
    results: dict[str, Any] = {}
    if path.exists():
        try:
            results = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            results = {}  # a corrupt results file is recomputed, never trusted
            print(f"foundry3d eval: {path} was corrupt; recomputing its tasks")
    if results and results.get("model", {}).get("hash") != info["hash"]:
        raise EvalError(
            f"{path} holds results of another model ({results['model'].get('model')}); "
            f"use another --out/--name or --overwrite"
        )
    results.update(model=info, settings=to_dict(cfg))
    results.setdefault("tasks", {})
    runner = Runner(net, info, cfg, folder, root)
    for task, (proto, dname, droot) in zip(tasks, parsed):
        reads = {k: to_dict(getattr(cfg, k)) for k in READS[proto]}
        settings = json.loads(json.dumps({**reads, "splits": cfg.splits}, default=str))
        old = results["tasks"].get(task)
        if old is not None and old.get("settings") == settings and _same_data(old, runner, proto, dname, droot):
            continue  # measured before: same model, same data content, same settings
        t0 = time.time()
        res = getattr(runner, proto)(dname, droot)
        if "per_item" in res:
            res["ci95"] = bootstrap_ci(proto, {k: np.asarray(v) for k, v in res["per_item"].items()})
        res["seconds"] = round(time.time() - t0, 1)
        res["settings"] = settings
        results["tasks"][task] = res
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2, default=float)))
    print(format_table({name: results}, tasks))
    return results


def _same_data(old: dict[str, Any], runner: Runner, proto: str, name: str, root: str | None) -> bool:
    """Whether the test data a stored result was computed on is byte-for-byte the data now."""
    fp = old.get("dataset_fingerprint")
    if fp is None:
        return proto == "fewshot" and name == "modelnet40_fewshot" and "dataset_version" in old
    try:
        read = runner.labelled if proto in ("svm", "fewshot") else runner.data
        return fp == read(name, "test", root).fingerprint()
    except DatasetError:
        return False


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(s).name or s)[:60] or "model"


__all__ = ["DEFAULT_TASKS", "PRIMARY", "DatasetError", "EvalConfig", "EvalError", "evaluate"]
