"""What every distilled student shares, whatever its compression (Foundry DSO, k-means, FPS,
PatchMerger, ToMe, none): a copy of the teacher's tokenizer and positional MLP, blocks copied from
the teacher, a final norm, and the CAU-style output map to the teacher's width.

The architecture of every student kind is one config, :class:`FoundryConfig`: ``kind`` picks the
compression, the other fields are shared knobs (a kind ignores the ones it has no use for).

Kinds register where they are defined (``@register_student("name")`` on the class, or
``register_student("name", Class, ...)`` for one class serving several kinds), with what they are: a
``learned`` assignment (Gumbel temperature, member-count gradient) and/or ``supertokens`` (tokens merged
into s bins that CAU reads back: empty bins exist). A new kind is one new file in
:mod:`foundry3d.models.students`; :func:`student_kinds` imports them all.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor, nn
from typing_extensions import override

from foundry3d.config import from_dict
from foundry3d.errors import ConfigError, InputError
from foundry3d.models.backbone import BackboneConfig, PointTransformer
from foundry3d.models.base import PointModel
from foundry3d.models.checkpoint import weights_hash
from foundry3d.models.encoder import Block, run_blocks
from foundry3d.registry import Registry

STUDENTS: Registry[type[Student]] = Registry("student kind")
# the modules that define the built-in kinds (besides every module of foundry3d.models.students)
_DEFINED_IN = ("foundry3d.models.foundry", "foundry3d.models.baselines")
_loaded: list[bool] = []


def register_student(name: str, cls: type[Student] | None = None, **info: Any) -> Any:
    """Register a student kind: ``@register_student("mlp")`` on its class, or ``register_student("kmeans",
    FoundryStudent, supertokens=True, note=...)``. ``info``: ``learned`` (a learned assignment),
    ``supertokens`` (s merged bins read back by CAU), ``note`` (one line for ``foundry3d models``)."""
    flags = {"learned": False, "supertokens": False, "note": "", **info}
    if cls is not None:
        return STUDENTS.register(name, cls, **flags)

    def deco(c: type[Student]) -> type[Student]:
        c.student_kind = name
        return STUDENTS.register(name, c, **flags)

    return deco


def student_kinds() -> Registry[type[Student]]:
    """Every student kind: imports the modules that define them once (each registers its kinds)."""
    if not _loaded:
        from foundry3d.models import students as package

        for module in (*_DEFINED_IN, *(f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__))):
            importlib.import_module(module)
        _loaded.append(True)
    return STUDENTS


def kinds_with(flag: str) -> tuple[str, ...]:
    """The registered kinds whose registration sets ``flag`` (``learned`` or ``supertokens``)."""
    reg = student_kinds()
    return tuple(n for n in reg.names() if reg.info(n).get(flag))


@dataclass
class StudentArch:
    """Architecture knobs of a student (stored in every student release)."""

    kind: str = "foundry"  # a registered student kind (foundry3d models --kind student lists them)
    supertokens: int = 16  # s: SuperTokens (foundry/kmeans/fps/tome_dso), queries (patchmerger)
    blocks: list[int] | None = None  # teacher blocks copied into the encoder (None: every other block)
    similarity: Literal["cosine", "dot"] = "cosine"  # DSO: cosine = normalised q, k with a learned temperature
    centre_keys: bool = True  # DSO keys from tokens minus their cloud's mean token
    # SuperToken position: mean of the members' positional embeddings, or the embedding of the
    # members' mean centre. Empty SuperTokens get position 0.
    supertoken_pos: Literal["mean_pe", "pe_of_mean"] = "mean_pe"
    cau_hidden_ratio: float = 2.0
    cau_skip: bool = True  # Y_hat = routed + MLP(...); False: Y_hat = MLP(...) as in the paper's formula
    gate: bool = False
    gate_hidden: int = 64
    gate_threshold: float = 0.5  # default r; change it at run time without retraining
    kmeans_iters: int = 10  # kind=kmeans: Lloyd iterations after k-means++ seeding
    # The student's patch tokenizer: a copy of the teacher's, or a narrower one trained from scratch by
    # the distillation loss (the tokenizer is the cost floor of every student: see the edge recipe).
    tokenizer: Literal["copy", "narrow"] = "copy"
    tokenizer_widths: tuple[int, int, int] | None = None  # narrow: (c1, c2, c3); None = half the teacher's
    tome_r: int | None = None  # kind=tome/tome_dso: tokens merged per block (None: as many as halve the tokens)
    # Details the paper leaves open (issue: the SuperToken question), as options chosen on validation:
    # member counts in the gradient of the bin mean (True: the straight-through gradient of a member's one-hot
    # entry is (v - mean) / n, as for a true mean; False: v / n, the counts detached)
    count_grad: bool = False
    # empty SuperTokens: "fallback" takes the learnable SuperToken vector into attention, "mask" keeps empty
    # bins out of attention (no token reads them back anyway: CAU routes members only)
    empty_bins: Literal["fallback", "mask"] = "fallback"

    def validate(self) -> None:
        """Refuse an unknown kind, SuperTokens below 1, a gate threshold outside [0, 1], a gate on another kind."""
        if self.kind not in student_kinds():
            raise ConfigError(f"student kind {self.kind!r} is not one of {', '.join(student_kinds().names())}")
        if self.supertokens < 1:
            raise ConfigError(f"supertokens must be >= 1, got {self.supertokens}")
        if not 0.0 <= self.gate_threshold <= 1.0:
            raise ConfigError(f"gate threshold r must be in [0, 1], got {self.gate_threshold}")
        if self.gate and self.kind != "foundry":
            raise ConfigError(f"the gate belongs to the foundry student; kind={self.kind!r} has none")
        if self.kmeans_iters < 1:
            raise ConfigError(f"kmeans_iters must be >= 1, got {self.kmeans_iters}")
        if self.tome_r is not None and self.tome_r < 0:
            raise ConfigError(f"tome_r must be >= 0, got {self.tome_r}")
        if self.count_grad and self.kind not in kinds_with("learned"):
            raise ConfigError(f"count_grad needs a learned assignment (kind=foundry); kind={self.kind!r} has none")
        if self.empty_bins == "mask" and self.kind not in kinds_with("supertokens"):
            bins = ", ".join(kinds_with("supertokens"))
            raise ConfigError(f"empty_bins=mask needs a SuperToken student ({bins}), got {self.kind!r}")
        if self.tokenizer_widths is not None and (self.tokenizer != "narrow" or min(self.tokenizer_widths) < 1):
            raise ConfigError("tokenizer_widths needs tokenizer=narrow and three positive widths")


@dataclass
class FoundryConfig(StudentArch):
    """A student's architecture plus the teacher it was built from."""

    teacher: dict = field(default_factory=dict)  # the teacher's BackboneConfig (tokenizer + blocks are copied)
    teacher_name: str = ""
    teacher_hash: str = ""

    @override
    def validate(self) -> None:
        super().validate()
        if not self.teacher:
            raise ConfigError("FoundryConfig.teacher must hold the teacher's backbone config")

    @property
    def teacher_config(self) -> BackboneConfig:
        """The teacher's backbone config the student copies its tokenizer and blocks from."""
        return from_dict(BackboneConfig, self.teacher)

    def student_blocks(self) -> list[int]:
        """Which teacher blocks the light encoder copies (evenly spread; none for the mlp kind)."""
        if self.kind == "mlp":
            return []
        depth = self.teacher_config.depth
        blocks = list(range(0, depth, 2)) if self.blocks is None else list(self.blocks)
        bad = [b for b in blocks if not 0 <= b < depth]
        if bad:
            raise InputError(f"student blocks {bad} do not exist in the {depth}-block teacher")
        return blocks


