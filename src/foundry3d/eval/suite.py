"""``foundry3d eval``: one protocol for every backbone (teacher, Foundry student, baseline).

Tasks are ``PROTOCOL:DATASET[@ROOT]`` with protocols ``svm``, ``fewshot``, ``partseg`` and
``finetune``. Features are extracted once per (model, dataset, split) and cached by model hash.
Results accumulate in ``<out>/<name>/results.json`` (finished tasks are reused unless
``overwrite``), with every number and the exact protocol settings, and print as a table.

Small test splits lie: where a test split has fewer than ``svm.small_test`` shapes, the SVM is
also scored over ``svm.repeats`` repeated stratified splits of train+test (mean +- std); larger
splits get a bootstrap std. A difference inside the spread is not a difference.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import StratifiedShuffleSplit
from torch import nn

from foundry3d.config import load_config, to_dict
from foundry3d.data.base import DatasetError
from foundry3d.data.registry import load_dataset, parse_spec
from foundry3d.data.transforms import Sampling
from foundry3d.eval.features import cached_extract, model_hash
from foundry3d.eval.fewshot import FewShotConfig, fewshot_from_features, fewshot_from_folds
from foundry3d.eval.finetune import FinetuneConfig, finetune_protocol
from foundry3d.eval.metrics import accuracies, mean_std
from foundry3d.eval.partseg import PartSegConfig, partseg_protocol
from foundry3d.eval.svm import C_GRID, fit_svm, svm_probe
from foundry3d.models.checkpoint import atomic_write

PROTOCOLS = ("svm", "fewshot", "partseg", "finetune")
DEFAULT_TASKS = ["svm:sh3d16", "svm:kicad33", "fewshot:kicad33", "partseg:kicadparts"]


@dataclass
class SVMConfig:
    num_points: int = 1024
    sampling: Sampling = "first"
    grid: list[float] = field(default_factory=lambda: list(C_GRID))
    repeats: int = 10
    small_test: int = 500
    published: bool = True  # also report SVC(C=0.012) on raw features, for comparison with papers
    cv_max_samples: int | None = 2000  # choose C by CV on at most this many training shapes (stratified)
    seed: int = 0


@dataclass
class EvalConfig:
    svm: SVMConfig = field(default_factory=SVMConfig)
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    partseg: PartSegConfig = field(default_factory=PartSegConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    batch_size: int = 64
    threads: int | None = None
    progress: bool = True


class EvalError(ValueError):
    """A task, model or dataset that the evaluation cannot use."""


def resolve_model(spec: str | nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """A backbone from a release path, ``embedded`` (the packaged teacher) or ``random:<variant>``.

    A gated student's run-time setting can follow the path: ``PATH?r=0.7`` (threshold) or
    ``PATH?keep=8`` (the 8 lowest-scoring tokens bypass DSO, compact)."""
    runtime: dict[str, float] = {}
    if isinstance(spec, str) and "?" in spec:
        spec, _, query = spec.partition("?")
        for item in query.split("&"):
            key, _, value = item.partition("=")
            if key not in ("r", "keep"):
                raise EvalError(f"unknown model option {key!r} in {spec}?{query}; options: r=<0..1>, keep=<int>")
            runtime[key] = float(value) if key == "r" else int(value)
    if isinstance(spec, nn.Module):
        model, name = spec, type(spec).__name__
    elif spec.startswith("random:"):
        from foundry3d.models.registry import create_model

        torch.manual_seed(0)
        model, name = create_model(spec.split(":", 1)[1]), spec
    else:
        from foundry3d.train.distill import load_teacher

        if spec == "embedded":
            model = load_teacher("embedded")
        else:
            from foundry3d.models.checkpoint import load

            model = load(spec)
        name = spec
    for attr in ("forward_features", "num_features"):
        if not hasattr(model, attr):
            raise EvalError(f"{name} has no {attr}: evaluated backbones must expose forward_features/num_features")
    if runtime:
        if getattr(model, "gate", None) is None:
            raise EvalError(f"{name} has no gate: r/keep only apply to students distilled with student.gate=true")
        model.runtime = runtime  # read by FoundryStudent.forward_features
        name = f"{name}?" + "&".join(f"{k}={v}" for k, v in runtime.items())
    model.eval()
    info = {
        "model": name,
        "kind": getattr(model, "kind", type(model).__name__),
        "hash": model_hash(model),
        "params": int(sum(p.numel() for p in model.parameters())),
        "width": int(model.num_features // 2),
    }
    return model, info


def parse_task(task: str) -> tuple[str, str, str | None]:
    proto, sep, rest = task.partition(":")
    if not sep or proto not in PROTOCOLS:
        raise EvalError(
            f"unknown task {task!r}: tasks are PROTOCOL:DATASET[@ROOT] with PROTOCOL in {', '.join(PROTOCOLS)}; "
            f"the default suite is {', '.join(DEFAULT_TASKS)}"
        )
    name, _, root = parse_spec(rest)
    return proto, name, root


class Runner:
    def __init__(self, model: nn.Module, info: dict, cfg: EvalConfig, folder: Path, root: str | None) -> None:
        self.model, self.info, self.cfg, self.folder, self.root = model, info, cfg, folder, root

    def data(self, name: str, split: str, root: str | None) -> Any:
        return load_dataset(f"{name}:{split}", root=root or self.root)

    def features(self, ds: Any, num_points: int, sampling: Sampling = "first") -> dict[str, np.ndarray]:
        return cached_extract(
            self.model,
            ds,
            self.folder / "features",
            num_points=num_points,
            sampling=sampling,
            batch_size=self.cfg.batch_size,
            progress=self.cfg.progress,
            desc=f"{ds.name}:{ds.split}",
        )

    def svm(self, name: str, root: str | None) -> dict[str, Any]:
        c = self.cfg.svm
        tr, te = self.data(name, "train", root), self.data(name, "test", root)
        a, b = self.features(tr, c.num_points, c.sampling), self.features(te, c.num_points, c.sampling)
        clf, used = fit_svm(
            a["features"], a["labels"], "standardized", seed=c.seed, grid=tuple(c.grid), cv_max_samples=c.cv_max_samples
        )
        pred = clf.predict(b["features"])
        out: dict[str, Any] = {**accuracies(b["labels"], pred), **used}
        if len(te) < c.small_test:  # small test split: repeated stratified splits of train+test
            x = np.concatenate([a["features"], b["features"]])
            y = np.concatenate([a["labels"], b["labels"]])
            split = StratifiedShuffleSplit(c.repeats, test_size=len(te) / len(y), random_state=c.seed)
            accs = [svm_probe(x[i], y[i], x[j], y[j], C=used["C"], seed=c.seed)["acc"] for i, j in split.split(x, y)]
            out["acc_mean"], out["acc_std"] = mean_std(accs)
            out["acc_repeats"] = accs
            out["spread"] = f"{c.repeats} repeated stratified splits of train+test (C fixed by CV on train)"
        else:  # bootstrap over test shapes
            rng = np.random.default_rng(c.seed)
            hit = (pred == b["labels"]).astype(np.float64)
            out["acc_std"] = float(np.std([hit[rng.integers(0, len(hit), len(hit))].mean() for _ in range(1000)]))
            out["spread"] = "bootstrap std over test shapes (1000 resamples)"
        if c.published:
            out["acc_published"] = svm_probe(a["features"], a["labels"], b["features"], b["labels"], "published")["acc"]
        out.update(
            train_shapes=len(tr),
            test_shapes=len(te),
            num_points=c.num_points,
            sampling=c.sampling,
            dataset_version=te.version,
        )
        return out

    def fewshot(self, name: str, root: str | None) -> dict[str, Any]:
        c = self.cfg.fewshot
        if name == "modelnet40_fewshot":  # the official Point-BERT folds
            from foundry3d.data.benchmarks.modelnet import load_fewshot_fold

            folds = []
            for f in range(c.folds):
                s, q = load_fewshot_fold(Path(root or self.root or "."), c.way, c.shot, f)
                fs, fq = self.features(s, 1024), self.features(q, 1024)
                folds.append((fs["features"], fs["labels"], fq["features"], fq["labels"]))
            res = fewshot_from_folds(folds, c)
        else:
            tr, te = self.data(name, "train", root), self.data(name, "test", root)
            sv = self.cfg.svm  # the SVM's clouds, so both protocols share one feature extraction
            a, b = self.features(tr, sv.num_points, sv.sampling), self.features(te, sv.num_points, sv.sampling)
            res = fewshot_from_features(a["features"], a["labels"], b["features"], b["labels"], c)
        return {**res, "way": c.way, "shot": c.shot, "query": c.query, "fold_seed": c.seed, "method": c.method}

    def partseg(self, name: str, root: str | None) -> dict[str, Any]:
        if not hasattr(self.model, "forward_intermediates"):
            raise EvalError(f"{self.info['model']} has no forward_intermediates: part segmentation needs block outputs")
        train = self.data(name, "trainval" if name == "shapenetpart" else "train", root)
        test = self.data(name, "test", root)
        res = partseg_protocol(
            self.model, train, test, self.cfg.partseg, self.folder / f"partseg-{name}", progress=self.cfg.progress
        )
        return {**res, "dataset_version": test.version, "head_steps": self.cfg.partseg.engine.steps}

    def finetune(self, name: str, root: str | None) -> dict[str, Any]:
        tr, te = self.data(name, "train", root), self.data(name, "test", root)
        return finetune_protocol(self.model, tr, te, self.cfg.finetune, self.folder / f"finetune-{name}")


PRIMARY = {"svm": "acc", "fewshot": "acc", "partseg": "class_miou", "finetune": "acc"}


def evaluate(
    model: str | nn.Module,
    tasks: list[str] | None = None,
    config: str | Path | dict | None = None,
    overrides: list[str] | dict | None = None,
    out: str | Path = "runs/eval",
    root: str | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``tasks`` (default: the four-task suite); prints a table, writes JSON."""
    cfg = load_config(EvalConfig, config, overrides)
    tasks = list(tasks or DEFAULT_TASKS)
    parsed = [parse_task(t) for t in tasks]  # fail on a bad task name before any work
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    net, info = resolve_model(model)
    name = name or _safe(info["model"])
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    results = json.loads(path.read_text()) if path.exists() and not overwrite else {}
    if results and results.get("model", {}).get("hash") != info["hash"]:
        raise EvalError(
            f"{path} holds results of another model ({results['model'].get('model')}); "
            f"use another --out/--name or --overwrite"
        )
    results.update(model=info, settings=to_dict(cfg))
    results.setdefault("tasks", {})
    runner = Runner(net, info, cfg, folder, root)
    for task, (proto, dname, droot) in zip(tasks, parsed):
        settings = json.loads(json.dumps(to_dict(getattr(cfg, proto)), default=str))
        if task in results["tasks"] and not overwrite and results["tasks"][task].get("settings") == settings:
            continue  # measured before with the same protocol settings
        t0 = time.time()
        res = getattr(runner, proto)(dname, droot)
        res["seconds"] = round(time.time() - t0, 1)
        res["settings"] = settings
        results["tasks"][task] = res
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2, default=float)))
    print(format_table({name: results}, tasks))
    return results


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(s).name or s)[:60] or "model"


