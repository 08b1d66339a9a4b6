"""Files shipped inside the package: the embedded tiny Point-JEPA teacher and its model card."""

from __future__ import annotations

from pathlib import Path

from foundry3d.models.checkpoint import CheckpointError

ASSETS = Path(__file__).parent


def embedded_teacher_path() -> Path:
    """Release directory of the packaged ``tiny`` teacher (see its MODEL_CARD.md)."""
    path = ASSETS / "teacher_tiny"
    if not (path / "model.safetensors").is_file():
        raise CheckpointError(
            f"the embedded teacher is missing from {path}; reinstall foundry3d or pass a teacher release path"
        )
    return path
