"""Bring your own teacher: any ``torch.nn.Module`` that maps a cloud to tokens and their centres.

The adapter contract (what ``foundry3d distill --teacher py:FILE_OR_MODULE:FACTORY`` or
``foundry3d.distill(teacher=module)`` accepts)::

    tokens, centres = teacher(points)
    # points  (B, N, 3) float32, each cloud centred and scaled into the unit sphere
    # tokens  (B, c, d) the teacher's output tokens (the distillation targets)
    # centres (B, c, 3) where each token sits, in the same frame as ``points``

``FACTORY`` is a callable that takes no argument and returns that module (weights loaded, any
wrapping done), e.g. ``py:my_teacher.py:build`` or ``py:mypackage.models:load_teacher``.

A foreign teacher's blocks cannot be copied into a student, so the student gets fresh ones: a
``surrogate`` backbone of the teacher's width d (``SURROGATE_DEPTH`` blocks, our tokenizer layout, random
weights) gives the student its shape, and the distillation trains every part of it, its tokenizer
included, grouping the cloud around the *teacher's* centres so that token i of the student matches
token i of the teacher. At inference the student groups the cloud itself (FPS), like any student.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from foundry3d.errors import Foundry3DError
from foundry3d.models.backbone import BackboneConfig, PointTransformer, backbone_from_config
from foundry3d.models.checkpoint import weights_hash

SURROGATE_DEPTH = 4  # the student's default blocks are every other one: 2 fresh blocks
PROBE_POINTS = 1024


class ForeignTeacherError(Foundry3DError, ValueError):
    """A foreign teacher that cannot be loaded or does not keep the adapter contract."""


_MODULES: dict[str, nn.Module] = {}  # name -> module given to the Python API (``module:NAME`` specs)


def register_module(module: nn.Module) -> str:
    """A spec (``module:NAME``) under which this process's ``distill`` finds ``module``."""
    name = f"module:{type(module).__name__}-{weights_hash(module.state_dict())[:12]}"
    _MODULES[name] = module
    return name


class ForeignTeacher(nn.Module):
    """A user's module behind the adapter contract, checked, frozen, with a surrogate backbone config."""

    kind = "foreign"

    def __init__(self, module: nn.Module, spec: str, num_points: int = PROBE_POINTS) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ForeignTeacherError(f"teacher {spec}: expected a torch.nn.Module, got {type(module).__name__}")
        self.module = module.eval().requires_grad_(False)
        self.spec = spec
        x = torch.randn(2, num_points, 3, generator=torch.Generator().manual_seed(0))
        x = x / x.norm(dim=-1).amax(1, keepdim=True)[..., None]
        tokens, _centres = self(x)
        self.dim, self.num_groups = tokens.shape[2], tokens.shape[1]
        heads = next((h for h in (6, 4, 3, 2, 1) if self.dim % h == 0 and self.dim // h >= 16), 1)
        self.cfg = BackboneConfig(
            name=f"surrogate of {spec}",
            num_points=num_points,
            num_groups=self.num_groups,
            group_size=min(32, num_points // 2),
            tokenizer_widths=(64, 64, 128),
            pos_hidden=64,
            dim=self.dim,
            depth=SURROGATE_DEPTH,
            num_heads=heads,
            extra={"foreign_teacher": spec},
        )
        self.release_hash = weights_hash(self.module.state_dict()) + f"|{spec}"

    @torch.no_grad()
    def forward(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """``(tokens (B, c, d), centres (B, c, 3))`` of unit-sphere clouds, checked against the contract."""
        try:
            out = self.module(points)
        except Exception as e:  # the user's code: any failure is reported with the contract
            raise ForeignTeacherError(
                f"teacher {self.spec} failed on clouds of shape {tuple(points.shape)} ({type(e).__name__}: {e}); "
                "expected module(points (B, N, 3)) -> (tokens (B, c, d), centres (B, c, 3))"
            ) from e
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ForeignTeacherError(
                f"teacher {self.spec} returned {type(out).__name__}; "
                "expected a pair (tokens (B, c, d), centres (B, c, 3))"
            )
        tokens, centres = out
        b = points.shape[0]
        if not (isinstance(tokens, Tensor) and tokens.ndim == 3 and tokens.shape[0] == b):
            got = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ForeignTeacherError(f"teacher {self.spec}: tokens {got}, expected (B={b}, c, d)")
        if not (isinstance(centres, Tensor) and centres.shape == (b, tokens.shape[1], 3)):
            got = tuple(centres.shape) if isinstance(centres, Tensor) else type(centres).__name__
            raise ForeignTeacherError(f"teacher {self.spec}: centres {got}, expected (B={b}, c={tokens.shape[1]}, 3)")
        if not (torch.isfinite(tokens).all() and torch.isfinite(centres).all()):
            raise ForeignTeacherError(f"teacher {self.spec} returned NaN or infinite values")
        return tokens.float(), centres.float()

    def surrogate(self) -> PointTransformer:
        """A randomly initialised backbone of the teacher's width: the shape of the student's fresh parts."""
        torch.manual_seed(0)
        return backbone_from_config(self.cfg)

    def config_dict(self) -> dict[str, Any]:
        """What identifies the adapted teacher (its spec, width and token count) in records."""
        return {"foreign_teacher": self.spec, "dim": self.dim, "num_groups": self.num_groups}


def load_foreign(spec: str) -> ForeignTeacher:
    """``py:FILE.py:FACTORY``, ``py:package.module:FACTORY`` or ``module:NAME`` (a module given to the API)."""
    if spec in _MODULES:
        return ForeignTeacher(_MODULES[spec], spec)
    if spec.startswith("module:"):
        raise ForeignTeacherError(f"teacher {spec}: no such module in this process (pass the module itself)")
    target, colon, factory = spec[len("py:") :].rpartition(":")
    if not (colon and target and factory.isidentifier()):
        raise ForeignTeacherError(
            f"teacher {spec}: expected py:FILE.py:FACTORY or py:package.module:FACTORY (a function that returns "
            "the teacher module)"
        )
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser()
            if not path.is_file():
                raise ForeignTeacherError(f"teacher {spec}: {path} is not a file")
            mod_spec = importlib.util.spec_from_file_location(f"foundry3d_teacher_{path.stem}", path)
            assert mod_spec is not None and mod_spec.loader is not None
            mod = importlib.util.module_from_spec(mod_spec)
            sys.modules[mod_spec.name] = mod
            mod_spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(target)
    except ForeignTeacherError:
        raise
    except Exception as e:  # the user's module failed to import
        raise ForeignTeacherError(f"teacher {spec}: cannot import {target} ({type(e).__name__}: {e})") from e
    fn = getattr(mod, factory, None)
    if not callable(fn):
        raise ForeignTeacherError(f"teacher {spec}: {target} has no function {factory!r}")
    try:
        module = fn()
    except Exception as e:
        raise ForeignTeacherError(f"teacher {spec}: {factory}() failed ({type(e).__name__}: {e})") from e
    return ForeignTeacher(module, spec)
