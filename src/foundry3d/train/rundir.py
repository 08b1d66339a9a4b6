"""A training run's folder: created and marked by us, resumed from its last checkpoint, cleared (only of what a
run writes) on ``--overwrite``, its resolved recipe in ``config.yaml`` and every later change of it recorded.
The output rule itself (markers, protected folders, locks) lives in :mod:`foundry3d.files`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from foundry3d.config import read_yaml, save_yaml
from foundry3d.errors import Foundry3DError
from foundry3d.files import LOCK, MARKER, read_marker, refuse_protected, remove_entries, user_entries, write_marker
from foundry3d.train.distributed import DistInfo, barrier


class RunDirError(Foundry3DError, RuntimeError):
    """The run directory holds another run, or cannot be resumed."""


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return {k.rstrip("."): v for k, v in out.items()}


def record_config_changes(run_dir: Path, config: dict[str, Any], step: int) -> dict[str, list[Any]]:
    """A run resumed with a changed recipe (e.g. fewer steps) keeps an honest record: ``config.yaml``
    becomes the new resolved config and ``config_changes.jsonl`` gets the diff and the step it starts at."""
    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    old, new = _flat(read_yaml(path)), _flat(json.loads(json.dumps(config, default=str)))
    changes = {k: [old.get(k), new.get(k)] for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}
    if changes:
        with open(run_dir / "config_changes.jsonl", "a") as f:
            f.write(json.dumps({"time": time.time(), "at_step": step, "changes": changes}) + "\n")
        save_yaml(config, path)
    return changes


RUN_MARKER = MARKER


# Everything a run writes into its folder; --overwrite and an abandoned start remove these and nothing else.
RUN_FILES = (
    "config.yaml",
    "config_changes.jsonl",
    "metrics.jsonl",
    "summary.json",
    "checkpoints",
    "release",
    "tb",
    "cache",
    "snapshots",
)


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Raise unless ``run_dir`` is new, empty, a marked run, or (to resume) an older run; changes nothing."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--out {run_dir} is an existing file: expected a folder for the run")
    refuse_protected(run_dir)
    if not run_dir.is_dir() or read_marker(run_dir) is not None:
        return
    if not any(p.name != LOCK for p in run_dir.iterdir()):
        return
    legacy = resume and (run_dir / "checkpoints" / "last.pt").is_file() and not user_entries(run_dir, RUN_FILES)
    if not legacy:
        raise RunDirError(
            f"{run_dir} is not empty and holds no foundry3d run (no {RUN_MARKER} marker): refusing to write "
            f"into it; choose another --out"
        )


def prepare_run_dir(
    run_dir: Path, config: dict[str, Any], resume: bool, overwrite: bool, info: DistInfo
) -> Path | None:
    """Create or validate the run directory; returns the checkpoint to resume from, if any.

    Only a folder that provably holds a foundry3d run (its marker file, written when the run was
    created) is ever cleared, and then only the files a run writes: a user's folder is never
    touched, whatever the flags. A run folder from before markers existed (only a run's files in it)
    is resumed, and marked only once its checkpoint has loaded (see :func:`fit`)."""
    check_run_dir(run_dir, resume)
    ckpt = run_dir / "checkpoints" / "last.pt"
    exists = run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir())
    is_run = read_marker(run_dir) is not None if run_dir.is_dir() else False
    released = (run_dir / "release" / "model.safetensors").is_file()
    if resume and ckpt.exists():  # its training state is checked when loaded; nothing is deleted
        return ckpt
    if resume and released:
        raise RunDirError(
            f"cannot resume {run_dir}: the run finished (its release exists) but its checkpoints are gone; its "
            f"release is kept. Pass --overwrite to train it again from scratch"
        )
    abandoned = is_run and not ckpt.exists() and not released  # killed or failed before its first checkpoint
    if resume and not exists and info.is_main:
        print(f"foundry3d: nothing to resume in {run_dir}: starting a new run there", file=sys.stderr)
    if exists and not (overwrite or abandoned):
        raise RunDirError(
            f"run directory {run_dir} already holds a run; pass resume=True (--resume) to continue it "
            f"or overwrite=True (--overwrite) to start again"
        )
    if exists and info.is_main:
        remove_entries(run_dir, RUN_FILES)
    barrier(info)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not is_run:
            write_marker(run_dir, "run")
        save_yaml(config, run_dir / "config.yaml")
    barrier(info)
    return None
