"""The one home for models: create, list, load, resolve and hash every model foundry3d knows.

* ``create_model("tiny")`` a registered variant with random weights (timm-style); with
  ``pretrained=True`` the embedded teacher of that name (``tiny3`` or ``tiny.tiny3``).
* ``create_student(teacher, kind="foundry", supertokens=16, ...)`` any registered student kind,
  initialised from the teacher.
* ``load(path)`` any release (teacher backbone or student of any kind), in eval mode.
* ``resolve(spec)`` the model a command-line spec names, with its description and hash:

  ======================  =============================================================
  ``PATH``                a release folder or ``.safetensors`` file
  ``embedded[:NAME]``     a teacher shipped in the package (default: the current one)
  ``random:VARIANT``      a variant with random weights (seed 0)
  ``floor:SPEC``          the training-free floor of a backbone (tokenizer + positions)
  ``tome:SPEC?r=N``       training-free ToMe (``pitome:`` PiToMe) on a backbone, N merges
                          per block
  ``SPEC?r=0.7``          a gated student at threshold r (``?keep=8``: the 8 lowest-scoring
                          tokens bypass); part of the model's hash
  ======================  =============================================================

Run-time options are arguments of ``forward_tokens``; :class:`WithOptions` binds them to a
model so that every consumer (evaluation, bench, export) passes them, and the hash includes them.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from typing_extensions import override

from foundry3d.assets import ASSETS
from foundry3d.models.backbone import BackboneConfig, PointTransformer, backbone_from_config
from foundry3d.models.base import PointModel, TokenOutput
from foundry3d.models.baselines import MergedBackbone
from foundry3d.models.checkpoint import CheckpointError, read_release, weights_hash
from foundry3d.models.floor import Floor
from foundry3d.models.foreign import load_foreign
from foundry3d.models.student import STUDENTS, Student, student_from_config, student_kinds
from foundry3d.models.variants import VARIANTS, variant_config
from foundry3d.registry import Registry

__all__ = [
    "EMBEDDED",
    "STUDENTS",
    "VARIANTS",
    "HubError",
    "WithOptions",
    "create_model",
    "create_student",
    "list_models",
    "load",
    "load_teacher",
    "model_hash",
    "model_table",
    "resolve",
]


class HubError(CheckpointError):
    """A model spec, kind or option that does not name a usable model."""


# Teachers shipped in the package (folder under foundry3d/assets); "embedded" means DEFAULT_TEACHER.
EMBEDDED: Registry = Registry("embedded teacher")
EMBEDDED.register("tiny", "teacher_tiny", variant="tiny", note="Point-JEPA tiny, SH3D + KiCad, 4,000 steps")
EMBEDDED.register(
    "tiny2", "teacher_tiny2", variant="tiny", note="Point-JEPA tiny, game-asset corpus + SH3D + KiCad, 3,000 steps"
)
EMBEDDED.register(
    "tiny3", "teacher_tiny3", variant="tiny", note="Point-JEPA tiny, game-asset corpus + SH3D + KiCad, 10,000 steps"
)
# the default: the shipped teacher that scores highest on the held-out tasks, paired over the same test items
# (the comparison of tiny3 with tiny2 is rendered in docs/results.md from docs/teacher_tiny3_run)
DEFAULT_TEACHER = "tiny3"

RELEASE_KINDS = ("backbone", "student", "foundry_student")  # foundry_student: releases before the hub


def list_models(kind: str = "variant") -> list[str]:
    """List the registered models: backbone variants, student kinds or embedded teachers.

    Args:
        kind: variant, student or embedded.
    """
    reg = {"variant": VARIANTS, "student": student_kinds(), "embedded": EMBEDDED}
    if kind not in reg:
        raise HubError(f"list_models kind must be one of {', '.join(reg)}, got {kind!r}")
    return reg[kind].names()


def embedded_path(name: str | None = None) -> Path:
    """Release folder of an embedded teacher (``None``: the default one)."""
    key = name or DEFAULT_TEACHER
    if key not in EMBEDDED:
        raise HubError(f"no embedded teacher {key!r}; embedded teachers: {', '.join(EMBEDDED.names())}")
    path = ASSETS / EMBEDDED.get(key)
    if not (path / "model.safetensors").is_file():
        raise HubError(f"the embedded teacher is missing from {path}; reinstall foundry3d or pass a release path")
    return path


def model_table(kind: str | None = None) -> str:
    """The models you can name: embedded teachers (the default marked), backbone variants, student kinds.

    One line each: what ``load``, ``create_model`` and ``create_student`` accept.

    Args:
        kind: only one section: embedded, variant or student.
    """
    sections = {"embedded": EMBEDDED, "variant": VARIANTS, "student": student_kinds()}
    if kind is not None and kind not in sections:
        raise HubError(f"models: kind must be one of {', '.join(sections)}, got {kind!r}")
    lines: list[str] = []
    if kind in (None, "embedded"):
        lines.append("embedded teachers (load('embedded:NAME'); 'embedded' is the one marked *):")
        for n in EMBEDDED.names():
            mark = "*" if n == DEFAULT_TEACHER else " "
            lines.append(f"  {mark} {n:<10} {EMBEDDED.info(n).get('note', '')}")
    if kind in (None, "variant"):
        lines.append("backbone variants (create_model(NAME), random weights):")
        for n, fn in VARIANTS.items():
            doc = (fn.__doc__ or "").strip().split("\n")[0]
            lines.append(f"    {n:<10} {doc}")
    if kind in (None, "student"):
        lines.append("student kinds (distill student.kind=KIND / create_student(teacher, KIND)):")
        for n, cls in student_kinds().items():
            doc = STUDENTS.info(n).get("note") or (cls.__doc__ or "").strip().split("\n")[0]
            lines.append(f"    {n:<13} {doc}")
    return "\n".join(lines)


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> PointTransformer:
    """Variant ``name`` with random weights; with ``pretrained=True`` the embedded teacher of that name
    (as timm: ``NAME`` or ``VARIANT.NAME``, e.g. ``tiny3`` or ``tiny.tiny3``), never another one's weights."""
    if not pretrained:
        return PointTransformer(variant_config(name, **overrides))
    if overrides:
        raise HubError("pretrained=True loads a release as it is: no config overrides")
    variant, dot, tag = name.rpartition(".")
    key = tag if dot else name
    if key in EMBEDDED and (not dot or EMBEDDED.info(key).get("variant") == variant):
        return load(embedded_path(key), expect_kind="backbone")  # type: ignore[return-value]
    shipped = ", ".join(f"{n} ({EMBEDDED.info(n)['variant']})" for n in EMBEDDED.names())
    raise HubError(f"no pretrained weights named {name!r}; shipped: {shipped} (pass one of those names)")


