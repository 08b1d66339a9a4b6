"""The ``foundry3d`` command: every verb *is* a public Python function, with the same arguments.

The command line of a verb is derived from its function's signature and docstring by ``tyro``
(names, defaults, types, help), so the CLI and the API cannot drift apart: ``--budget-s`` is
``budget_s``, a ``list`` argument takes several values, a ``bool`` is a ``--flag / --no-flag``
pair, and the ``overrides`` / ``files`` arguments are positional. Types only the Python API
accepts (a dict of overrides, a model object, a Recipe object) are left out of the CLI view.

Every deliberate error derives from :class:`Foundry3DError` and prints as one line (exit 2);
anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Union

import tyro

from foundry3d.data.build import build
from foundry3d.data.registry import dataset_info, list_datasets
from foundry3d.edge.bench import bench
from foundry3d.edge.embed import embed
from foundry3d.edge.export import export_onnx
from foundry3d.errors import Foundry3DError
from foundry3d.eval.suite import evaluate
from foundry3d.models.convert import convert
from foundry3d.models.hub import list_models
from foundry3d.quickstart import quickstart
from foundry3d.registry import Registry
from foundry3d.report.preview import render_dataset
from foundry3d.study import study
from foundry3d.train.distill import distill
from foundry3d.train.expert import expert
from foundry3d.train.pretrain import pretrain
from foundry3d.version import __version__

POSITIONAL = ("overrides", "files")  # positional for every verb; per verb below
VERB_POSITIONAL = {
    "data build": ("name",),
    "data info": ("name",),
    "data render": ("spec",),
    "convert": ("checkpoint",),
    "study": ("name",),
}
VERBS: Registry = Registry("verb")


for _name, _fn in [
    ("quickstart", quickstart),
    ("pretrain", pretrain),
    ("distill", distill),
    ("expert", expert),
    ("eval", evaluate),
    ("study", study),
    ("bench", bench),
    ("export", export_onnx),
    ("embed", embed),
    ("convert", convert),
    ("models", list_models),
    ("data build", build),
    ("data list", list_datasets),
    ("data info", dataset_info),
    ("data render", render_dataset),
]:
    VERBS.register(_name, _fn)


def _verbs() -> Registry:
    """name -> function of every verb."""
    return VERBS


def _cli_type(tp: Any, name: str, positional: tuple[str, ...] = POSITIONAL) -> Any:
    """The part of an annotation the command line can express (drops dicts, modules, dataclasses)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        keep = [a for a in typing.get_args(tp) if _expressible(a)]
        tp = Union[tuple(keep)] if len(keep) > 1 else keep[0]  # noqa: UP007
    if name in positional:
        tp = Annotated[tp, tyro.conf.Positional]
    return tp


def _expressible(tp: Any) -> bool:
    origin = typing.get_origin(tp) or tp
    if origin is dict or dataclasses.is_dataclass(origin):
        return False
    return not (isinstance(origin, type) and origin.__module__.startswith("torch"))


def cli_view(fn: Callable[..., Any], verb: str = "", target: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """``fn`` with a signature the command line can express; calling it calls ``fn`` (or ``target``)."""
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    positional = POSITIONAL + VERB_POSITIONAL.get(verb, ())
    params = [
        p.replace(annotation=_cli_type(hints.get(p.name, Any), p.name, positional)) for p in sig.parameters.values()
    ]

    def call(**kwargs: Any) -> Any:
        return (target or fn)(**kwargs)

    call.__doc__ = fn.__doc__
    call.__name__ = fn.__name__
    call.__signature__ = sig.replace(parameters=params, return_annotation=Any)  # type: ignore[attr-defined]
    call.__annotations__ = {p.name: p.annotation for p in params}
    return call


def _summary(fn: Callable[..., Any]) -> str:
    return (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ")


def _print_help() -> None:
    print(
        f"usage: foundry3d VERB [options]  (foundry3d VERB --help for a verb's options)\n\nfoundry3d {__version__}: "
        "distill 3D point-cloud foundation models into small, fast, still-universal students.\n\nverbs:"
    )
    for name, fn in _verbs().items():
        print(f"  {name:<12} {_summary(fn)}")


def _show(result: Any) -> None:
    if isinstance(result, Path):
        print(result)
    elif isinstance(result, (dict, list)) and result:
        text = json.dumps(result, indent=2, default=str)
        if len(text) > 6000 and isinstance(result, dict):  # a whole run's record: its files hold it
            text = json.dumps({k: v for k, v in result.items() if not isinstance(v, (dict, list))} or list(result))
        print(text)
    elif isinstance(result, str):
        print(result)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        try:
            _print_help()
        except BrokenPipeError:  # piped into `head`
            sys.stderr.close()
        return 0
    if args[0] == "--version":
        print(f"foundry3d {__version__}")
        return 0
    verb, rest = args[0], args[1:]
    if verb == "data":
        if not rest or rest[0] not in ("build", "list", "info", "render"):
            print("usage: foundry3d data {build,list,info,render} ... (foundry3d data build --help)", file=sys.stderr)
            return 2
        verb, rest = f"data {rest[0]}", rest[1:]
    verbs = _verbs()
    if verb not in verbs:
        print(f"foundry3d: unknown verb {verb!r}; verbs: {', '.join(n for n, _ in verbs.items())}", file=sys.stderr)
        return 2
    fn = verbs.get(verb)
    try:
        result = tyro.cli(cli_view(fn, verb), args=rest, prog=f"foundry3d {verb}", description=_summary(fn))
    except Foundry3DError as e:
        if os.environ.get("FOUNDRY3D_DEBUG"):
            raise
        print(f"foundry3d {verb}: error: {e} (FOUNDRY3D_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"foundry3d {verb}: interrupted", file=sys.stderr)
        return 130
    _show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
