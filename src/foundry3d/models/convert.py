"""Strict converters for official Point-JEPA and Point-MAE checkpoints onto our backbone.

Each converter maps every official tensor to the parameter that plays the same role, or drops
it with a stated reason; an unexpected key, a missing parameter or a shape mismatch is an
error. Conv1d(k=1) kernels (out, in, 1) become Linear weights (out, in).

Official layouts (read from the public repositories):
* Point-JEPA (Ayumu-J-S/Point-JEPA, Lightning ``.ckpt``): ``state_dict`` with
  ``tokenizer.embedding.encoder.{first,second}_conv.{0,1,3}``, ``positional_encoding.{0,2}``,
  ``student.blocks.{i}.*`` / ``student.norm`` (online encoder), ``teacher.ema_model.*`` (EMA),
  ``predictor.*`` and ``mask_token`` (pretraining only). Fine-tuned files use ``encoder.*``.
* Point-MAE (Pang-Yatian/Point-MAE, ``.pth``): ``base_model`` with an optional ``module.``
  prefix; pretraining keys under ``MAE_encoder.`` (``encoder.{first,second}_conv``,
  ``pos_embed``, ``blocks.blocks.{i}``, ``norm``), decoder keys ``MAE_decoder``,
  ``decoder_pos_embed``, ``increase_dim``, ``mask_token``; fine-tuned files (PointTransformer)
  have the encoder keys at the top level plus ``cls_token``, ``cls_pos``, ``cls_head_finetune``.
* Point-BERT (Julie-tang00/Point-BERT, ``.pth``): ``base_model`` (optional ``module.``); pretraining keys
  of the online encoder under ``transformer_q.`` (``encoder.{first,second}_conv``, ``reduce_dim``,
  ``cls_token``, ``cls_pos``, ``pos_embed``, ``blocks.blocks.{i}``, ``norm``; ``mask_token``, ``lm_head``,
  ``cls_head`` pretraining only), the momentum encoder ``transformer_k.``, the ``dvae.`` and the MoCo
  ``queue`` / ``queue_ptr``; fine-tuned files have the encoder keys at the top level plus
  ``cls_head_finetune``. The mini-PointNet ends at ``encoder_dims`` (256) and ``reduce_dim`` maps the pooled
  feature to the width (384); the class token runs through every block with the patches.
* ACT (RunpeiDong/ACT, ``.pth``): the same encoder layout under ``ACT_encoder.`` in pretraining files
  (``reduce_dim`` absent when ``encoder_dims`` equals the width), beside ``ACT_decoder``, ``dvae_tokenizer``
  (the frozen 2D-pretrained teacher), ``proj_head``, ``mask_token``, ``decoder_pos_embed``; fine-tuned files
  at the top level, as Point-BERT's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from foundry3d.models.backbone import BackboneConfig, PointTransformer
from foundry3d.models.checkpoint import CheckpointError, check_release_target, save_release
from foundry3d.models.safe_load import safe_torch_load
from foundry3d.registry import Registry


@dataclass
class Conversion:
    """An official checkpoint converted: our config and weights, which official key became which of ours, what
    was dropped and why."""

    config: BackboneConfig
    state_dict: dict[str, Tensor]
    mapping: dict[str, str] = field(default_factory=dict)  # official key -> our key
    dropped: dict[str, str] = field(default_factory=dict)  # official key -> reason
    notes: list[str] = field(default_factory=list)


def _tokenizer_map(prefix: str) -> dict[str, str]:
    out = {}
    for stage, ours in (("first_conv", "stage1"), ("second_conv", "stage2")):
        for i in (0, 3):
            for p in ("weight", "bias"):
                out[f"{prefix}{stage}.{i}.{p}"] = f"tokenizer.embed.{ours}.{i}.{p}"
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out[f"{prefix}{stage}.1.{p}"] = f"tokenizer.embed.{ours}.1.{p}"
    return out


_BLOCK_SUFFIXES = [
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
]


def _encoder_map(blocks_prefix: str, norm_prefix: str, depth: int) -> dict[str, str]:
    out = {}
    for i in range(depth):
        for s in _BLOCK_SUFFIXES:
            out[f"{blocks_prefix}{i}.{s}"] = f"encoder.blocks.{i}.{s}"
    for p in ("weight", "bias"):
        out[f"{norm_prefix}{p}"] = f"encoder.norm.{p}"
    return out


def _depth(sd: dict[str, Tensor], blocks_prefix: str) -> int:
    pat = re.compile(re.escape(blocks_prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in sd if (m := pat.match(k))}
    if not idx:
        raise CheckpointError(f"no transformer blocks found under '{blocks_prefix}*'")
    if idx != set(range(max(idx) + 1)):
        raise CheckpointError(f"blocks under '{blocks_prefix}' are not contiguous: {sorted(idx)}")
    return max(idx) + 1


def _infer_config(
    sd: dict[str, Tensor], tok: str, pos: str, blocks: str, depth: int, name: str, num_heads: int, **kw: Any
) -> BackboneConfig:
    try:
        c1 = sd[f"{tok}first_conv.0.weight"].shape[0]
        c2 = sd[f"{tok}first_conv.3.weight"].shape[0]
        c3 = sd[f"{tok}second_conv.0.weight"].shape[0]
        dim = sd[f"{tok}second_conv.3.weight"].shape[0]
        pos_hidden = sd[f"{pos}0.weight"].shape[0]
        mlp_hidden = sd[f"{blocks}0.mlp.fc1.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"checkpoint lacks the expected key {e}: is it the right kind of checkpoint?") from e
    if dim % num_heads:
        raise CheckpointError(f"width {dim} is not divisible by num_heads={num_heads}; pass the right --heads")
    return BackboneConfig(
        name=name,
        tokenizer_widths=(c1, c2, c3),
        tokenizer_stage_bias=f"{tok}first_conv.0.bias" in sd,
        pos_hidden=pos_hidden,
        dim=dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_hidden / dim,
        qkv_bias=f"{blocks}0.attn.qkv.bias" in sd,
        **kw,
    )


def _apply(
    sd: dict[str, Tensor], mapping: dict[str, str], drops: list[tuple[str, str]], cfg: BackboneConfig
) -> Conversion:
    """Strictly apply ``mapping``; ``drops`` are (regex, reason) for keys deliberately left out."""
    model = PointTransformer(cfg)
    target = model.state_dict()
    out: dict[str, Tensor] = {}
    conv = Conversion(cfg, out)
    for key, value in sd.items():
        if key in mapping:
            ours = mapping[key]
            if ours not in target:
                raise CheckpointError(f"internal: {key} maps to unknown parameter {ours}")
            if not isinstance(value, Tensor) or value.layout != torch.strided or value.is_meta:
                raise CheckpointError(f"{key}: expected a dense tensor, got {type(value).__name__}")
            v = value.detach()
            if v.dim() == 3 and v.shape[-1] == 1 and target[ours].dim() == 2:
                v = v.squeeze(-1)  # Conv1d(k=1) -> Linear
            if v.shape != target[ours].shape:  # before any copy: a file cannot make us allocate its claimed size
                raise CheckpointError(f"{key}: shape {tuple(v.shape)} does not fit {ours} {tuple(target[ours].shape)}")
            v = v.clone()
            if ours.endswith(("running_mean", "running_var")) and not torch.isfinite(v).all():
                fill = 0.0 if ours.endswith("running_mean") else 1.0
                v = torch.nan_to_num(v, nan=fill, posinf=fill, neginf=fill)
                conv.notes.append(f"{key}: non-finite BatchNorm statistics replaced by {fill}")
            elif v.is_floating_point() and not torch.isfinite(v).all():
                bad = int((~torch.isfinite(v)).sum())
                raise CheckpointError(f"{key}: {bad} of {v.numel()} weights are NaN or infinite: a broken checkpoint")
            out[ours] = v.to(target[ours].dtype)
            conv.mapping[key] = ours
            continue
        reason = next((r for pat, r in drops if re.fullmatch(pat, key)), None)
        if reason is None:
            raise CheckpointError(f"unexpected key {key!r} in the checkpoint: refusing to guess its role")
        conv.dropped[key] = reason
    missing = sorted(set(target) - set(out))
    # BatchNorm's step counter is bookkeeping; old files may lack it.
    for k in [m for m in missing if m.endswith("num_batches_tracked")]:
        out[k] = torch.zeros((), dtype=torch.long)
        missing.remove(k)
    if missing:
        raise CheckpointError(f"the checkpoint does not fill these parameters: {', '.join(missing)}")
    model.load_state_dict(out, strict=True)
    return conv


def _state_dict_of(obj: Any, keys: tuple[str, ...]) -> dict[str, Tensor]:
    if isinstance(obj, dict):
        for k in keys:
            if k in obj and isinstance(obj[k], dict):
                return _checked(dict(obj[k]))
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return _checked(dict(obj))
    raise CheckpointError(f"no state dict found (looked for {', '.join(keys)} or a plain tensor dict)")


def _checked(sd: dict[str, Any]) -> dict[str, Any]:
    """Every tensor dense and backed by the bytes its shape claims: the config is read off these shapes, so
    a stride-0 view claiming 4e8 rows in a 250 KB file must not size the model we build."""
    for key, v in sd.items():
        if not isinstance(v, Tensor):  # the config is read off these entries' shapes: only tensors belong here
            raise CheckpointError(f"{key}: expected a tensor in the state dict, got {type(v).__name__}")
        if v.layout != torch.strided or v.is_meta:
            raise CheckpointError(f"{key}: expected a dense tensor, got a {v.layout} / meta tensor")
        claimed = v.numel() * v.element_size()
        held = v.untyped_storage().nbytes() - v.storage_offset() * v.element_size()
        if claimed > max(held, 0):
            raise CheckpointError(
                f"{key}: its shape {tuple(v.shape)} claims {claimed:,} bytes but the file holds {held:,} for it "
                "(a stride-0 or overlapping view): refusing a tensor whose size the file does not back"
            )
    return sd


def convert_point_jepa(
    checkpoint: dict[str, Any] | str | Path,
    weights: Literal["student", "ema"] = "student",
    num_heads: int = 6,
) -> Conversion:
    """Official Point-JEPA checkpoint -> our backbone (``weights``: online student or EMA target)."""
    obj = safe_torch_load(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
    sd = _state_dict_of(obj, ("state_dict",))
    tok = "tokenizer.embedding.encoder."
    if "student.blocks.0.norm1.weight" in sd:
        enc = {"student": "student.", "ema": "teacher.ema_model."}[weights]
        if f"{enc}blocks.0.norm1.weight" not in sd:
            raise CheckpointError(f"weights={weights!r} requested but the checkpoint has no '{enc}*' keys")
    elif "encoder.blocks.0.norm1.weight" in sd:
        enc = "encoder."  # fine-tuned (classification / segmentation) checkpoint
    else:
        raise CheckpointError("not a Point-JEPA checkpoint: no 'student.blocks.*' or 'encoder.blocks.*' keys")
    depth = _depth(sd, f"{enc}blocks.")
    cfg = _infer_config(sd, tok, "positional_encoding.", f"{enc}blocks.", depth, "point_jepa", num_heads)
    mapping = {**_tokenizer_map(tok), **_encoder_map(f"{enc}blocks.", f"{enc}norm.", depth)}
    mapping.update({f"positional_encoding.{i}.{p}": f"pos_embed.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")})
    drops = [
        (r"mask_token", "unused by the official code (the predictor has its own mask token)"),
        (r"predictor\..*", "JEPA predictor: only needed for pretraining"),
        (r"teacher\.(initted|step)", "EMA bookkeeping"),
        (r"teacher\.online_model\..*", "duplicate of the online student encoder"),
        (r"cls_head\..*", "classification head of a fine-tuned checkpoint: not part of the backbone"),
        (r"(label_embedding|upsampling|seg_head)\..*", "segmentation head of a fine-tuned checkpoint"),
    ]
    if enc == "student.":
        drops.append((r"teacher\.ema_model\..*", "EMA target encoder (pass weights='ema' to use it instead)"))
    elif enc == "teacher.ema_model.":
        drops.append((r"student\..*", "online encoder (weights='ema' selected the EMA target encoder)"))
    conv = _apply(sd, mapping, drops, cfg)
    conv.config.extra = {"source": "point-jepa", "weights": weights if enc != "encoder." else "fine-tuned"}
    return conv


def _lineage_state(checkpoint: dict[str, Any] | str | Path) -> dict[str, Tensor]:
    """The state dict of a Point-MAE-lineage ``.pth`` (``base_model`` / ``model``), DDP's ``module.`` removed."""
    obj = safe_torch_load(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
    raw = _state_dict_of(obj, ("base_model", "model", "state_dict"))
    return {k.removeprefix("module."): v for k, v in raw.items()}


def convert_point_mae(checkpoint: dict[str, Any] | str | Path, num_heads: int = 6) -> Conversion:
    """Official Point-MAE checkpoint (pretrained or fine-tuned) -> our backbone (FPS start 0)."""
    sd = _lineage_state(checkpoint)
    if "MAE_encoder.blocks.blocks.0.norm1.weight" in sd:
        pre = "MAE_encoder."
    elif "blocks.blocks.0.norm1.weight" in sd:
        pre = ""
    else:
        raise CheckpointError("not a Point-MAE checkpoint: no 'MAE_encoder.blocks.blocks.*' or 'blocks.blocks.*' keys")
    tok = f"{pre}encoder."
    depth = _depth(sd, f"{pre}blocks.blocks.")
    cfg = _infer_config(sd, tok, f"{pre}pos_embed.", f"{pre}blocks.blocks.", depth, "point_mae", num_heads)
    mapping = {**_tokenizer_map(tok), **_encoder_map(f"{pre}blocks.blocks.", f"{pre}norm.", depth)}
    mapping.update({f"{pre}pos_embed.{i}.{p}": f"pos_embed.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")})
    drops = [
        (r"MAE_decoder\..*", "MAE decoder: only needed for pretraining"),
        (r"decoder_pos_embed\..*", "MAE decoder positional embedding: pretraining only"),
        (r"increase_dim\..*", "MAE point-reconstruction head: pretraining only"),
        (r"mask_token", "MAE mask token: pretraining only"),
        (
            r"cls_token|cls_pos",
            "fine-tuned classification token: our backbone has no prefix token (patch-token "
            "outputs then differ from the fine-tuned model, which lets patches attend to it)",
        ),
        (r"cls_head_finetune\..*", "classification head of a fine-tuned checkpoint: not part of the backbone"),
    ]
    conv = _apply(sd, mapping, drops, cfg)
    conv.config.extra = {"source": "point-mae", "weights": "pretrained" if pre else "fine-tuned"}
    if not pre:
        conv.notes.append("fine-tuned Point-MAE: cls_token/cls_pos dropped (see dropped reasons)")
    return conv


