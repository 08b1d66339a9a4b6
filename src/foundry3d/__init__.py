"""foundry3d: distill 3D point-cloud foundation models into small, fast, universal students."""

from foundry3d.version import __version__

__all__ = ["__version__", "create_model", "list_models", "load", "pretrain"]


def __getattr__(name: str):
    # Lazy public API: `import foundry3d` stays cheap; heavy modules load on first use.
    if name in ("create_model", "list_models"):
        from foundry3d.models import registry

        return getattr(registry, name)
    if name == "load":
        from foundry3d.models.checkpoint import load

        return load
    if name == "pretrain":
        from foundry3d.train.pretrain import pretrain

        return pretrain
    raise AttributeError(f"module 'foundry3d' has no attribute {name!r}")
