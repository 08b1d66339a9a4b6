"""foundry3d: distill 3D point-cloud foundation models into small, fast, universal students."""

from foundry3d.version import __version__

__all__ = ["__version__", "create_model", "create_student", "list_models", "load", "pretrain", "resolve"]


def __getattr__(name: str):
    # Lazy public API: `import foundry3d` stays cheap; heavy modules load on first use.
    if name in ("create_model", "create_student", "list_models", "load", "resolve"):
        from foundry3d.models import hub

        return getattr(hub, name)
    if name == "pretrain":
        from foundry3d.train.pretrain import pretrain

        return pretrain
    raise AttributeError(f"module 'foundry3d' has no attribute {name!r}")
