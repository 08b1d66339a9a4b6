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
import importlib
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

from foundry3d.errors import Foundry3DError, environment_error
from foundry3d.registry import Registry
from foundry3d.version import __version__

POSITIONAL = ("overrides", "files")  # positional for every verb; per verb below
VERB_POSITIONAL = {
    "data build": ("name",),
    "data info": ("name",),
    "data render": ("spec",),
    "convert": ("checkpoint",),
    "search": ("index", "queries"),
    "merge": ("indexes",),
    "study": ("name",),
}
# verb -> (module, function, summary). The summary is the first paragraph of the function's docstring (a
# test keeps them equal); it stands here so that `foundry3d --help` imports no verb and starts at once.
VERB_TABLE: dict[str, tuple[str, str, str]] = {
    "quickstart": (
        "foundry3d.quickstart",
        "quickstart",
        "The main job: data, embedded teacher, SuperToken students, evaluation with the floor, bench, report.",
    ),
    "pretrain": (
        "foundry3d.train.pretrain",
        "pretrain",
        "Point-JEPA self-supervised pretraining of a point-cloud backbone (a teacher).",
    ),
    "distill": (
        "foundry3d.train.distill",
        "distill",
        "Distill a frozen teacher into a SuperToken student (Foundry FMD, or any registered student kind).",
    ),
    "expert": (
        "foundry3d.train.expert",
        "expert",
        "The expert baseline: fine-tune the teacher on one task, then distil a student with logit KD.",
    ),
    "eval": (
        "foundry3d.eval.suite",
        "evaluate",
        "Evaluate a model on held-out tasks (scores with 95 % CIs), or compare evaluated models.",
    ),
    "study": (
        "foundry3d.study",
        "study",
        "Regenerate the paper's comparisons on a teacher: experts, ablations, s sweep, gate, token merging.",
    ),
    "bench": (
        "foundry3d.edge.bench",
        "bench",
        "Parameters, FLOPs, CPU latency and peak memory of a teacher and students, side by side.",
    ),
    "export": (
        "foundry3d.edge.export",
        "export_onnx",
        "Export a teacher or student to ONNX (dynamic batch and points) and check onnxruntime against PyTorch.",
    ),
    "embed": (
        "foundry3d.edge.embed",
        "embed",
        "Run a model on your own point-cloud files and save their global and token features (.npz).",
    ),
    "search": (
        "foundry3d.edge.search",
        "search",
        "Find the shapes of an embedding index most similar to your query files (cosine), as a table and a CSV.",
    ),
    "merge": (
        "foundry3d.edge.search",
        "merge",
        "Merge the indexes of several embed runs (e.g. the shards of embed --shard K/N) into one index.",
    ),
    "convert": (
        "foundry3d.models.convert",
        "convert",
        "Convert an official Point-JEPA / Point-MAE / Point-BERT / ACT checkpoint into a foundry3d release.",
    ),
    "models": (
        "foundry3d.models.hub",
        "model_table",
        "The models you can name: embedded teachers (the default marked), backbone variants, student kinds.",
    ),
    "data build": (
        "foundry3d.data.build",
        "build",
        "Build an embedded dataset from its Debian package(s), once; later calls reuse it.",
    ),
    "data list": (
        "foundry3d.data.registry",
        "list_datasets",
        "List the datasets: what is built, what can be built (embedded) or read from a folder (benchmarks).",
    ),
    "data info": (
        "foundry3d.data.registry",
        "dataset_info",
        "Counts of a dataset or one split: shapes, classes, per class, splits, parts, build record.",
    ),
    "data render": (
        "foundry3d.report.preview",
        "render_dataset",
        "Render a PNG grid of a few shapes per class (points coloured by part when labelled).",
    ),
}
EXAMPLES: dict[str, list[str]] = {
    "quickstart": ["foundry3d quickstart", "foundry3d quickstart --full --out runs/full"],
    "pretrain": [
        "foundry3d pretrain --config pretrain/tiny3 --out runs/teacher",
        "foundry3d pretrain --data folder:/scans --out runs/my_teacher",
        "torchrun --nproc_per_node=8 -m foundry3d.cli pretrain --config pretrain/vit_s --out runs/vit_s",
        "foundry3d pretrain --show-config",
    ],
    "distill": [
        "foundry3d distill --teacher embedded --supertokens 16 --out runs/s16",
        "foundry3d distill --data folder:/scans --out runs/mine",
        "foundry3d distill --config distill/edge --out runs/edge engine.steps=2000",
        "foundry3d distill --show-config",
    ],
    "expert": ["foundry3d expert cls:kicad33 --teacher embedded --out runs/expert"],
    "eval": [
        "foundry3d eval --model runs/s16/release --tasks svm:sh3d16 fewshot:kicad33",
        "foundry3d eval --model runs/mine/release --tasks svm:folder:/labelled",
        "foundry3d eval --compare runs/eval/embedded runs/eval/floor_embedded runs/eval/release",
    ],
    "study": ["foundry3d study paper --out runs/paper"],
    "bench": ["foundry3d bench --models embedded runs/s16/release --points 1024 8192"],
    "export": ["foundry3d export --model runs/s16/release --out s16.onnx --int8"],
    "embed": [
        "foundry3d embed scan.ply scene.las --model runs/s16/release --out feats/",
        "foundry3d embed /scans --out idx/",
        "foundry3d embed '/scans/**/*.stl' --shard 2/8 --out idx/part2",
    ],
    "search": ["foundry3d search idx/ query.ply --top-k 5"],
    "merge": ["foundry3d merge idx/part1 idx/part2 --out idx/all"],
    "convert": [
        "foundry3d convert pretrain.pth --source point-mae --out teachers/point-mae",
        "foundry3d convert Point-BERT.pth --source point-bert --out teachers/point-bert",
    ],
    "models": ["foundry3d models", "foundry3d models --kind student"],
    "data build": ["foundry3d data build sh3d16"],
    "data list": ["foundry3d data list"],
    "data info": ["foundry3d data info kicad33", "foundry3d data info folder:/scans"],
    "data render": ["foundry3d data render kicadparts:train --out parts.png"],
}
# verbs that run a recipe: --show-config prints it, one line per key, with --config and overrides applied
RECIPES = {
    "pretrain": ("foundry3d.train.pretrain", "PretrainConfig"),
    "distill": ("foundry3d.train.distill", "DistillConfig"),
    "eval": ("foundry3d.eval.suite", "EvalConfig"),
    "study": ("foundry3d.study", "StudyConfig"),
}
_VERBS: Registry | None = None


