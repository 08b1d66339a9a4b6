"""``foundry3d distill``: Foundation Model Distillation of a frozen teacher into a Foundry student.

Loss: SmoothL1(Y_hat, Y) with Y the teacher's last-block output (``final``: after its final norm,
i.e. exactly the tokens the teacher gives downstream; ``layer``: parameter-free layer_norm of the
last block, the Point-JEPA target convention), plus optional SuperToken usage balancing, the
gate regulariser -lambda * mean(pi) and, for a trained (e.g. narrow) tokenizer, a hint
SmoothL1(student patch tokens, teacher patch tokens). Two data modes:

* online (``data.cache_views: 0``): each step samples and augments clouds; the frozen teacher runs
  on the student's (frozen, shared) patch tokens under no_grad;
* cached (``data.cache_views: V``): V augmented views of every cloud are pushed once through the
  frozen tokenizer and teacher and stored; steps then cost only DSO + encoder + CAU. One cache
  feeds any number of students (the teacher is paid once).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm
from typing_extensions import override

from foundry3d.config import load_config, parse_override, to_dict
from foundry3d.data.registry import load_dataset
from foundry3d.data.transforms import AugmentConfig, Sampling, augment, collate, normalize
from foundry3d.errors import ConfigError, Foundry3DError
from foundry3d.files import atomic_write
from foundry3d.models.assign import kmeans_fit
from foundry3d.models.backbone import PointTransformer
from foundry3d.models.checkpoint import save_release
from foundry3d.models.foreign import ForeignTeacher, register_module
from foundry3d.models.foundry import FoundryStudent
from foundry3d.models.hub import create_student, load, load_teacher, model_hash
from foundry3d.models.occupancy import occupancy
from foundry3d.models.student import Student, StudentArch, kinds_with
from foundry3d.ops.fps import farthest_point_sample
from foundry3d.train.engine import EngineConfig, Hook, Loop, Task, check_training_data, seed_all
from foundry3d.train.loop import fit
from foundry3d.train.probe import Probe, ProbeSection, probe_datasets


class DistillError(Foundry3DError, ValueError):
    """A distillation setting, teacher or student that does not fit the run."""


@dataclass
class StudentSection(StudentArch):
    """The student's architecture (every field of :class:`StudentArch`) plus how to train it."""

    init: Literal["data", "random"] = "data"  # SuperTokens from diverse training tokens, or random
    # the DSO details chosen on validation (docs/study/ladder.json), null resolved per kind (a release without
    # these keys keeps the behaviour it was trained with)
    count_grad: bool | None = None  # type: ignore[assignment]  # member counts in the bin mean's gradient; null: true for foundry, else false
    empty_bins: Literal["fallback", "mask"] | None = None  # type: ignore[assignment]  # null: mask for foundry, else fallback
    freeze_tokenizer: bool = True
    freeze_blocks: bool = False
    start_from: str | None = None  # an existing student release to continue from (its architecture is kept)


@dataclass
class LossSection:
    """The distillation loss: target layer, SmoothL1 beta, balance and gate terms, the Gumbel temperature
    schedule, DSO learning-rate scale, tokenizer hint."""

    target: Literal["final", "layer"] = "final"
    beta: float = 1.0  # SmoothL1 beta
    balance: float = 0.0  # weight of the per-cloud SuperToken usage-balancing term
    gate_lambda: float = 1e-3  # L_gate = -gate_lambda * mean(pi)
    tau_start: float = 1.0  # Gumbel-softmax temperature, annealed linearly to tau_end
    tau_end: float | None = None  # null: 0.1 for foundry with Gumbel noise (chosen on validation), else tau_start
    gumbel_noise: bool = True  # False: straight-through softmax without noise (training routes like inference)
    dso_lr_scale: float = 1.0  # learning-rate multiplier for SuperTokens, q, k and the temperature
    # A trained (narrow or unfrozen) tokenizer: weight of SmoothL1(student patch tokens, teacher patch
    # tokens), a hint that steers it towards the tokens the copied blocks were trained on.
    tokenizer_hint: float = 0.0


