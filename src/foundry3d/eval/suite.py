"""``foundry3d eval``: one protocol for every model (teacher, floor, any student kind, baseline).

Tasks are ``PROTOCOL:DATASET[@ROOT]``; the protocols are the registered evaluation tasks, one file
each in :mod:`foundry3d.eval.tasks` (``foundry3d eval --help`` lists them). Every headline is measured
on the dataset's *test* split, which no pretraining, distillation or model selection reads; choices
(SVM C, ...) use the training split only. Each result keeps its per-item outcomes, so intervals are
bootstrap 95 % CIs over test items and comparisons between models are paired
(:mod:`foundry3d.eval.results`).

Features are extracted once per (model, dataset content, protocol) and cached on disk; results
accumulate in ``<out>/<name>/results.json`` and a task is reused only when the model hash, the
dataset's content fingerprint and every setting the task reads are unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from foundry3d.config import load_config, to_dict
from foundry3d.data.base import DatasetError
from foundry3d.data.registry import parse_spec
from foundry3d.errors import ConfigError
from foundry3d.eval.context import Context
from foundry3d.eval.results import bootstrap_ci, format_table
from foundry3d.eval.results import compare as compare_results
from foundry3d.eval.task import EvalError, tasks
from foundry3d.files import atomic_write, holds_record, run_folder, user_path
from foundry3d.models.base import PointModel
from foundry3d.models.hub import resolve

DEFAULT_TASKS = ["svm:sh3d16", "svm:kicad33", "fewshot:kicad33", "partseg:kicadparts"]


@dataclass
class EvalSettings:
    """The settings every task shares; each registered task adds its own section (``svm.``, ``fewshot.``, ...)."""

    batch_size: int = 64
    threads: int | None = None
    progress: bool = True
    # "test": train -> test, the held-out headline. "val": fit -> val, a validation split carved from
    # train, for choosing recipes and settings without ever reading a test split.
    splits: Literal["test", "val"] = "test"
    # A folder where evaluations of several models share work across calls and processes: the tokenizer's
    # output for models with the same frozen tokenizer (a teacher and its students) and fidelity's teacher
    # tokens. Large at large clouds (tiny3: about 10 GB for the default tasks at 16,384 points, 0.7 GB at 1,024).
    # Not a protocol setting: a result is the same with or without it, to the bit. None keeps nothing.
    cache_dir: str | None = None

    def validate(self) -> None:
        """Refuse settings no evaluation can run with, one line naming the field and what it expects."""
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 (or null for all cores), got {self.threads}")
        if self.cache_dir is not None and (not self.cache_dir or Path(self.cache_dir).expanduser().is_file()):
            raise ConfigError(f"cache_dir must be a folder (or null to keep nothing), got {self.cache_dir!r}")


def _eval_config() -> type:
    """``EvalSettings`` plus one section per registered task, named after it."""
    sections = [(n, t.Config, dataclasses.field(default_factory=t.Config)) for n, t in tasks().items()]
    cls = dataclasses.make_dataclass("EvalConfig", sections, bases=(EvalSettings,))
    cls.__module__ = __name__
    return cls


def __getattr__(name: str) -> Any:
    """``EvalConfig`` (for ``--show-config`` and imports) is built on first use: building it imports every task."""
    if name == "EvalConfig":
        return _eval_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_task(task: str) -> tuple[str, str, str | None]:
    """``PROTOCOL:DATASET[@ROOT]`` -> (protocol, dataset, root); a setting or split in its place is named."""
    protocols = tasks().names()
    proto, sep, rest = task.partition(":")
    if "=" in task and proto not in protocols:
        raise EvalError(
            f"{task!r} is a setting, not a task: on the command line put KEY=VALUE settings before --tasks "
            "(or after a lone --), e.g. foundry3d eval svm.repeats=5 --model M --tasks svm:sh3d16"
        )
    if not sep or proto not in protocols:
        raise EvalError(
            f"unknown task {task!r}: tasks are PROTOCOL:DATASET[@ROOT] with PROTOCOL in {', '.join(protocols)}; "
            f"the default suite is {', '.join(DEFAULT_TASKS)}"
        )
    name, split, root = parse_spec(rest)
    if split is not None:
        raise EvalError(
            f"task {task!r} names a split ({split!r}): tasks train on the dataset's train split and score "
            f"its test split; write {proto}:{name}"
        )
    return proto, name, root


def verb_help() -> str:
    """The registered tasks, one line each with its protocol (``foundry3d eval --help`` shows it)."""
    lines = [
        textwrap.fill(t.summary(), 100, initial_indent=f"  {n:<10}", subsequent_indent=" " * 12)
        for n, t in tasks().items()
    ]
    return "tasks (PROTOCOL:DATASET):\n" + "\n".join(lines)


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
        tasks: PROTOCOL:DATASET[@ROOT] with PROTOCOL a registered task (svm, fewshot, knn, partseg,
            finetune, fidelity, sceneseg, ...), DATASET a built dataset or your labelled folder:PATH (default:
            svm:sh3d16 svm:kicad33 fewshot:kicad33 partseg:kicadparts).
        config: YAML with protocol settings (EvalConfig fields).
        overrides: dotted KEY=VALUE protocol settings, e.g. fewshot.way=10 or splits=val.
        out: results folder; each model gets <out>/<name>/results.json.
        root: dataset cache folder for the embedded datasets.
        name: subfolder for this model (default: derived from the model spec).
        overwrite: recompute this model's tasks and clear its feature cache.
        compare: instead of evaluating, print the results of a teacher, its floor and students (their
            results.json files or folders) with the encoder gain kept per task; further teachers with their
            floors show their paired difference to the first.
    """
    if compare:
        return compare_results(compare)  # the CLI prints it
    if model is None:
        raise EvalError("eval needs a model (--model SPEC), or --compare RESULTS...")
    # built per call: a task registered at run time has its section
    cfg: Any = load_config(_eval_config(), config, overrides)
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
    cfg: Any,
    task_names: list[str],
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
    ctx = Context(net, info, cfg, folder, root)
    for task, (proto, dname, droot) in zip(task_names, parsed):
        t = tasks().get(proto)()
        settings = _task_settings(t, cfg)
        old = results["tasks"].get(task)
        if old is not None and old.get("settings") == settings and _same_data(t, old, ctx, dname, droot):
            continue  # measured before: same model, same data content, same settings
        t0 = time.time()
        res = t.run(ctx, getattr(cfg, proto), dname, droot)
        if "per_item" in res:
            res["ci95"] = bootstrap_ci(proto, {k: np.asarray(v) for k, v in res["per_item"].items()})
        res["seconds"] = round(time.time() - t0, 1)
        res["settings"] = settings
        results["tasks"][task] = res
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2, default=float)))
    print(format_table({name: results}, task_names))
    return results