def _convert_with_class_token(
    sd: dict[str, Tensor], pre: str, name: str, num_heads: int, drops: list[tuple[str, str]]
) -> Conversion:
    """Point-BERT / ACT encoder under ``pre``: our backbone with ``tokenizer_channels`` and ``cls_token``."""
    tok = f"{pre}encoder."
    try:
        c1, c2 = sd[f"{tok}first_conv.0.weight"].shape[0], sd[f"{tok}first_conv.3.weight"].shape[0]
        c3, channels = sd[f"{tok}second_conv.0.weight"].shape[0], sd[f"{tok}second_conv.3.weight"].shape[0]
        dim = sd[f"{pre}reduce_dim.weight"].shape[0] if f"{pre}reduce_dim.weight" in sd else channels
        pos_hidden = sd[f"{pre}pos_embed.0.weight"].shape[0]
        mlp_hidden = sd[f"{pre}blocks.blocks.0.mlp.fc1.weight"].shape[0]
        if f"{pre}cls_token" not in sd or f"{pre}cls_pos" not in sd:
            raise KeyError(f"{pre}cls_token")
    except KeyError as e:
        raise CheckpointError(f"checkpoint lacks the expected key {e}: is it a {name} checkpoint?") from e
    if dim % num_heads:
        raise CheckpointError(f"width {dim} is not divisible by num_heads={num_heads}; pass the right --heads")
    depth = _depth(sd, f"{pre}blocks.blocks.")
    cfg = BackboneConfig(
        name=name,
        tokenizer_widths=(c1, c2, c3),
        tokenizer_stage_bias=f"{tok}first_conv.0.bias" in sd,
        tokenizer_channels=channels if f"{pre}reduce_dim.weight" in sd else None,
        cls_token=True,
        pos_hidden=pos_hidden,
        dim=dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_hidden / dim,
        qkv_bias=f"{pre}blocks.blocks.0.attn.qkv.bias" in sd,
    )
    mapping = {**_tokenizer_map(tok), **_encoder_map(f"{pre}blocks.blocks.", f"{pre}norm.", depth)}
    mapping.update({f"{pre}pos_embed.{i}.{p}": f"pos_embed.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")})
    mapping.update({f"{pre}cls_token": "cls_token", f"{pre}cls_pos": "cls_pos"})
    if cfg.tokenizer_channels is not None:
        mapping.update({f"{pre}reduce_dim.{p}": f"tokenizer.proj.{p}" for p in ("weight", "bias")})
    conv = _apply(sd, mapping, drops, cfg)
    conv.config.extra = {"source": name, "weights": "pretrained" if pre else "fine-tuned"}
    return conv


