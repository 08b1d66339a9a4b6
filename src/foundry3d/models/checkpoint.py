"""Two checkpoint kinds.

* Release: ``<dir>/model.safetensors`` + ``<dir>/config.json`` (the config is also embedded in the
  safetensors metadata, so the single file works too). ``foundry3d.models.hub.load`` rebuilds it.
* Training state: one torch file of plain containers, loadable with ``weights_only=True``.

Both are written atomically (temporary file, fsync, rename) so an interrupted write never
leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from foundry3d.errors import Foundry3DError
from foundry3d.files import _delete_tree, _umask, atomic_write, clean_stale, refuse_protected, user_path
from foundry3d.version import __version__

RELEASE_FORMAT = "foundry3d-release"
TRAIN_STATE_FORMAT = "foundry3d-train-state"


class CheckpointError(Foundry3DError, ValueError):
    """A checkpoint that is missing, truncated, of the wrong kind or for another architecture."""


def weights_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted names and raw bytes: identifies a set of weights."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_kind(model: nn.Module) -> str:
    """The release kind a model is saved as (backbone, student, ...); models foundry3d cannot reload are
    refused."""
    kind = getattr(model, "kind", None)
    if not isinstance(kind, str):
        raise CheckpointError(
            f"{type(model).__name__} has no release kind: only foundry3d backbones and students are saved as releases"
        )
    return kind


def save_release(
    model: nn.Module,
    path: str | Path,
    meta: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a release directory (safetensors + config.json); returns the directory.

    The release is written into a temporary folder next to ``path`` and renamed into place, so a
    kill mid-write never leaves a folder that looks like a release. An existing release is only
    replaced with ``overwrite=True``. ``dtype=torch.float16`` halves the file; loading builds the
    model in float32 either way.
    """
    path = check_release_target(path, overwrite)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    header = {
        "format": RELEASE_FORMAT,
        "format_version": 1,
        "foundry3d_version": __version__,
        "kind": model_kind(model),
        "config": model.config_dict(),  # type: ignore[operator]  # every release kind has one (model_kind checked)
        "weights_sha256": weights_hash(state),
        "meta": meta or {},
    }
    text = json.dumps(header, indent=2, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent, path.name)  # debris of killed writers: .<name>.<pid>.partial, .<name>.old-<pid>
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    if tmp.exists():
        _delete_tree(tmp)
    tmp.mkdir()
    try:
        atomic_write(tmp / "model.safetensors", lambda t: save_file(state, t, metadata={"foundry3d": text}))
        atomic_write(tmp / "config.json", lambda t: Path(t).write_text(text + "\n"))
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():  # overwrite: swap in, then remove the old release
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            _delete_tree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            _delete_tree(tmp)
    return path


RELEASE_FILES = ("model.safetensors", "config.json", "MODEL_CARD.md")


def check_release_target(path: str | Path, overwrite: bool) -> Path:
    """``path`` if a release may be written there: new, or (with ``overwrite``) a foundry3d release folder
    holding only its own files; never a user's folder, ``/`` or a home folder."""
    path = user_path(path)
    refuse_protected(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise CheckpointError(f"{path} already exists; refusing to replace it (pass overwrite=True / --overwrite)")
    if path.exists() or path.is_symlink():
        _check_replaceable(path)
    return path


def _check_replaceable(path: Path) -> None:
    """Only a foundry3d release folder (its two files, maybe a model card) is ever replaced."""
    if not path.is_dir() or path.is_symlink():
        raise CheckpointError(f"{path} exists and is not a release folder: refusing to replace it")
    foreign = sorted(p.name for p in path.iterdir() if p.name not in RELEASE_FILES)
    try:
        header = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        header = None
    if foreign or not isinstance(header, dict) or header.get("format") != RELEASE_FORMAT:
        what = f"it holds {', '.join(foreign[:3])}" if foreign else "no foundry3d config.json in it"
        raise CheckpointError(f"{path} is not a foundry3d release folder ({what}): refusing to replace it")


def read_release(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Header and weights of a release directory or ``.safetensors`` file, checked."""
    path = Path(path).expanduser()
    if path.is_dir():
        weights = path / "model.safetensors"
    elif path.suffix == ".safetensors":
        weights = path
    else:
        raise CheckpointError(
            f"{path} is not a foundry3d release: expected a directory with model.safetensors + config.json "
            f"or a .safetensors file" + (" (it does not exist)" if not path.exists() else "")
        )
    if not weights.is_file():
        raise CheckpointError(f"{weights} does not exist (expected a foundry3d release written by save_release)")
    try:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file (truncated or corrupt?): {e}") from e
    if "foundry3d" not in meta:
        raise CheckpointError(
            f"{weights} is a safetensors file without foundry3d metadata; official Point-JEPA/Point-MAE "
            f"checkpoints must go through `foundry3d convert` first"
        )
    try:
        header = json.loads(meta["foundry3d"])
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{weights}: its foundry3d metadata is not valid JSON ({e}): file modified or corrupt"
        ) from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{weights}: its foundry3d metadata is not a JSON object: file modified or corrupt")
    if header.get("format") != RELEASE_FORMAT:
        raise CheckpointError(f"{weights} has format {header.get('format')!r}, expected {RELEASE_FORMAT!r}")
    if weights_hash(state) != header.get("weights_sha256"):
        raise CheckpointError(f"{weights}: weights do not match the stored hash (file modified or corrupt)")
    return header, state


def save_train_state(state: dict[str, Any], path: str | Path) -> None:
    """Atomically save a training state (plain containers and tensors only)."""
    payload = {"format": TRAIN_STATE_FORMAT, "foundry3d_version": __version__, **state}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Load a training state with ``weights_only=True`` (no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, ...
        raise CheckpointError(f"{path} is not a readable foundry3d training state: {e}") from e
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path} is not a foundry3d training state (format {TRAIN_STATE_FORMAT!r})")
    return state
