"""A committed ledger of what the sweep's students scored, so that a long sweep survives losing its machine.

The token-count sweep trains and evaluates dozens of students over many CPU hours, more than one session's
machine holds. A student's weights (megabytes each) cannot be committed, but what the sweep needs from it
can: its evaluation (scores with per-item arrays) and its costs. The ledger keeps those in one small JSON
file per cloud size, keyed by everything that determines the student's weights: the teacher's weights
hash, the resolved distillation config (paths left out: where a cache or dataset lives changes nothing),
the content of every training dataset, the torch version and the thread count (the engine is deterministic
at a fixed thread count: ``--resume`` is bit-identical by test). A sweep resumed where a student's run
folder is gone reads its entry instead of retraining, only when that key matches and the stored results
hold every task as the evaluation would measure it now (same settings, same test data content,
:func:`foundry3d.eval.suite.results_hold`); otherwise it trains and evaluates the student as before.
Each entry also keeps the weights hash the student had, so a retrained student can be checked against it: on
one machine the same key gives the same weights (tested); on another CPU the kernels may round differently, so
a student trained again there can differ by as much as floating-point noise moves training, which is part of
the seed-to-seed spread the sweep reports. The ledger does not hide such a difference, it records which weights
each score came from.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from foundry3d.config import apply_overrides, load_config, to_dict
from foundry3d.data.registry import load_dataset, parse_spec
from foundry3d.errors import ConfigError
from foundry3d.files import atomic_write, slug
from foundry3d.train.distill import DistillConfig
from foundry3d.train.expert import ExpertConfig

FORMAT = "foundry3d-sweep-ledger"
# settings that say where things live, not what is computed (a cache folder, the dataset folder: the
# datasets' content is in the key instead)
PATH_KEYS = (("data", "root"), ("data", "cache_dir"))
LOCK = ".foundry3d-lock"  # the same name as a run folder's lock (ignored by git)
CLAIMS = ".foundry3d-claims"  # one lock file per model being trained from this ledger (ignored by git)


@dataclass
class Ledger:
    """The entries of one folder: one file per group (``points<N>`` for a sweep size, ``study`` for the study's
    students and experts), each ``{name: entry}``."""

    folder: Path
    _data_fp: dict[tuple[str, str | None], str] = field(default_factory=dict)

    def path(self, group: str) -> Path:
        """The file of ``group``."""
        return self.folder / f"{group}.json"

    def entries(self, group: str) -> dict[str, Any]:
        """Every entry of ``group``; a file of another format is an error, never overwritten."""
        p = self.path(group)
        if not p.exists():
            return {}
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"sweep ledger {p}: not a readable JSON file ({e}); expected a {FORMAT} file") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"sweep ledger {p}: expected a {FORMAT} file, got another JSON file")
        return dict(data["students"])

    def key(self, teacher_hash: str, settings: dict[str, Any], data: list[str], root: str | None) -> dict[str, Any]:
        """What determines a model's weights (see the module's docstring), and its hash under ``"hash"``.

        Args:
            teacher_hash: the teacher's weights hash.
            settings: the run's resolved config, without the settings that only say where things live.
            data: the training dataset specs, hashed by content.
            root: the dataset cache folder they are read from.
        """
        what = {
            "teacher_hash": teacher_hash,
            "settings": settings,
            "data": {spec: self._fingerprint(spec, root) for spec in data},
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        text = json.dumps(what, sort_keys=True, default=str)
        return {**what, "hash": hashlib.sha256(text.encode()).hexdigest()[:16]}

    def distill_key(
        self, teacher_hash: str, recipe: str | dict, overrides: list[str], root: str | None
    ) -> dict[str, Any]:
        """The key of a distilled student: its resolved recipe (paths left out) and its training data."""
        cfg = to_dict(load_config(DistillConfig, recipe, overrides))
        for section, name in PATH_KEYS:
            cfg[section].pop(name, None)
        return self.key(teacher_hash, cfg, list(cfg["data"]["datasets"]), root)

    def expert_key(self, teacher_hash: str, task: str, teacher: str, overrides: list[str]) -> dict[str, Any]:
        """The key of an expert (fine-tuned teacher, then logit KD): its resolved recipe (without ``root``) and the
        training split of its task's dataset."""
        # resolved as expert() does: the overrides, then the task and teacher it is called with
        cfg = to_dict(load_config(ExpertConfig, apply_overrides({}, overrides), {"task": task, "teacher": teacher}))
        root = cfg.pop("root", None)
        name, _, at = parse_spec(task.split(":", 1)[1])
        return self.key(teacher_hash, cfg, [f"{name}:train" + (f"@{at}" if at else "")], root)

    def _fingerprint(self, spec: str, root: str | None) -> str:
        """Content hash of a training dataset (``NAME:SPLIT*K`` repeats K times: the content is the split's)."""
        base, star, times = spec.rpartition("*")
        spec = base if star and times.isdigit() else spec
        if (spec, root) not in self._data_fp:
            self._data_fp[(spec, root)] = load_dataset(spec, root=root).fingerprint()
        return self._data_fp[(spec, root)]

    def get(self, group: str, name: str, key: dict[str, Any]) -> dict[str, Any] | None:
        """The entry of ``name`` in ``group`` if it was made under the same key, else None."""
        entry = self.entries(group).get(name)
        return entry if entry is not None and entry.get("key") == key["hash"] else None

    @contextmanager
    def claim(self, group: str, name: str, key: dict[str, Any]) -> Iterator[bool]:
        """Whether this process may train ``name`` under ``key`` now: True while it holds the claim, False while
        another process does (train something else and come back: by then its entry is usually here).

        Processes that share a ledger folder (a sweep script and a study's sweep, or two sweeps with their own
        run folders) so split the work instead of training the same student side by side. The claim is an
        exclusive ``flock`` on a file named after the model and its key, released when the block ends or the
        process dies, so a killed process never leaves a claim behind. A process that gets the claim should
        look for the entry again: another may have recorded it just before letting go.
        """
        folder = self.folder / CLAIMS
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{group}-{slug(name)}-{key['hash']}", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def put(self, group: str, name: str, key: dict[str, Any], record: dict[str, Any]) -> None:
        """Record ``name``'s outcome (results, costs, ...) under ``key``; an entry of the same key is updated
        field by field (``evals`` merged: a gated student's thresholds arrive one by one), one of another key
        replaced. The file is rewritten atomically, under a lock (two sweeps sharing the work write into the
        same file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._put(group, name, key, record)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _put(self, group: str, name: str, key: dict[str, Any], record: dict[str, Any]) -> None:
        students = self.entries(group)
        old = students.get(name) if students.get(name, {}).get("key") == key["hash"] else None
        entry = dict(old or {})
        evals = {**entry.get("evals", {}), **record.get("evals", {})}
        entry.update(record, key=key["hash"], determined_by={k: v for k, v in key.items() if k != "hash"})
        if evals:
            entry["evals"] = evals
        if old is not None and _same(entry, old):
            return  # the same outcome read or scored again: the file (and when it was recorded) stays as it was
        entry["recorded"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        students[name] = entry
        body = {"format": FORMAT, "group": group, "students": dict(sorted(students.items()))}
        text = json.dumps(body, separators=(",", ":"), default=float) + "\n"
        atomic_write(self.path(group), lambda tmp: Path(tmp).write_text(text))


def _same(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether an entry about to be written holds what the stored one does (its ``recorded`` time aside), compared
    as they would be written (tuples as lists, numpy scalars as floats)."""

    def text(entry: dict[str, Any]) -> str:
        return json.dumps({k: v for k, v in entry.items() if k != "recorded"}, sort_keys=True, default=float)

    return text(new) == text(old)