_FINETUNED_DROPS = [
    (r"cls_head_finetune\..*", "classification head of a fine-tuned checkpoint: not part of the backbone")
]


def convert_point_bert(checkpoint: dict[str, Any] | str | Path, num_heads: int = 6) -> Conversion:
    """Official Point-BERT checkpoint (pretrained: its online encoder; or fine-tuned) -> our backbone."""
    sd = _lineage_state(checkpoint)
    if "transformer_q.blocks.blocks.0.norm1.weight" in sd:
        pre = "transformer_q."
    elif "blocks.blocks.0.norm1.weight" in sd and "reduce_dim.weight" in sd:
        pre = ""
    else:
        raise CheckpointError(
            "not a Point-BERT checkpoint: no 'transformer_q.blocks.blocks.*' keys, nor top-level 'blocks.blocks.*' "
            "with 'reduce_dim'"
        )
    heads = "masked-modelling and contrastive heads: pretraining only"
    drops = [
        (r"transformer_k\..*", "MoCo momentum encoder: pretraining only"),
        (r"dvae\..*", "dVAE tokenizer (discrete targets): pretraining only"),
        (r"queue|queue_ptr", "MoCo queue: pretraining only"),
        (r"transformer_q\.(mask_token|lm_head\..*|cls_head\..*)", heads),
        *_FINETUNED_DROPS,
    ]
    return _convert_with_class_token(sd, pre, "point-bert", num_heads, drops)