@dataclass
class DistillData:
    """The distillation data: datasets (train and pool splits, never test), cloud and patch sizes, sampling,
    augmentation, cached teacher views."""

    datasets: list[str] = field(
        default_factory=lambda: ["sh3d16:train*4", "sh3d16:pool*4", "kicad33:train", "kicad33:pool"]
    )
    root: str | None = None
    num_points: int = 1024
    num_groups: int | None = None  # None: the teacher's
    sampling: Sampling = "random"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache_views: int = 0
    cache_dir: str | None = None  # where cached views live (default: <out>/cache)

    def validate(self) -> None:
        """Refuse training data that cannot be read at this cloud size (checked before any work)."""
        check_training_data(self.datasets, self.num_points, self.cache_views)


@dataclass
class DistillConfig:
    """A distillation recipe: teacher, student, loss, data, probe and engine (strict; saved resolved in every
    run and release)."""

    teacher: str = "embedded"  # release dir/.safetensors, or "embedded" for the packaged tiny teacher
    student: StudentSection = field(default_factory=StudentSection)
    loss: LossSection = field(default_factory=LossSection)
    data: DistillData = field(default_factory=DistillData)
    probe: ProbeSection = field(default_factory=ProbeSection)
    engine: EngineConfig = field(
        default_factory=lambda: EngineConfig(steps=2000, batch_size=64, lr=5e-4, warmup_steps=100, ckpt_every=250)
    )

    def validate(self) -> None:
        """Refuse options that make no sense together (a temperature schedule without Gumbel noise, Gumbel settings
        on a kind with no learned assignment, ...), one line naming both."""
        loss, kind = self.loss, self.student.kind
        if not (loss.tau_start > 0 and (loss.tau_end is None or loss.tau_end > 0)):
            raise ConfigError(f"loss.tau_start and loss.tau_end must be > 0, got {loss.tau_start}, {loss.tau_end}")
        gumbel = loss.tau_start != 1.0 or loss.tau_end not in (None, 1.0) or not loss.gumbel_noise
        if gumbel and kind not in kinds_with("learned"):
            raise ConfigError(
                f"loss.tau_start/tau_end/gumbel_noise set the Gumbel-softmax of a learned assignment, but "
                f"student.kind={kind} has none (expected kind=foundry or the defaults)"
            )
        if loss.tau_end is not None and loss.tau_start != loss.tau_end and not loss.gumbel_noise:
            raise ConfigError(
                f"loss.tau_start={loss.tau_start} -> tau_end={loss.tau_end} anneals the Gumbel noise, but "
                "loss.gumbel_noise=false: set gumbel_noise=true or one fixed temperature"
            )


def resolve_dso_defaults(cfg: DistillConfig) -> None:
    """Fill the DSO options left null with the ladder's choice for the Foundry student (Gumbel temperature
    1 -> 0.1, member counts in the gradient, empty SuperTokens masked: chosen on validation for kind=foundry
    only) and the architecture's defaults for every other kind (tome_dso included: not part of the ladder)."""
    st, loss, learned = cfg.student, cfg.loss, cfg.student.kind == "foundry"
    if st.count_grad is None:
        st.count_grad = learned
    if st.empty_bins is None:
        st.empty_bins = "mask" if learned else "fallback"
    if loss.tau_end is None:
        loss.tau_end = 0.1 if learned and loss.gumbel_noise else loss.tau_start


def _student_for(teacher: PointTransformer, st: StudentSection) -> Student:
    """Continue from an existing student: it must have been built for a teacher of this width."""
    assert st.start_from is not None
    student = cast(Student, load(st.start_from, expect_kind="student"))
    want = student.cfg.teacher_config
    if want.dim != teacher.cfg.dim or want.depth < max(student.cfg.student_blocks(), default=0) + 1:
        raise DistillError(
            f"teacher width {teacher.cfg.dim} (depth {teacher.cfg.depth}) does not match the student in "
            f"{st.start_from}, which was built for a {want.dim}-wide, {want.depth}-block teacher"
        )
    if student.cfg.supertokens != st.supertokens:
        raise DistillError(f"student.supertokens={st.supertokens} but {st.start_from} has {student.cfg.supertokens}")
    return student.train()