def _task_settings(t: Any, cfg: Any) -> dict[str, Any]:
    """The settings a stored result of task ``t`` depends on (its config sections and the splits), as JSON."""
    reads = {k: to_dict(getattr(cfg, k)) for k in t.settings_read()}
    return dict(json.loads(json.dumps({**reads, "splits": cfg.splits}, default=str)))


def results_hold(
    results: dict[str, Any],
    task_names: list[str],
    config: str | Path | dict | None = None,
    overrides: list[str] | dict | None = None,
    root: str | None = None,
) -> bool:
    """Whether stored ``results`` (what :func:`evaluate` returned for some model) hold every task of
    ``task_names`` as ``evaluate`` with this config would measure it now: same settings, same test data
    content. Needs no model: a sweep resumed where a student's weights are gone reads its committed
    results only when nothing they depend on has changed."""
    cfg: Any = load_config(_eval_config(), config, overrides)
    ctx = Context(None, {}, cfg, Path("."), root)  # type: ignore[arg-type]  # data only, no model
    stored = results.get("tasks", {})
    for task in task_names:
        proto, dname, droot = parse_task(task)
        old = stored.get(task)
        t = tasks().get(proto)()
        if old is None or old.get("settings") != _task_settings(t, cfg) or not _same_data(t, old, ctx, dname, droot):
            return False
    return True


def _same_data(t: Any, old: dict[str, Any], ctx: Context, name: str, root: str | None) -> bool:
    """Whether the test data a stored result was computed on is byte-for-byte the data now."""
    try:
        return bool(t.same_data(old, ctx, name, root))
    except DatasetError:
        return False


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(s).name or s)[:60] or "model"


__all__ = [
    "DEFAULT_TASKS",
    "DatasetError",
    "EvalError",
    "EvalSettings",
    "evaluate",
    "results_hold",
    "verb_help",
]  # and EvalConfig, built on use
