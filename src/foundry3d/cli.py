"""The ``foundry3d`` command. Each verb calls one public Python function with the same arguments."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from foundry3d.errors import Foundry3DError
from foundry3d.version import __version__

VERBS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], Any]]] = {}


def verb(name: str, help: str):
    def deco(fn):
        def wrap(setup):
            VERBS[name] = (help, setup, fn)
            return setup

        return wrap

    return deco


def _recipe_args(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. engine.steps=500")
    p.add_argument("--config", help="recipe YAML file or built-in name (see foundry3d/configs)")
    p.add_argument("--out", default=out, help=f"run directory (default: {out})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")


# ---------------------------------------------------------------------------------------- pretrain
def _pretrain(a: argparse.Namespace) -> Any:
    from foundry3d.train.pretrain import pretrain

    return pretrain(config=a.config, overrides=a.overrides, out=a.out, resume=a.resume, overwrite=a.overwrite)


@verb("pretrain", "Point-JEPA self-supervised pretraining of a point-cloud backbone")(_pretrain)
def _pretrain_args(p: argparse.ArgumentParser) -> None:
    _recipe_args(p, "runs/pretrain")


# ----------------------------------------------------------------------------------------- distill
def _distill(a: argparse.Namespace) -> Any:
    from foundry3d.train.distill import distill

    return distill(
        teacher=a.teacher,
        data=a.data,
        supertokens=a.supertokens,
        config=a.config,
        overrides=a.overrides,
        out=a.out,
        resume=a.resume,
        overwrite=a.overwrite,
    )


@verb("distill", "Distill a frozen teacher into a Foundry SuperToken student (FMD)")(_distill)
def _distill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", help="teacher release (dir or .safetensors) or 'embedded' (default)")
    p.add_argument("--data", nargs="+", help="dataset specs, e.g. sh3d16:train kicad33:train")
    p.add_argument("--supertokens", type=int, help="number of SuperTokens s (1..c)")
    _recipe_args(p, "runs/distill")


# -------------------------------------------------------------------------------------------- eval
def _eval(a: argparse.Namespace) -> Any:
    from foundry3d.eval.results import compare
    from foundry3d.eval.suite import evaluate

    if a.compare:
        print(compare(a.compare))
        return None
    if not a.model:
        raise SystemExit("foundry3d eval: error: --model is required (or --compare A B)")
    evaluate(
        a.model,
        tasks=a.task,
        config=a.config,
        overrides=a.overrides,
        out=a.out,
        root=a.root,
        name=a.name,
        overwrite=a.overwrite,
    )
    return None


@verb("eval", "Evaluate a backbone: linear SVM, few-shot, part segmentation, fine-tuning (one protocol for all)")(_eval)
def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="protocol settings, e.g. fewshot.way=10")
    p.add_argument("--model", help="release dir/.safetensors, 'embedded' (packaged teacher) or 'random:<variant>'")
    p.add_argument("--task", action="append", help="PROTOCOL:DATASET[@ROOT], repeatable (default: the 4-task suite)")
    p.add_argument("--config", help="YAML with protocol settings")
    p.add_argument("--out", default="runs/eval", help="results folder (default: runs/eval)")
    p.add_argument("--name", help="subfolder for this model (default: derived from --model)")
    p.add_argument("--root", help="dataset cache folder for the embedded datasets")
    p.add_argument("--overwrite", action="store_true", help="recompute tasks that already have results")
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="RESULTS",
        help="results of a teacher, its floor and students: scores with 95 %% CIs and the encoder gain kept",
    )


# -------------------------------------------------------------------------------------- quickstart
def _quickstart(a: argparse.Namespace) -> Any:
    from foundry3d.quickstart import quickstart

    quickstart(out=a.out, full=a.full, overwrite=a.overwrite, teacher=a.teacher, root=a.root)
    return None


@verb("quickstart", "The main job: data, embedded teacher, SuperToken students, evaluation, bench, report")(_quickstart)
def _quickstart_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    p.add_argument("--full", action="store_true", help="longer distillation, full evaluation and benchmark")
    p.add_argument("--overwrite", action="store_true", help="discard the folder's previous run")
    p.add_argument("--teacher", default="embedded", help="teacher release (default: the embedded tiny teacher)")
    p.add_argument("--root", help="dataset cache folder")


# ------------------------------------------------------------------------------------------- bench
def _bench(a: argparse.Namespace) -> Any:
    from foundry3d.edge.bench import bench

    bench(
        a.model,
        points=a.points,
        batches=a.batch,
        out=a.out,
        threads=a.threads,
        budget_s=a.budget,
        batch_max_points=a.batch_max_points,
    )
    return None


@verb("bench", "Parameters, FLOPs, CPU latency and peak memory of a teacher and students")(_bench)
def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", nargs="+", required=True, help="models to compare; the first is the reference")
    p.add_argument("--points", type=int, nargs="+", help="point counts (default: 1024 2048 8192 32768)")
    p.add_argument("--batch", type=int, nargs="+", help="batch sizes (default: 1 32)")
    p.add_argument("--out", default="runs/bench", help="folder for bench.json and bench.csv")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--budget", type=float, default=6.0, help="seconds of timed runs per setting")
    p.add_argument("--batch-max-points", type=int, help="measure batches > 1 only up to this many points")


# ------------------------------------------------------------------------------------------ export
def _export(a: argparse.Namespace) -> Any:
    from foundry3d.edge.export import export_onnx

    return export_onnx(a.model, a.out, num_points=a.points, verify=not a.no_verify)


@verb("export", "Export a teacher or student to ONNX and check onnxruntime against PyTorch")(_export)
def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="release dir/.safetensors, or 'embedded'")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--points", type=int, default=1024, help="points per cloud that fixes the number of groups")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime parity check")


# -------------------------------------------------------------------------------------------- data
def _data(a: argparse.Namespace) -> Any:
    from foundry3d.data import build as builder
    from foundry3d.data.registry import dataset_info, list_datasets

    if a.action == "build":
        kw: dict[str, Any] = {"root": a.root, "force": a.force, "workers": a.workers, "deb": a.deb}
        if a.points:
            kw["points"] = a.points
        path = builder.build(a.name, **kw)
        return {"path": str(path)}
    if a.action == "list":
        rows = list_datasets(a.root)
        if a.json:
            print(json.dumps(rows, indent=2))
            return None
        print(f"{'dataset':<26} {'kind':<10} {'status':<12} how to get it")
        for r in rows:
            status = "built" if r["built"] else ("not built" if r["kind"] == "embedded" else "folder")
            print(f"{r['name']:<26} {r['kind']:<10} {status:<12} {r['build']}")
        return None
    if a.action == "info":
        info = dataset_info(a.name, root=a.root)
        print(json.dumps(info, indent=2) if a.json else _pretty(info))
        return None
    if a.action == "render":
        from foundry3d.report.preview import render_dataset

        path = render_dataset(a.name, out=a.out, per_class=a.per_class, root=a.root, max_classes=a.max_classes)
        print(path)
        return None
    raise SystemExit(f"unknown data action {a.action}")


def _pretty(info: dict[str, Any]) -> str:
    lines = []
    for k, v in info.items():
        if isinstance(v, dict):
            lines.append(f"{k}:")
            lines += [f"  {kk}: {vv}" for kk, vv in v.items()]
        else:
            lines.append(f"{k}: {v}")
    return "\n".join(lines)


@verb("data", "Build, list, inspect and render datasets (embedded Debian-built sets and benchmarks)")(_data)
def _data_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="build an embedded dataset from its Debian package (sh3d16, kicad)")
    b.add_argument("name")
    b.add_argument("--root", help="dataset cache folder (default: $FOUNDRY3D_CACHE or ~/.cache/foundry3d)")
    b.add_argument("--points", type=int, help="points stored per shape (default: 8192 sh3d16, 4096 kicad)")
    b.add_argument("--workers", type=int, help="processes (default: all cores)")
    b.add_argument("--deb", help="use this .deb instead of downloading it with apt-get")
    b.add_argument("--force", action="store_true", help="rebuild even if the dataset exists")
    ls = sub.add_parser("list", help="what is built and what can be built or read")
    ls.add_argument("--root")
    ls.add_argument("--json", action="store_true")
    i = sub.add_parser("info", help="counts of a dataset (shapes, classes, per class, parts)")
    i.add_argument("name", help="dataset name, e.g. sh3d16, kicad33, kicadparts, modelnet40@/path")
    i.add_argument("--root")
    i.add_argument("--json", action="store_true")
    r = sub.add_parser("render", help="PNG grid of a few shapes per class (points coloured by part if any)")
    r.add_argument("name", help="dataset spec, e.g. sh3d16:train or kicadparts:test")
    r.add_argument("--out", help="PNG path (default: runs/renders/<name>.png)")
    r.add_argument("--per-class", type=int, default=4)
    r.add_argument("--max-classes", type=int, default=40)
    r.add_argument("--root")


# ----------------------------------------------------------------------------------------- convert
def _convert(a: argparse.Namespace) -> Any:
    from foundry3d.models.convert import convert

    return convert(a.checkpoint, source=a.source, out=a.out, weights=a.weights, heads=a.heads, overwrite=a.overwrite)


@verb("convert", "Convert an official Point-JEPA / Point-MAE checkpoint into a foundry3d release")(_convert)
def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="official .ckpt (Point-JEPA) or .pth (Point-MAE) file")
    p.add_argument("--source", required=True, choices=["point-jepa", "point-mae"])
    p.add_argument("--out", required=True, help="release directory to write")
    p.add_argument("--weights", default="student", choices=["student", "ema"], help="Point-JEPA: online or EMA")
    p.add_argument("--heads", type=int, default=6, help="attention heads (not stored in the weights; ViT-S: 6)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing release in --out")


# ------------------------------------------------------------------------------------------ models
def _models(a: argparse.Namespace) -> Any:
    from foundry3d.config import to_dict
    from foundry3d.models.hub import list_models
    from foundry3d.models.variants import variant_config

    for name in list_models():
        c = to_dict(variant_config(name))
        print(
            f"{name:<10} dim={c['dim']:<4} depth={c['depth']:<3} heads={c['num_heads']:<3} "
            f"groups={c['num_groups']}x{c['group_size']} points={c['num_points']}"
        )


@verb("models", "List the registered model variants")(_models)
def _models_args(p: argparse.ArgumentParser) -> None:
    pass


# -------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foundry3d",
        description="Distill 3D point-cloud foundation models into small, fast, still-universal students.",
    )
    parser.add_argument("--version", action="version", version=f"foundry3d {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (help_text, setup, _) in VERBS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        setup(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = VERBS[args.verb][2](args)
    # Every deliberate foundry3d error derives from Foundry3DError: one line, exit 2. Anything
    # else is a bug and keeps its traceback.
    except Foundry3DError as e:
        if os.environ.get("FOUNDRY3D_DEBUG"):
            raise
        print(f"foundry3d {args.verb}: error: {e} (FOUNDRY3D_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"foundry3d {args.verb}: interrupted", file=sys.stderr)
        return 130
    if isinstance(result, dict) and result:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