class SuperTokenInit(Hook):
    """Before the first step (and before the step-0 evaluation), the SuperTokens from the data."""

    @override
    def on_start(self, loop: Loop) -> None:
        loop.task.init_supertokens()  # type: ignore[attr-defined]


def _foreign_settings(cfg: DistillConfig, teacher: ForeignTeacher) -> None:
    """What a foreign teacher implies: the student trains its own tokenizer on the teacher's patches."""
    if cfg.data.cache_views:
        raise DistillError(f"data.cache_views needs a teacher of ours; {cfg.teacher} is a foreign module (set it to 0)")
    if cfg.data.num_groups not in (None, teacher.num_groups):
        raise DistillError(
            f"data.num_groups={cfg.data.num_groups}: the foreign teacher {cfg.teacher} makes its own "
            f"{teacher.num_groups} patches (leave data.num_groups unset)"
        )
    if cfg.student.freeze_tokenizer:
        print(f"foundry3d distill: {cfg.teacher} is a foreign teacher: the student trains its own tokenizer "
              "(student.freeze_tokenizer=false)", flush=True)  # fmt: skip
        cfg.student.freeze_tokenizer = False


def teacher_targets(teacher: PointTransformer, tokens: Tensor, centres: Tensor, kind: str) -> Tensor:
    """The teacher's last-block output for given patch tokens (its own tokenizer gives the same)."""
    depth = len(teacher.encoder.blocks)
    res = teacher.forward_tokens(tokens, centres, indices=[depth - 1])  # a prefix token, if any, included
    out, last = res["tokens"], res["intermediates"][-1]
    return out if kind == "final" else F.layer_norm(last, last.shape[-1:])