class CAU(nn.Module):
    """Cross-Attention Upsampling's output map: each token position has received its compressed
    token (``routed``); add the original token + position, map to the teacher width."""

    def __init__(self, dim: int, out_dim: int, hidden_ratio: float, skip: bool) -> None:
        super().__init__()
        hidden = int(dim * hidden_ratio)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.skip = skip and dim == out_dim

    @override
    def forward(self, routed: Tensor, tokens: Tensor, pos: Tensor) -> Tensor:
        out = self.mlp(self.norm(routed + tokens + pos))
        return routed + out if self.skip else out


class Student(PointModel):
    """Base of every student kind: tokenizer, positional MLP, copied blocks, norm and CAU."""

    kind = "student"
    student_kind = "base"

    def groups_for(self, num_points: int) -> int:
        """The backbone's patch rule, with at least ``s`` patches (each SuperToken needs a token)."""
        return max(super().groups_for(num_points), min(self.cfg.supertokens, num_points))

    def __init__(self, cfg: FoundryConfig) -> None:
        cfg.validate()
        t = cfg.teacher_config
        if cfg.tokenizer == "narrow":
            widths = cfg.tokenizer_widths or tuple(max(4, w // 2) for w in t.tokenizer_widths)
            c1, c2, c3 = widths
            t = dataclasses.replace(t, tokenizer_widths=(c1, c2, c3), tokenizer_channels=None)
        super().__init__(t)
        self.cfg = cfg
        self.blocks = nn.ModuleList(
            Block(t.dim, t.num_heads, t.mlp_ratio, t.qkv_bias, eps=t.norm_eps) for _ in cfg.student_blocks()
        )
        self.norm = nn.LayerNorm(t.dim, eps=t.norm_eps) if len(self.blocks) else None
        self.cau = CAU(t.dim, t.dim, cfg.cau_hidden_ratio, cfg.cau_skip)

    @classmethod
    def from_teacher(cls, teacher: PointTransformer, **options: Any) -> Student:
        """A student whose tokenizer, positional MLP, blocks and final norm are copies of the teacher's."""
        cfg = FoundryConfig(
            teacher=teacher.config_dict(),
            teacher_name=teacher.cfg.name,
            teacher_hash=getattr(teacher, "release_hash", None) or weights_hash(teacher.state_dict()),
            **{"kind": cls.student_kind, **options},
        )
        student = cls(cfg)
        if cfg.tokenizer == "copy":
            student.tokenizer.load_state_dict(teacher.tokenizer.state_dict())
        student.pos_embed.load_state_dict(teacher.pos_embed.state_dict())
        for mine, b in zip(student.blocks, cfg.student_blocks()):
            mine.load_state_dict(teacher.encoder.blocks[b].state_dict())
        if student.norm is not None:
            student.norm.load_state_dict(teacher.encoder.norm.state_dict())
        return student

    @property
    @override
    def num_blocks(self) -> int:
        return max(1, len(self.blocks))

    def encode(
        self, x: Tensor, pos: Tensor, mask: Tensor | None = None, indices: list[int] | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """The copied blocks (positions added like in the teacher), then the final norm."""
        x, hidden = run_blocks(self.blocks, x, pos, mask, indices, self.tcfg.pos_every_layer)
        return (self.norm(x) if self.norm is not None else x), hidden  # no norm without blocks


def student_from_config(cfg: dict | FoundryConfig) -> Student:
    """Build a student of the registered kind its config names."""
    c = cfg if isinstance(cfg, FoundryConfig) else from_dict(FoundryConfig, cfg)
    if c.kind not in student_kinds():
        raise InputError(f"unknown student kind {c.kind!r}; kinds: {', '.join(student_kinds().names())}")
    return student_kinds().get(c.kind)(copy.deepcopy(c))
