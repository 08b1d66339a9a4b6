"""Two checkpoint kinds.

* Release: ``<dir>/model.safetensors`` + ``<dir>/config.json`` (the config is also embedded in the
  safetensors metadata, so the single file works too). ``load(path)`` rebuilds the model.
* Training state: one torch file of plain containers, loadable with ``weights_only=True``.

Both are written atomically (temporary file, fsync, rename) so an interrupted write never
leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from foundry3d.version import __version__

RELEASE_FORMAT = "foundry3d-release"
TRAIN_STATE_FORMAT = "foundry3d-train-state"
_BUILDERS: dict[str, Callable[[dict], nn.Module]] = {}


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, of the wrong kind or for another architecture."""


def register_kind(kind: str, builder: Callable[[dict], nn.Module]) -> None:
    """Let ``load`` rebuild models of ``kind`` from their stored config dict."""
    _BUILDERS[kind] = builder


def _builders() -> dict[str, Callable[[dict], nn.Module]]:
    # Import the modules that register kinds (kept lazy to avoid import cycles).
    import foundry3d.models.backbone as bb
    import foundry3d.models.foundry  # noqa: F401  (registers "foundry_student")

    _BUILDERS.setdefault("backbone", bb.backbone_from_config)
    return _BUILDERS


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the finished file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
    kind = getattr(model, "kind", None)
    if not isinstance(kind, str):
        raise TypeError(f"{type(model).__name__} has no release kind")
    return kind


def save_release(
    model: nn.Module, path: str | Path, meta: dict[str, Any] | None = None, dtype: torch.dtype | None = None
) -> Path:
    """Write ``model`` as a release directory (safetensors + config.json); returns the directory.

    ``dtype=torch.float16`` halves the file; ``load`` builds the model in float32 either way.
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    header = {
        "format": RELEASE_FORMAT,
        "format_version": 1,
        "foundry3d_version": __version__,
        "kind": model_kind(model),
        "config": model.config_dict(),
        "weights_sha256": weights_hash(state),
        "meta": meta or {},
    }
    text = json.dumps(header, indent=2, sort_keys=False)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / "model.safetensors", lambda tmp: save_file(state, tmp, metadata={"foundry3d": text}))
    atomic_write(path / "config.json", lambda tmp: Path(tmp).write_text(text + "\n"))
    return path


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
        from safetensors import safe_open

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
    header = json.loads(meta["foundry3d"])
    if header.get("format") != RELEASE_FORMAT:
        raise CheckpointError(f"{weights} has format {header.get('format')!r}, expected {RELEASE_FORMAT!r}")
    if weights_hash(state) != header.get("weights_sha256"):
        raise CheckpointError(f"{weights}: weights do not match the stored hash (file modified or corrupt)")
    return header, state


def load(path: str | Path, expect_kind: str | None = None) -> nn.Module:
    """Rebuild a model (teacher backbone or Foundry student) from a release, in eval mode."""
    header, state = read_release(path)
    kind = header["kind"]
    if expect_kind is not None and kind != expect_kind:
        raise CheckpointError(f"{path} holds a {kind!r} model, but a {expect_kind!r} model was expected")
    builders = _builders()
    if kind not in builders:
        raise CheckpointError(f"{path}: unknown model kind {kind!r}; known kinds: {', '.join(sorted(builders))}")
    model = builders[kind](header["config"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the stored {kind} config: {e}") from e
    model.release_meta = header.get("meta", {})
    model.release_hash = header["weights_sha256"]
    return model.eval()


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