def verb_function(name: str) -> Callable[..., Any]:
    """The function of one verb (imports only its module)."""
    module, fn, _ = VERB_TABLE[name]
    return getattr(importlib.import_module(module), fn)


def _verbs() -> Registry:
    """name -> function of every verb (imports them all: tests and docs, not the command's start-up)."""
    global _VERBS
    if _VERBS is None:
        reg: Registry = Registry("verb")
        for name in VERB_TABLE:
            reg.register(name, verb_function(name))
        _VERBS = reg
    return _VERBS


def _arg_docs(fn: Callable[..., Any]) -> dict[str, str]:
    """``name -> help`` from the ``Args:`` section of a Google-style docstring, markup removed."""
    docs: dict[str, str] = {}
    lines = (inspect.getdoc(fn) or "").splitlines()
    if "Args:" not in lines:
        return docs
    name = None
    for line in lines[lines.index("Args:") + 1 :]:
        if line and not line.startswith(" "):
            break
        head, sep, text = line.strip().partition(": ")
        if line.startswith("    ") and not line.startswith("     ") and sep and head.isidentifier():
            name, docs[head] = head, text
        elif name and line.strip():
            docs[name] += " " + line.strip()
    return {k: v.replace("``", "") for k, v in docs.items()}


REQUIRED = object()  # a parameter without a default
PATHS = ("out", "root", "config", "checkpoint", "recipe")
WORDS = {"model": "SPEC", "teacher": "SPEC", "spec": "SPEC", "calibration": "DATASET", "name": "NAME"}
WORDS.update(data="DATASET", files="FILE", tasks="TASK", models="SPEC", compare="RESULTS", names="NAME")
WORDS.update(index="INDEX", queries="FILE", indexes="INDEX", shard="K/N")