def convert_act(checkpoint: dict[str, Any] | str | Path, num_heads: int = 6) -> Conversion:
    """Official ACT checkpoint (pretrained: ``ACT_encoder``; or fine-tuned) -> our backbone."""
    sd = _lineage_state(checkpoint)
    if "ACT_encoder.blocks.blocks.0.norm1.weight" in sd:
        pre = "ACT_encoder."
    elif "blocks.blocks.0.norm1.weight" in sd and "cls_token" in sd:
        pre = ""
    else:
        raise CheckpointError(
            "not an ACT checkpoint: no 'ACT_encoder.blocks.blocks.*' or top-level 'blocks.blocks.*' keys"
        )
    decoder = "masked-modelling decoder: pretraining only"
    drops = [
        (r"ACT_decoder\..*|decoder_pos_embed\..*|mask_token|increase_dim\..*", decoder),
        (r"dvae_tokenizer\..*", "the frozen cross-modal teacher (dVAE with a 2D ViT): pretraining only"),
        (r"proj_head\..*|cls_pos", "projection to the teacher's tokens: pretraining only"),
        (r"ACT_encoder\.(lm_head|cls_head)\..*", "encoder heads unused downstream"),
        *_FINETUNED_DROPS,
    ]
    # a pretraining file's top-level cls_pos belongs to its distillation head; a fine-tuned file's is mapped
    return _convert_with_class_token(sd, pre, "act", num_heads, drops)