class Distiller(nn.Module):
    """Student + frozen teacher; ``forward`` returns (loss, metrics) for the engine."""

    student: Student
    teacher: PointTransformer

    def __init__(self, student: Student, teacher: PointTransformer, cfg: DistillConfig) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.cfg = cfg
        self.train()  # the frozen parts in eval mode from the start (BatchNorm statistics never move)

    @override
    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # frozen: no dropout, no drop path, BatchNorm running statistics
        if self.cfg.student.freeze_tokenizer:
            self.student.tokenizer.eval()
        return self

    @override
    def forward(
        self,
        generator: torch.Generator,
        tau: float = 1.0,
        points: Tensor | None = None,
        tokens: Tensor | None = None,
        centres: Tensor | None = None,
        targets: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        c = self.cfg
        t_tok: Tensor | None = None
        if tokens is None and isinstance(self.teacher, ForeignTeacher):  # its tokens at its centres
            assert points is not None
            targets, t_cen = self.teacher(points)
            tokens, centres, _ = self.student.tokenize(points, centres=t_cen)
        elif tokens is None:
            assert points is not None
            with torch.set_grad_enabled(not c.student.freeze_tokenizer and self.training):
                tokens, centres, _ = self.student.tokenize(points, c.data.num_groups)
            with torch.no_grad():
                if c.student.freeze_tokenizer:  # identical tokenizer: reuse its tokens
                    targets = teacher_targets(self.teacher, tokens, centres, c.loss.target)
                else:
                    t_tok, t_cen, _ = self.teacher.tokenize(points, c.data.num_groups)
                    targets = teacher_targets(self.teacher, t_tok, t_cen, c.loss.target)
        assert centres is not None and targets is not None
        out = self.student.forward_tokens(tokens.float(), centres.float(), tau=tau, noise=c.loss.gumbel_noise)
        y = out["tokens"]
        distill = F.smooth_l1_loss(y, targets.float(), beta=c.loss.beta)
        loss = distill
        metrics = {"distill_loss": distill.detach()}
        if c.loss.tokenizer_hint > 0 and t_tok is not None:  # same cloud, same FPS: group i matches group i
            hint = F.smooth_l1_loss(tokens.float(), t_tok.float(), beta=c.loss.beta)
            loss = loss + c.loss.tokenizer_hint * hint
            metrics["tokenizer_hint"] = hint.detach()
        if "gate_scores" in out:
            gate = -out["gate_scores"].mean()
            loss = loss + c.loss.gate_lambda * gate
            metrics["compression_rate"] = out["compressed"].float().mean()
        if "counts" not in out:  # kinds without SuperTokens
            return loss, metrics
        counts, soft = out["counts"], out["soft_assignment"]
        s = counts.shape[1]
        if c.loss.balance > 0:  # per cloud: fraction routed x mean probability, minimal when uniform
            frac = counts / counts.sum(1, keepdim=True).clamp_min(1.0)
            balance = s * (frac * soft.mean(1)).sum(1).mean()
            loss = loss + c.loss.balance * balance
            metrics["balance"] = balance.detach()
        usage = counts.sum(0)
        p = usage / usage.sum().clamp_min(1.0)
        metrics.update(
            occupancy=out["occupancy"].float().mean(),
            dead_supertokens=(usage == 0).sum().float(),
            assignment_entropy=-(p * torch.log(p.clamp_min(1e-12))).sum() / max(1e-12, float(np.log(s)))
            if s > 1
            else torch.tensor(1.0),
        )
        return loss, metrics


class DistillTask(Task):
    """The engine task of distillation: the student against the frozen teacher's cached targets, with its hooks
    (SuperToken init, release)."""

    find_unused_parameters = False
    module: Distiller

    def __init__(self, cfg: DistillConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        resolve_dso_defaults(cfg)  # recorded as resolved in the run's config
        teacher = load_teacher(cfg.teacher)
        st = cfg.student
        if isinstance(teacher, ForeignTeacher):
            _foreign_settings(cfg, teacher)
        groups = cfg.data.num_groups or teacher.cfg.num_groups
        if not 1 <= st.supertokens <= groups:
            raise DistillError(f"supertokens={st.supertokens} must be between 1 and c={groups} (the number of tokens)")
        arch = {f.name: getattr(st, f.name) for f in dataclasses.fields(StudentArch)}
        shape = teacher.surrogate() if isinstance(teacher, ForeignTeacher) else teacher
        student = _student_for(shape, st) if st.start_from else create_student(shape, **arch)
        if st.tokenizer == "narrow" and st.freeze_tokenizer:
            raise DistillError("student.tokenizer=narrow is trained from scratch: set student.freeze_tokenizer=false")
        if cfg.loss.tokenizer_hint < 0:
            raise DistillError(f"loss.tokenizer_hint must be >= 0, got {cfg.loss.tokenizer_hint}")
        if cfg.loss.tokenizer_hint > 0 and st.freeze_tokenizer:
            raise DistillError(
                "loss.tokenizer_hint trains the student's tokenizer towards the teacher's: "
                "set student.freeze_tokenizer=false (a frozen copy already gives the teacher's tokens)"
            )
        if st.freeze_tokenizer:
            student.tokenizer.requires_grad_(False)
            student.pos_embed.requires_grad_(False)
        if st.freeze_blocks:
            student.blocks.requires_grad_(False)
        self.module = Distiller(student, teacher, cfg)
        self.dataset = load_dataset("+".join(cfg.data.datasets), root=cfg.data.root)
        self.cache: dict[str, Tensor] | None = None
        if cfg.data.cache_views and not st.freeze_tokenizer:
            raise DistillError("data.cache_views needs student.freeze_tokenizer=true (cached tokens must not go stale)")
        self._tau = 1.0
        cfg.probe.datasets = probe_datasets(cfg.probe, cfg.data.datasets, cfg.data.root)  # recorded as resolved
        self.probe = Probe(cfg.probe, cfg.data.root)
        self._initialised = bool(st.start_from)  # a continued student keeps its SuperTokens
        self._t0 = time.time()

    @override
    def num_samples(self) -> int:
        return len(self.views()["targets"]) if self.cfg.data.cache_views else len(self.dataset)

    def tau(self, step: int) -> float:
        """The Gumbel temperature at ``step``: annealed from tau_start to tau_end over the run."""
        frac = step / max(1, self.cfg.engine.steps - 1)
        end = self.cfg.loss.tau_end
        assert end is not None  # resolved when the task was built (resolve_dso_defaults)
        return self.cfg.loss.tau_start + (end - self.cfg.loss.tau_start) * frac

    @override
    def hooks(self) -> list[Hook]:
        return [SuperTokenInit()]

    @override
    def prepare_batches(self) -> None:
        if self.cfg.data.cache_views:
            self.views()  # built once here, read by every worker

    @override
    def batch(self, indices: np.ndarray, generator: torch.Generator, device: torch.device) -> dict[str, Any]:
        out: dict[str, Any]
        if self.cfg.data.cache_views:
            idx = torch.as_tensor(indices)
            out = {k: self.views()[k][idx].to(device) for k in ("tokens", "centres", "targets")}
        else:
            d = self.cfg.data
            b = collate([self.dataset[int(i)] for i in indices], d.num_points, d.sampling, generator)
            out = {"points": augment(b["points"], d.augment, generator).to(device)}
        out["tau"] = self._tau
        return out

    @override
    def before_step(self, step: int) -> None:
        self._tau = self.tau(step)

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Gradient scale reaching the SuperTokens vs the encoder blocks (per-element RMS)."""
        st = self.module.student

        def rms(params: Any) -> float:
            grads = [p.grad.detach().flatten() for p in params if p.grad is not None]
            return float(torch.cat(grads).pow(2).mean().sqrt()) if grads else 0.0

        out = {"grad_rms_encoder": rms(st.blocks.parameters()), "tau": self._tau}
        if _learned_supertokens(st) is not None:
            out["grad_rms_supertokens"] = rms([_learned_supertokens(st)])
        return out

    def views(self) -> dict[str, Tensor]:
        """The cached teacher views, built on first use (after the run directory exists)."""
        if self.cache is None:
            self.cache = build_cache(self.module.teacher, self.dataset, self.cfg, self.run_dir)
        return self.cache

    @override
    def param_groups(self) -> list[dict[str, Any]]:
        groups = super().param_groups()
        dso_module = getattr(self.module.student, "dso", None)
        dso = {id(p) for p in dso_module.parameters()} if dso_module is not None else set()
        scale = self.cfg.loss.dso_lr_scale
        if scale == 1.0:
            return groups
        out = []
        for g in groups:
            rest = [p for p in g["params"] if id(p) not in dso]
            mine = [p for p in g["params"] if id(p) in dso]
            out.append({**g, "params": rest})
            if mine:
                out.append({**g, "params": mine, "lr_scale": scale})
        return out

    def init_supertokens(self) -> None:
        """SuperTokens initialised from data: farthest-point picks among centred training tokens."""
        if self._initialised:  # a continued or resumed student keeps its SuperTokens
            return
        self._initialised = True
        st = cast(FoundryStudent, self.module.student)  # the kinds with a DSO (others return below)
        if getattr(getattr(st, "dso", None), "mode", "") == "kmeans_static":
            self._fit_codebook()
            return
        if self.cfg.student.init != "data" or _learned_supertokens(st) is None:
            return
        self.module.train()  # a frozen tokenizer tokenizes in eval mode here too (running statistics)
        with torch.no_grad():
            rng = np.random.default_rng(self.cfg.engine.seed)  # 64 clouds drawn across the whole dataset
            if self.cfg.data.cache_views:
                idx = rng.permutation(len(self.views()["tokens"]))[:64]
                tokens = self.views()["tokens"][torch.as_tensor(idx)].float()
            else:
                idx = rng.permutation(len(self.dataset))[:64]
                b = collate([self.dataset[int(i)] for i in idx], self.cfg.data.num_points, "first")
                tokens, _, _ = st.tokenize(b["points"], self.cfg.data.num_groups)
            keys = tokens - tokens.mean(1, keepdim=True) if st.cfg.centre_keys else tokens
            keys = st.dso.k(keys).reshape(-1, keys.shape[-1])
            unit = F.normalize(keys, dim=-1) if st.cfg.similarity == "cosine" else keys
            pick = farthest_point_sample(unit[None], st.cfg.supertokens)[0]
            # q is the identity at init, so S = chosen keys makes them the initial bin prototypes
            st.dso.supertokens.copy_(keys[pick])

    def _fit_codebook(self) -> None:
        """kmeans_static: s codewords by k-means over the tokens of 256 training clouds, fitted once."""
        st = cast(FoundryStudent, self.module.student)
        self.module.train()  # a frozen tokenizer tokenizes in eval mode here too (running statistics)
        with torch.no_grad():
            idx = np.random.default_rng(self.cfg.engine.seed).permutation(len(self.dataset))[:256]
            b = collate([self.dataset[int(i)] for i in idx], self.cfg.data.num_points, "first")
            tokens, _, _ = st.tokenize(b["points"], self.cfg.data.num_groups)
            flat = tokens.reshape(1, -1, tokens.shape[-1])
            st.dso.codebook.copy_(kmeans_fit(flat, st.cfg.supertokens, st.dso.kmeans_iters)[0])

    @override
    def state_dict(self) -> dict[str, Any]:  # the teacher is frozen: not saved, only named by its hash
        return {"module": self.module.student.state_dict(), "teacher_hash": model_hash(self.module.teacher)}

    @override
    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved, now = state.get("teacher_hash"), model_hash(self.module.teacher)
        if saved is not None and saved != now:
            raise DistillError(
                f"this run was distilled from another teacher (hash {saved}, --teacher {self.cfg.teacher} is {now}): "
                "resume it with its own teacher, or start a new run"
            )
        self.module.student.load_state_dict(state["module"])
        self._initialised = True  # resumed: the SuperTokens are already trained

    @override
    def evaluate(self, step: int) -> dict[str, float]:
        st = self.module.student
        out = self.probe(st)
        occ = occupancy_on(st, self.probe, self.cfg.probe.num_points) if self.cfg.probe.enabled else {}
        out.update(occ)
        if out:
            out["wall_minutes"] = (time.time() - self._t0) / 60
        return out

    @override
    def finalize(self, run_dir: Path) -> dict[str, Any]:
        st = self.module.student
        meta = {
            "recipe": "Foundry FMD distillation (foundry3d distill)",
            "teacher": self.cfg.teacher,
            "teacher_name": st.cfg.teacher_name,
            "teacher_hash": st.cfg.teacher_hash,
            "supertokens": st.cfg.supertokens,
            "steps": self.cfg.engine.steps,
            "datasets": self.cfg.data.datasets,
            "config": to_dict(self.cfg),
        }
        path = save_release(st, run_dir / "release", meta, overwrite=True)  # the engine vouches for the folder
        return {"release": str(path)}


def _learned_supertokens(student: nn.Module) -> Tensor | None:
    """The learnable SuperToken basis of a student, if its kind has one (foundry, tome_dso)."""
    dso = getattr(student, "dso", None)
    return getattr(dso, "supertokens", None) if dso is not None else None


def occupancy_on(student: Student, probe: Probe, num_points: int) -> dict[str, float]:
    """Mean non-empty SuperTokens per cloud and never-used SuperTokens on each probe test split."""
    out = {}
    for name, (_, te) in probe.sets().items():
        o = occupancy(student, te, num_points=num_points)
        out[f"occupancy_{name}"] = o["mean_per_cloud"]
        out[f"dead_{name}"] = float(o["never_used"])
    return out


def cache_key(teacher: PointTransformer, dataset: Any, cfg: DistillConfig) -> str:
    """What the teacher-target cache is keyed by: the teacher, the clouds' content and every data setting that
    changes a target."""
    d = cfg.data
    key = {
        "teacher": model_hash(teacher),
        "data": dataset.fingerprint(),  # the clouds themselves, wherever they were read from
        "points": d.num_points,
        "groups": d.num_groups,
        "sampling": d.sampling,
        "augment": to_dict(d.augment),
        "views": d.cache_views,
        "seed": cfg.engine.seed,
        "target": cfg.loss.target,
        "version": 2,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


@torch.no_grad()
def build_cache(teacher: PointTransformer, dataset: Any, cfg: DistillConfig, run_dir: Path) -> dict[str, Tensor]:
    """Tokens, centres and teacher targets for ``cache_views`` augmented views of every cloud."""
    folder = Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir / "cache"
    path = folder / f"teacher-views-{cache_key(teacher, dataset, cfg)}.pt"
    if path.exists():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(cached, dict) and {"tokens", "centres", "targets"} <= cached.keys():
                return cached
        except Exception:  # truncated or foreign: any failure means "recompute"
            pass
        print(f"foundry3d distill: the cached teacher views {path} are unreadable: recomputing them", flush=True)
        path.unlink(missing_ok=True)
    d = cfg.data
    n = len(dataset)
    tokens, centres, targets = [], [], []
    bs = 64
    bar = tqdm(
        total=d.cache_views * n,
        desc="teacher targets",
        unit="cloud",
        disable=not cfg.engine.progress,
        dynamic_ncols=True,
    )
    for v in range(d.cache_views):
        gen = torch.Generator().manual_seed(cfg.engine.seed * 1000 + v)
        for s in range(0, n, bs):
            b = collate([dataset[i] for i in range(s, min(n, s + bs))], d.num_points, d.sampling, gen)
            pts = augment(b["points"], d.augment, gen) if v > 0 else _plain(b["points"], d.augment)  # view 0: as is
            t, c, _ = teacher.tokenize(pts, d.num_groups)
            tokens.append(t.half())
            centres.append(c.half())
            targets.append(teacher_targets(teacher, t, c, cfg.loss.target).half())
            bar.update(len(pts))
    bar.close()
    cache = {"tokens": torch.cat(tokens), "centres": torch.cat(centres), "targets": torch.cat(targets)}
    atomic_write(path, lambda tmp: torch.save(cache, tmp))
    return cache


def _plain(points: Tensor, aug: AugmentConfig) -> Tensor:
    return normalize(points) if aug.normalize else points


def distill(
    teacher: str | nn.Module | None = None,
    data: list[str] | str | None = None,
    supertokens: int | None = None,
    config: str | Path | dict | None = None,
    overrides: list[str] | dict | None = None,
    out: str | Path = "runs/distill",
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Distill a frozen teacher into a SuperToken student (Foundry FMD, or any registered student kind).

    Args:
        teacher: teacher release folder / .safetensors, embedded[:NAME] for a packaged teacher, or your own
            model: py:FILE.py:FACTORY (or py:package.module:FACTORY), a function returning a module that maps
            clouds (B, N, 3) to (tokens (B, c, d), centres (B, c, 3)); the Python API also takes the module.
        data: dataset specs to distil on, e.g. sh3d16:train kicad33:train (never a test split).
        supertokens: number of SuperTokens s (1..c).
        config: recipe YAML file or built-in name (e.g. distill/edge); see foundry3d/configs.
        overrides: dotted KEY=VALUE changes to the recipe, e.g. student.kind=kmeans.
        out: run directory.
        resume: continue the run in ``out`` from its last checkpoint.
        overwrite: replace the run in ``out`` (only a foundry3d run folder is ever cleared).
    """
    ov: dict[str, Any] = {}
    if isinstance(teacher, nn.Module):
        teacher = register_module(teacher)
    if teacher is not None:
        ov["teacher"] = str(teacher)
    if data is not None:
        ov["data.datasets"] = [data] if isinstance(data, str) else list(data)
    if supertokens is not None:
        ov["student.supertokens"] = supertokens
    if isinstance(overrides, dict):
        ov.update(overrides)
        overrides = None
    merged = dict(ov)
    for o in overrides or []:
        k, v = parse_override(o)
        merged[k] = v
    cfg = load_config(DistillConfig, config, merged)
    seed_all(cfg.engine.seed)
    task = DistillTask(cfg, Path(out))
    return fit(task, cfg.engine, out, to_dict(cfg), resume=resume, overwrite=overwrite)
