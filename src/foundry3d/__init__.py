"""foundry3d: distill 3D point-cloud foundation models into small, fast, universal students."""

from foundry3d.version import __version__

# The public API, loaded on first use so that `import foundry3d` stays cheap: name -> (module, attribute).
_API = {
    "create_model": ("foundry3d.models.hub", "create_model"),
    "create_student": ("foundry3d.models.hub", "create_student"),
    "list_models": ("foundry3d.models.hub", "list_models"),
    "load": ("foundry3d.models.hub", "load"),
    "resolve": ("foundry3d.models.hub", "resolve"),
    "pretrain": ("foundry3d.train.pretrain", "pretrain"),
    "distill": ("foundry3d.train.distill", "distill"),
    "evaluate": ("foundry3d.eval.suite", "evaluate"),
    "embed": ("foundry3d.edge.embed", "embed"),
    "search": ("foundry3d.edge.search", "search"),
    "merge": ("foundry3d.edge.search", "merge"),
    "load_dataset": ("foundry3d.data.registry", "load_dataset"),
    "export": ("foundry3d.edge.export", "export_onnx"),
    "read_points": ("foundry3d.data.pointfile", "read_points"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'foundry3d' has no attribute {name!r}")
