"""Token-level fidelity: how well a model reproduces its teacher's output tokens on held-out clouds.

This is the distillation objective measured where it counts (test clouds no training saw), with
narrow intervals: per-token cosine similarity of Y_hat and Y, and R^2 = 1 - SSE / SST with SST the
spread of Y around its mean token (per channel, over the test split). R^2 = 1 for Y_hat = Y, about
0 for a constant Y_hat equal to the mean token, negative for worse. Y is the teacher's
``forward_tokens`` output (its final-normed last block: what distillation's ``final`` target is).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from typing_extensions import override

from foundry3d.data.base import PointCloudDataset
from foundry3d.errors import InputError
from foundry3d.eval.context import Context, data_ids
from foundry3d.eval.task import EvalError, EvalTask, Items, register_task
from foundry3d.files import atomic_write
from foundry3d.models.base import PointModel
from foundry3d.models.baselines import MergedBackbone
from foundry3d.models.features import tokenized
from foundry3d.models.floor import Floor
from foundry3d.models.hub import EMBEDDED, load_teacher, model_hash, teacher_config


@dataclass
class FidelityConfig:
    """Token-fidelity settings: the teacher the tokens are compared with, the cloud size, the batch."""

    teacher: str = "auto"  # reference teacher spec; auto: the student's own teacher if it is an embedded one
    num_points: int = 1024
    batch_size: int = 64


def fidelity_arrays(y_hat: torch.Tensor, y: torch.Tensor, mean: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-cloud sums for R^2 (sse, sst) and mean token cosine, from (B, c, D) outputs."""
    sse = (y_hat - y).pow(2).sum((1, 2))
    sst = (y - mean).pow(2).sum((1, 2))
    cos = F.cosine_similarity(y_hat, y, dim=-1).mean(1)
    return {"sse": sse.double().numpy(), "sst": sst.double().numpy(), "cos": cos.double().numpy()}


def output_tokens(model: PointModel, tokens: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor:
    """A model's output tokens (N, c, D) in float32 from its patch tokens and centres, in batches."""
    out = []
    for s in range(0, len(tokens["tokens"]), batch_size):
        sl = slice(s, s + batch_size)
        out.append(model.forward_tokens(tokens["tokens"][sl], tokens["centres"][sl])["tokens"].float())
    return torch.cat(out)


@torch.no_grad()
def teacher_tokens(
    teacher: PointModel, test: PointCloudDataset, cfg: FidelityConfig, cache: Path | None = None
) -> torch.Tensor:
    """The teacher's output tokens Y (N, c, D) on the test clouds; with ``cache`` (a folder), kept there once per
    (teacher weights, test data, cloud size) and read back by every later model compared with the same teacher.

    Why: a sweep or a study scores dozens of students against one teacher, and at 16,384 points the teacher's
    blocks on 1,024 tokens per cloud are most of each fidelity run. The file holds the float32 values the
    teacher computes, so a score from the cache is the score without it, to the bit."""
    key = json.dumps(
        {"teacher": model_hash(teacher), "data": test.fingerprint(), "points": cfg.num_points, "sampling": "first"},
        sort_keys=True,
    )
    path = cache / f"fidelity-teacher-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy" if cache else None
    if path is not None and path.exists():
        try:
            y = torch.from_numpy(np.load(path, allow_pickle=False))
            if y.dim() == 3 and len(y) == len(test) and y.dtype == torch.float32:
                return y
        except (OSError, ValueError, EOFError):
            pass  # a truncated or foreign file is recomputed, never trusted
    theirs = tokenized(teacher, test, cfg.num_points, None, "first", cfg.batch_size, cache=cache)
    y = output_tokens(teacher, theirs, cfg.batch_size)
    if path is not None:
        atomic_write(path, lambda tmp: np.save(tmp, y.numpy(), allow_pickle=False))  # tmp ends in .npy
    return y


@torch.no_grad()
def fidelity_protocol(
    model: PointModel, teacher: PointModel, test: PointCloudDataset, cfg: FidelityConfig, cache: Path | None = None
) -> dict[str, Any]:
    """Per test cloud, how far the model's output tokens are from the teacher's on the same patches (SSE and
    SST for R², mean cosine); ``cache``: the folder where the teacher's tokens are kept for the next model."""
    model.eval()
    teacher.eval()
    y = teacher_tokens(teacher, test, cfg, cache)
    mine = tokenized(model, test, cfg.num_points, None, "first", cfg.batch_size, cache=cache)
    y_hat = output_tokens(model, mine, cfg.batch_size)
    if y.shape != y_hat.shape:
        raise InputError(f"model tokens {tuple(y_hat.shape)} and teacher tokens {tuple(y.shape)} differ in shape")
    mean = y.mean((0, 1), keepdim=True)
    arr = fidelity_arrays(y_hat, y, mean)
    r2 = float(1.0 - arr["sse"].sum() / max(1e-12, arr["sst"].sum()))
    return {
        "r2": r2,
        "cosine": float(arr["cos"].mean()),
        "per_item": {k: v.tolist() for k, v in arr.items()},
        "test_shapes": len(test),
        "num_points": cfg.num_points,
        "tokens_per_cloud": int(y.shape[1]),
    }


def reference_teacher(model: PointModel, spec: str) -> tuple[PointModel, str]:
    """The teacher a fidelity task compares with: ``spec``, or (``auto``) the model itself when it is
    a backbone, the backbone under a floor or merged teacher, or a student's own embedded teacher."""
    if spec != "auto":
        return load_teacher(spec), spec
    inner = getattr(model, "model", model)
    if getattr(inner, "kind", "") == "backbone":
        return inner, "itself"
    if isinstance(inner, (Floor, MergedBackbone)):  # floor, merged teacher
        return inner.backbone, "its backbone"
    want = getattr(getattr(inner, "cfg", None), "teacher_hash", "")
    for key in EMBEDDED.names():
        try:
            t = load_teacher(f"embedded:{key}")
        except (ValueError, OSError):
            continue
        if getattr(t, "release_hash", "") == want:
            return t, f"embedded:{key}"
    raise EvalError(
        "fidelity needs the student's teacher: pass fidelity.teacher=PATH (its teacher is not an embedded one; "
        f"teacher hash {want[:16]}, teacher config {teacher_config(inner).name})"
    )


@register_task
class Fidelity(EvalTask):
    """Token fidelity: R² of the model's output tokens against its teacher's on the test clouds (1 - SSE / SST,
    summed over the clouds resampled), with the mean token cosine beside it."""

    name, Config, metric, metric_label, label = "fidelity", FidelityConfig, "r2", "R²", "token fidelity"
    scale, digits = 1.0, 3

    @override
    def run(self, ctx: Context, cfg: FidelityConfig, dataset: str, root: str | None) -> dict[str, Any]:
        teacher, spec = reference_teacher(ctx.model, cfg.teacher)
        te = ctx.data(dataset, "test", root)
        res = fidelity_protocol(ctx.model, teacher, te, cfg, ctx.cache)
        return {**res, "teacher": spec, "teacher_hash": model_hash(teacher), **data_ids(te)}

    @staticmethod
    @override
    def statistic(items: Items, idx: np.ndarray) -> float:
        return float(1.0 - items["sse"][idx].sum() / max(1e-12, items["sst"][idx].sum()))
