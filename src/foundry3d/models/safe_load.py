"""Read foreign PyTorch checkpoints without executing anything from them.

Official Point-JEPA (Lightning) and Point-MAE files are ``torch.save``d dicts that also pickle
training objects. The file is read into memory once and its container identified from its bytes
before any unpickling:

* a **TorchScript** archive (a zip with ``code/`` or ``constants.pkl``) is refused: loading it
  would run the code it carries;
* a legacy **tar** checkpoint (PyTorch < 0.4) is refused;
* a **zip** (PyTorch >= 1.6) or legacy **non-zip** ``torch.save`` file is loaded first with
  ``torch.load(weights_only=True)`` (PyTorch's own restricted loader); when it holds objects that
  loader refuses, with :mod:`foundry3d.safe_pickle`'s restricted unpickler for *every* pickle
  record of the file (the legacy format's header records included), which turns unknown objects
  into inert placeholders.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from foundry3d.models.checkpoint import CheckpointError
from foundry3d.safe_pickle import pickle_module


def container_kind(data: bytes) -> str:
    """``zip``, ``torchscript``, ``tar``, ``legacy`` (pickle stream) or ``unknown``, from the bytes."""
    buf = io.BytesIO(data)
    if zipfile.is_zipfile(buf):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            return "unknown"
        script = any("/code/" in n or n.startswith("code/") or n.endswith("constants.pkl") for n in names)
        return "torchscript" if script else "zip"
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:"):
            return "tar"
    except tarfile.TarError:
        pass
    if data[:1] == b"\x80":  # pickle protocol >= 2: torch.save's legacy format starts with a pickle
        return "legacy"
    return "corrupt" if data[:4] == b"PK\x03\x04" else "unknown"


def safe_torch_load(path: str | Path) -> Any:
    """Load a ``torch.save`` file; tensors come back, unknown objects become inert placeholders."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise CheckpointError(f"{p} is a directory: pass the checkpoint file itself")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    data = p.read_bytes()  # one read: what is checked is what is loaded
    kind = container_kind(data)
    if kind == "torchscript":
        raise CheckpointError(
            f"{p} is a TorchScript archive: refusing to load it (loading runs the code it carries); pass the "
            f"checkpoint saved with torch.save"
        )
    if kind == "tar":
        raise CheckpointError(f"{p} is a legacy tar checkpoint (PyTorch < 0.4): not supported")
    if kind == "corrupt":
        raise CheckpointError(f"{p} is not a readable PyTorch checkpoint (a truncated or corrupt zip)")
    if kind == "unknown":
        raise CheckpointError(f"{p} is not a PyTorch checkpoint (neither a torch.save zip nor a pickle stream)")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # holds objects torch's loader refuses: read them as placeholders below
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"{p} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from e
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False, pickle_module=pickle_module)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{p} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from e