def create_student(teacher: PointTransformer, kind: str = "foundry", **arch: Any) -> Student:
    """A student of ``kind`` whose tokenizer, positions, blocks and norm are copies of ``teacher``'s."""
    cls = student_kinds().get(kind)
    return cls.from_teacher(teacher, **{**arch, "kind": kind})


def _build(kind: str, config: dict) -> PointModel:
    if kind == "backbone":
        return backbone_from_config(config)
    if kind in ("student", "foundry_student"):
        return student_from_config(config)
    raise HubError(f"unknown model kind {kind!r}; known kinds: backbone, student")


SPEC_PREFIXES = ("embedded:", "floor:", "tome:", "pitome:", "random:")


def load(path: str | Path, expect_kind: str | None = None) -> PointModel:
    """Any model a spec names, in eval mode: a release folder or ``.safetensors`` file (teacher backbone or
    student of any kind), or any spec the command line takes (``embedded[:NAME]``, ``floor:SPEC``,
    ``tome:SPEC?r=N``, ``RELEASE?r=0.7``, ``random:VARIANT``; see :func:`resolve`)."""
    if not str(path).strip():
        raise HubError(
            "a model spec is empty: expected a release folder, a .safetensors file, embedded[:NAME], floor:SPEC, "
            "tome:SPEC?r=N or random:VARIANT"
        )
    text = str(path)
    if isinstance(path, str) and (text == "embedded" or text.startswith(SPEC_PREFIXES) or "?" in text):
        model = resolve(text)[0]
        got = "backbone" if getattr(model, "kind", "") == "backbone" else "student"
        if expect_kind is not None and got != ("student" if expect_kind == "foundry_student" else expect_kind):
            raise CheckpointError(f"{text} is a {got!r} model, but a {expect_kind!r} model was expected")
        return model
    if not Path(path).expanduser().exists():
        raise HubError(f"{path} does not exist and names no model: {_what_exists()}")
    header, state = read_release(path)
    kind = header["kind"]
    want = "student" if expect_kind == "foundry_student" else expect_kind
    got = "student" if kind == "foundry_student" else kind
    if want is not None and got != want:
        raise CheckpointError(f"{path} holds a {got!r} model, but a {want!r} model was expected")
    if kind not in RELEASE_KINDS:
        raise CheckpointError(f"{path}: unknown model kind {kind!r}; known kinds: backbone, student")
    try:
        with torch.device("meta"):  # shapes only: a config cannot make us allocate what its weights do not hold
            shapes = {k: tuple(v.shape) for k, v in _build(kind, header["config"]).state_dict().items()}
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: its stored config does not build a {kind} model: {e}") from e
    stored = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != stored:
        diff = sorted(k for k in shapes.keys() | stored.keys() if shapes.get(k) != stored.get(k))
        raise CheckpointError(
            f"{path}: weights do not fit the stored {kind} config ({len(diff)} tensors differ, e.g. {diff[0]}: "
            f"config {shapes.get(diff[0])}, file {stored.get(diff[0])})"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} weight tensors hold NaN or infinite values (e.g. {bad[0]})")
    model = _build(kind, header["config"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the stored {kind} config: {e}") from e
    model.release_meta = header.get("meta", {})
    model.release_hash = header["weights_sha256"]
    return model.eval()


def _what_exists() -> str:
    """The specs a user may have meant: the embedded teachers and releases under the current folder."""
    found: list[str] = []
    for pattern in ("*.safetensors", "*/release", "*/*/release", "*/*/*/release"):
        found += [
            str(p) for p in sorted(Path.cwd().glob(pattern))[:5] if p.suffix or (p / "model.safetensors").is_file()
        ]
    embedded = ", ".join(["embedded", *(f"embedded:{n}" for n in EMBEDDED.names())])
    here = f"; releases here: {', '.join(found[:5])}" if found else "; no release folder under the current folder"
    return (
        f"expected a release folder or .safetensors file, {embedded}, floor:SPEC, tome:SPEC?r=N or random:VARIANT{here}"
    )


def load_teacher(spec: str) -> PointTransformer:
    """A frozen teacher backbone from a release path or ``embedded[:NAME]``; a foreign teacher from
    ``py:FILE_OR_MODULE:FACTORY`` (:mod:`foundry3d.models.foreign`)."""
    if spec.startswith(("py:", "module:")):
        return load_foreign(spec)  # type: ignore[return-value]
    path = embedded_path(spec.partition(":")[2] or None) if spec.split(":")[0] == "embedded" else spec
    try:
        model = load(path, expect_kind="backbone")
    except CheckpointError as e:
        if "'student'" in str(e):
            raise CheckpointError(f"{spec} is a student, not a teacher: distil from a backbone release") from e
        raise
    return model.eval().requires_grad_(False)  # type: ignore[return-value]


class WithOptions(nn.Module):
    """A model with run-time options bound (e.g. a gated student's ``r``); forwards every call."""

    model: PointModel

    def __init__(self, model: PointModel, **options: Any) -> None:
        super().__init__()
        self.model = model
        self.options = dict(options)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)

    def forward_tokens(self, tokens: torch.Tensor, centres: torch.Tensor, **kwargs: Any) -> TokenOutput:
        """The wrapped model's ``forward_tokens`` with the spec's options (e.g. a gate threshold) applied."""
        return self.model.forward_tokens(tokens, centres, **{**self.options, **kwargs})

    def forward_features(self, points: torch.Tensor, num_groups: int | None = None, **kwargs: Any) -> TokenOutput:
        """The wrapped model's ``forward_features`` with the spec's options applied."""
        return self.model.forward_features(points, num_groups, **{**self.options, **kwargs})

    def forward_intermediates(self, points: torch.Tensor, *args: Any, **kwargs: Any) -> TokenOutput:
        """The wrapped model's ``forward_intermediates`` with the spec's options applied."""
        return self.model.forward_intermediates(points, *args, **{**self.options, **kwargs})

    def forward_head(self, features: Any, pre_logits: bool = False) -> torch.Tensor:
        """The wrapped model's ``forward_head`` (options do not change pooling or logits)."""
        return self.model.forward_head(features, pre_logits)

    def embed(self, points: Any, groups: int | None = None) -> torch.Tensor:
        """As :meth:`PointModel.embed`, with the bound options."""
        return PointModel.embed(self, points, groups)  # type: ignore[arg-type]

    @override
    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(points))