CONVERTERS: Registry = Registry("checkpoint source")
CONVERTERS.register("point-jepa", convert_point_jepa)
CONVERTERS.register("point-mae", convert_point_mae)
CONVERTERS.register("point-bert", convert_point_bert)
CONVERTERS.register("act", convert_act)


def convert(
    checkpoint: str | Path,
    source: Literal["point-jepa", "point-mae", "point-bert", "act"],
    out: str | Path,
    weights: Literal["student", "ema"] = "student",
    heads: int = 6,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert an official Point-JEPA / Point-MAE / Point-BERT / ACT checkpoint into a foundry3d release.

    Args:
        checkpoint: official .ckpt (Point-JEPA, Lightning) or .pth (Point-MAE, Point-BERT, ACT) file; read
            without running any code from it.
        source: point-jepa, point-mae, point-bert or act.
        out: release folder to write.
        weights: Point-JEPA: the online (student) or the EMA encoder.
        heads: attention heads (not stored in the weights; ViT-S: 6).
        overwrite: replace an existing release in ``out``.
    """
    if source not in CONVERTERS:
        raise CheckpointError(f"unknown source {source!r}; choose from {', '.join(CONVERTERS.names())}")
    if heads < 1:
        raise CheckpointError(f"heads must be >= 1 (ViT-S has 6), got {heads}")
    ckpt = Path(checkpoint).expanduser()
    if ckpt.is_dir():
        raise CheckpointError(f"{ckpt} is a directory: pass the checkpoint file (.ckpt / .pth) itself")
    if not ckpt.is_file():
        raise CheckpointError(f"checkpoint {ckpt} does not exist")
    out = check_release_target(out, overwrite)  # before any work: never a user's folder
    if source == "point-jepa":
        conv = convert_point_jepa(checkpoint, weights=weights, num_heads=heads)
    else:
        conv = CONVERTERS.get(source)(checkpoint, num_heads=heads)
    model = PointTransformer(conv.config)
    model.load_state_dict(conv.state_dict, strict=True)
    meta = {"converted_from": str(checkpoint), "source": source, "dropped": conv.dropped, "notes": conv.notes}
    path = save_release(model, out, meta, overwrite=overwrite)
    return {"release": str(path), "mapped": len(conv.mapping), "dropped": len(conv.dropped), "notes": conv.notes}
