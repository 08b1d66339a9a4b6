"""What an evaluation task is, and the registry every task adds itself to.

A task (``svm``, ``fewshot``, ``knn``, ...) is one file in :mod:`foundry3d.eval.tasks` holding its
settings (a dataclass: the ``<name>.`` section of ``foundry3d eval``'s config), ``run`` (train on the
dataset's train split, score its test split), the key and label of its headline metric, the statistic
the bootstrap resamples, and the protocol in its docstring. The runner, the results, the tables and
the CLI's help read all of it from here, so adding a task is adding one file.

This module stays light (no torch, no scikit-learn): results and reports import it, and the task
files are imported only when a task is first looked up.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from foundry3d.errors import Foundry3DError
from foundry3d.registry import Registry

if TYPE_CHECKING:
    from foundry3d.eval.context import Context

Items = dict[str, np.ndarray]


class EvalError(Foundry3DError, ValueError):
    """A task, model or dataset that the evaluation cannot use."""


class EvalTask:
    """One evaluation protocol. Subclasses set the class attributes and ``run``; the docstring is the
    protocol text shown by ``foundry3d eval --help`` and the reports."""

    name: ClassVar[str]
    Config: ClassVar[type]  # its settings (a dataclass with ``validate``), the eval config's section ``name``
    metric: ClassVar[str]  # key of the headline in a result ("acc", "r2", ...)
    metric_label: ClassVar[str]  # how tables name it ("acc", "class mIoU", "R²")
    label: ClassVar[str]  # how tables name the protocol after the dataset ("SVM", "seg.")
    scale: ClassVar[float] = 100.0  # tables show the metric times this (points) ...
    digits: ClassVar[int] = 1  # ... with this many decimals
    reads: ClassVar[tuple[str, ...]] = ()  # other sections whose settings change its result (few-shot: svm's clouds)
    labelled: ClassVar[bool] = False  # trains on labels only: reads the labelled items of a folder

    def run(self, ctx: Context, cfg: Any, dataset: str, root: str | None) -> dict[str, Any]:
        """Score ``ctx.model`` on ``dataset``: a dict with ``metric``, ``per_item`` (what ``statistic``
        resamples) and whatever else identifies the protocol and the data."""
        raise NotImplementedError

    @staticmethod
    def statistic(items: Items, idx: np.ndarray) -> float:
        """The headline on test items ``idx`` from the per-item outcomes (default: the mean score)."""
        return float(items["score"][idx].mean())

    def same_data(self, old: dict[str, Any], ctx: Context, dataset: str, root: str | None) -> bool:
        """Whether the test data a stored result was computed on is byte-for-byte the data now."""
        fp = old.get("dataset_fingerprint")
        if fp is None:
            return False
        read = ctx.labelled if self.labelled else ctx.data
        return bool(fp == read(dataset, "test", root).fingerprint())

    @classmethod
    def settings_read(cls) -> tuple[str, ...]:
        """The config sections a stored result depends on."""
        return (cls.name, *cls.reads)

    @classmethod
    def summary(cls) -> str:
        """The protocol in one line (the docstring's first paragraph)."""
        return " ".join((cls.__doc__ or cls.name).strip().split("\n\n")[0].split())


TASKS: Registry[type[EvalTask]] = Registry("evaluation task")
_REQUIRED = ("name", "Config", "metric", "metric_label", "label")


def register_task(cls: type[EvalTask]) -> type[EvalTask]:
    """Class decorator: add a task under its ``name`` (every required attribute must be set)."""
    missing = [a for a in _REQUIRED if not hasattr(cls, a)]
    if missing:
        raise EvalError(f"evaluation task {cls.__name__} does not set {', '.join(missing)}")
    TASKS.register(cls.name, cls)
    return cls


def tasks() -> Registry[type[EvalTask]]:
    """Every task: imports each module of :mod:`foundry3d.eval.tasks` once (each registers itself)."""
    if not _loaded:
        from foundry3d.eval import tasks as package

        for mod in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{mod.name}")
        _loaded.append(True)
    return TASKS


_loaded: list[bool] = []


def statistic(name: str) -> Callable[[Items, np.ndarray], float]:
    """f(per-item arrays, item indices) -> the task's headline on those items."""
    return tasks().get(name).statistic


def metric(name: str) -> str:
    """The key of the task's headline in its result."""
    return tasks().get(name).metric


def scale_digits(name: str) -> tuple[float, int]:
    """How the task's headline is shown: (multiplier, decimals), e.g. (100, 1) for accuracy in points."""
    t = tasks().get(name)
    return t.scale, t.digits