def model_hash(model: nn.Module) -> str:
    """Stable 16-hex hash of what a model computes: weights, config and bound run-time options."""
    if isinstance(model, WithOptions):
        text = model_hash(model.model) + json.dumps(model.options, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
    h = getattr(model, "release_hash", None)
    if h:
        return h[:16]
    config_dict = getattr(model, "config_dict", None)
    cfg = config_dict() if callable(config_dict) else {}
    text = type(model).__name__ + json.dumps(cfg, sort_keys=True, default=str) + weights_hash(model.state_dict())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parse_options(spec: str) -> tuple[str, dict[str, float | int]]:
    base, sep, query = spec.partition("?")
    opts: dict[str, float | int] = {}
    if not sep:
        return base, opts
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if key not in ("r", "keep") or not eq:
            raise HubError(f"unknown model option {item!r} in {spec!r}; options: r=<number>, keep=<int>")
        if key in opts:
            raise HubError(f"model option {key} is given twice in {spec!r}: give it once")
        try:
            opts[key] = int(value) if key == "keep" or "." not in value else float(value)
        except ValueError as e:
            raise HubError(f"model option {key} in {spec!r} must be a number, got {value!r}") from e
        if not math.isfinite(opts[key]) or opts[key] < 0:
            raise HubError(f"model option {key} in {spec!r} must be a finite number >= 0, got {value!r}")
    return base, opts


def resolve(spec: str | nn.Module) -> tuple[PointModel, dict[str, Any]]:
    """The model a spec names (see the module docstring) in eval mode, and its description."""
    model: PointModel
    if isinstance(spec, nn.Module):
        model, name = cast(PointModel, spec), type(spec).__name__
    else:
        base, opts = _parse_options(spec)
        prefix, colon, rest = base.partition(":")
        if prefix in ("floor", "tome", "pitome") and colon:
            inner, inner_info = resolve(rest)
            if not isinstance(inner, PointTransformer):
                raise HubError(f"{prefix}:{rest} needs a teacher backbone, but {rest} is a {inner_info['kind']}")
            if prefix == "floor":
                if opts:
                    raise HubError(f"the floor takes no options ({spec})")
                model = Floor(inner)
            else:
                if "keep" in opts:
                    raise HubError(f"{prefix} takes r=<merges per block>, not keep ({spec})")
                r = opts.pop("r", None)
                if r is not None and r != int(r):
                    raise HubError(f"{prefix}: r is the number of tokens merged per block, a whole number ({spec})")
                model = MergedBackbone(inner, prefix, None if r is None else int(r))
            name = spec
        else:
            if base.startswith("random:"):
                torch.manual_seed(0)
                model = create_model(base.split(":", 1)[1])
            elif base.split(":")[0] == "embedded":
                model = load_teacher(base)
            else:
                model = load(base)
            name = spec
            if "r" in opts and opts["r"] > 1:
                raise HubError(f"r is a gate threshold in [0, 1], got {opts['r']} ({spec})")
            if "keep" in opts and opts["keep"] < 1:
                raise HubError(f"keep is the number of tokens kept, >= 1, got {opts['keep']} ({spec})")
            if opts:
                if getattr(model, "gate", None) is None:
                    raise HubError(
                        f"{base} has no gate: r/keep only apply to students distilled with student.gate=true"
                    )
                model = cast(PointModel, WithOptions(model, **opts))  # a proxy: every PointModel call forwards
    for attr in ("forward_features", "forward_tokens", "num_features"):
        if not hasattr(model, attr):
            raise HubError(f"{name} has no {attr}: evaluated models must expose the backbone interface")
    model.eval()
    info = {
        "model": name,
        "kind": _kind(model),
        "hash": model_hash(model),
        "params": int(sum(p.numel() for p in model.parameters())),
        "width": int(model.num_features // 2),
    }
    return model, info


def describe_model(model: nn.Module, info: dict[str, Any]) -> str:
    """One line saying what a resolved model is, so a table row can be traced to an architecture."""
    inner = model.model if isinstance(model, WithOptions) else model
    if isinstance(inner, Student):
        cfg = inner.cfg
        widths = list(cfg.tokenizer_widths) if cfg.tokenizer_widths else "half the teacher's widths"
        tok = f"narrow tokenizer {widths}" if cfg.tokenizer == "narrow" else "teacher's tokenizer"
        return (
            f"{info['kind']} s={cfg.supertokens}, {tok}, teacher blocks {cfg.student_blocks()}, "
            f"CAU hidden ratio {cfg.cau_hidden_ratio}, {info['params']:,} parameters"
        )
    return f"{info['kind']}, {info['params']:,} parameters"


def _kind(model: nn.Module) -> str:
    inner = model.model if isinstance(model, WithOptions) else model
    if isinstance(inner, Student):
        return f"student:{inner.cfg.kind}"
    return str(getattr(inner, "kind", type(inner).__name__))


def teacher_config(model: nn.Module) -> BackboneConfig:
    """The backbone config behind any model (a student's teacher config for students)."""
    inner = model.model if isinstance(model, WithOptions) else model
    if not isinstance(inner, PointModel):
        raise HubError(f"{type(inner).__name__} is not a foundry3d model: it has no backbone config")
    return inner.tcfg