def primary(res: dict[str, Any], proto: str) -> float | None:
    """The headline number: the repeated-split mean where one exists, else the single score."""
    key = PRIMARY[proto]
    return res.get(f"{key}_mean", res.get(key))


def spread(res: dict[str, Any], proto: str) -> float | None:
    """The headline number's spread (None where there is none, e.g. a single head seed)."""
    std = res.get(f"{PRIMARY[proto]}_std")
    return None if std is None else float(std)


def format_score(res: dict[str, Any], proto: str) -> str:
    """``84.6 ± 3.6`` (in %), ``-`` when the task has no result."""
    v, std = primary(res, proto), spread(res, proto)
    if v is None:
        return "-"
    return f"{100 * v:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def format_table(runs: dict[str, dict[str, Any]], tasks: list[str] | None = None) -> str:
    tasks = tasks or sorted({t for r in runs.values() for t in r.get("tasks", {})})
    names = list(runs)
    w = max(26, *(len(t) for t in tasks))
    lines = [f"{'task':<{w}} " + " ".join(f"{n[:22]:>22}" for n in names)]
    for t in tasks:
        proto = t.split(":", 1)[0]
        cells = [format_score(runs[n].get("tasks", {}).get(t, {}), proto) for n in names]
        lines.append(f"{t + ' (' + PRIMARY[proto] + ')':<{w}} " + " ".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def load_results(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    p = p / "results.json" if p.is_dir() else p
    if not p.exists():
        raise EvalError(f"{p} does not exist: pass a results.json written by foundry3d eval (or its folder)")
    return json.loads(p.read_text())


def compare(a: str | Path, b: str | Path) -> str:
    """Two result files side by side with the retention ratio B/A for every shared task."""
    ra, rb = load_results(a), load_results(b)
    tasks = [t for t in ra["tasks"] if t in rb["tasks"]]
    if not tasks:
        raise EvalError(f"{a} and {b} share no task")
    na, nb = ra["model"]["model"], rb["model"]["model"]
    lines = [f"{'task':<34} {'A':>14} {'B':>14} {'B/A':>8}", f"A = {na}", f"B = {nb}"]
    for t in tasks:
        proto = t.split(":", 1)[0]
        key = PRIMARY[proto]
        va, vb = primary(ra["tasks"][t], proto), primary(rb["tasks"][t], proto)
        lines.append(
            f"{t + ' (' + key + ')':<34} {format_score(ra['tasks'][t], proto):>14} "
            f"{format_score(rb['tasks'][t], proto):>14} {vb / va:>8.3f}"
        )
    return "\n".join(lines)


__all__ = ["DEFAULT_TASKS", "DatasetError", "EvalConfig", "EvalError", "compare", "evaluate"]