def _metavar(tp: Any, name: str) -> str | None:
    """A plain word for the value an option takes (tyro's own spells out unions: ``{None}|STR``)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if any(typing.get_origin(a) is list for a in args):
            tp, origin = next(a for a in args if typing.get_origin(a) is list), list
        elif len(args) == 1:
            tp, origin = args[0], typing.get_origin(args[0])
        else:
            tp, origin = args[0], typing.get_origin(args[0])
    if tp is bool:
        return None
    if origin is typing.Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(tp)) + "}"
    if origin is list:
        (inner,) = typing.get_args(tp) or (str,)
        word = WORDS.get(name) or _metavar(inner, name) or "VALUE"
        return "KEY=VALUE ..." if name == "overrides" else f"{word} ..."
    if tp is int:
        return "INT"
    if tp is float:
        return "NUMBER"
    if name in PATHS:
        return "PATH"
    return WORDS.get(name, WORDS.get(name + "s", "TEXT"))


def _cli_type(
    tp: Any, name: str, positional: tuple[str, ...] = POSITIONAL, help: str | None = None, default: Any = None
) -> Any:
    """The part of an annotation the command line can express (drops dicts, modules, dataclasses), with a
    plain metavar and the docstring's help."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        keep = [a for a in typing.get_args(tp) if _expressible(a)]
        tp = Union[tuple(keep)] if len(keep) > 1 else keep[0]  # noqa: UP007
    hint = "(optional)" if default is None else "(required)" if default is REQUIRED else None
    arg = tyro.conf.arg(metavar=_metavar(tp, name), help=help, help_behavior_hint=hint)
    if name in positional:
        return Annotated[tp, tyro.conf.Positional, arg]
    return Annotated[tp, arg]


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
    docs = _arg_docs(fn)
    params = []
    for p in sig.parameters.values():
        default = p.default if p.default is not p.empty else REQUIRED
        tp = _cli_type(hints.get(p.name, Any), p.name, positional, docs.get(p.name), default)
        params.append(p.replace(annotation=tp))

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
    for name, (_, _, summary) in VERB_TABLE.items():
        print(f"  {name:<12} {summary}")


def _show(verb: str, result: Any) -> None:
    """What a verb returned, for a person: plain lines, not JSON (the files hold the full records)."""
    if isinstance(result, (Path, str)):
        print(result)
    elif verb == "embed" and isinstance(result, dict):
        out = Path(result["written"][0]).parent if result.get("written") else None
        print(
            f"embedded {len(result.get('outputs', {}))} file(s), {len(result.get('failed', {}))} failed"
            + (f"; features in {out} (embed.json lists every file)" if out else "")
        )
    elif isinstance(result, dict):
        for key, value in result.items():
            text = (
                value if isinstance(value, (str, int, float, Path)) or value is None else json.dumps(value, default=str)
            )
            if len(str(text)) <= 400:  # a whole record (a run's stages) lives in its files, not on the terminal
                print(f"{key}: {text}")
    elif isinstance(result, list) and result and all(isinstance(r, dict) for r in result):
        keys = list(dict.fromkeys(k for r in result for k in r if not isinstance(r[k], (dict, list))))
        width = {k: max(len(k), *(len(str(r.get(k, ""))) for r in result)) for k in keys}
        print("  ".join(k.ljust(width[k]) for k in keys).rstrip())
        for r in result:
            print("  ".join(str(r.get(k, "")).ljust(width[k]) for k in keys).rstrip())
    elif isinstance(result, list) and result:
        print("\n".join(str(v) for v in result))


def _show_config(verb: str, fn: Callable[..., Any], rest: list[str]) -> int:
    """Print the recipe a verb would run: every key, its value and what it means."""
    from foundry3d.config import describe_config, load_config

    kw = tyro.cli(cli_view(fn, verb, target=lambda **k: k), args=rest, prog=f"foundry3d {verb}")
    module, name = RECIPES[verb]
    cfg = load_config(getattr(importlib.import_module(module), name), kw.get("config"), kw.get("overrides"))
    print("\n".join(describe_config(cfg)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``foundry3d`` command: dispatch a verb to its API function; deliberate errors and the user's environment
    (read-only folder, full disk) print one line and exit 2."""
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
    if verb not in VERB_TABLE:
        print(f"foundry3d: unknown verb {verb!r}; verbs: {', '.join(VERB_TABLE)}", file=sys.stderr)
        return 2
    fn = verb_function(verb)
    try:
        if "--show-config" in rest and verb in RECIPES:
            return _show_config(verb, fn, [a for a in rest if a != "--show-config"])
        text = VERB_TABLE[verb][2] + "".join(f"\n  $ {e}" for e in EXAMPLES.get(verb, []))
        verb_help = getattr(sys.modules[fn.__module__], "verb_help", None)  # e.g. eval: its registered tasks
        if callable(verb_help) and any(a in ("-h", "--help") for a in rest):
            text += "\n\n" + verb_help()
        result = tyro.cli(cli_view(fn, verb), args=rest, prog=f"foundry3d {verb}", description=text)
    except Foundry3DError as e:
        if os.environ.get("FOUNDRY3D_DEBUG"):
            raise
        print(f"foundry3d {verb}: error: {e} (FOUNDRY3D_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except OSError as e:  # a read-only folder, a full disk: the user's situation, one line; others are bugs
        err = environment_error(e)
        if err is None or os.environ.get("FOUNDRY3D_DEBUG"):
            raise
        print(f"foundry3d {verb}: error: {err} (FOUNDRY3D_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"foundry3d {verb}: interrupted", file=sys.stderr)
        return 130
    _show(verb, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
