"""Named backbone variants: zero-argument functions returning a BackboneConfig (registered in the hub)."""

from __future__ import annotations

import dataclasses

from foundry3d.errors import Foundry3DError
from foundry3d.models.backbone import BackboneConfig
from foundry3d.registry import Registry


class VariantError(Foundry3DError, ValueError):
    """A backbone option that no variant has."""


VARIANTS: Registry = Registry("model variant")
register_variant = VARIANTS.register()


@register_variant
def vit_s() -> BackboneConfig:
    """The paper's teacher: Point-JEPA ViT-S, 384 wide, 12 blocks, 6 heads, 64 x 32 patches."""
    return BackboneConfig(name="vit_s")


@register_variant
def vit_s_mae() -> BackboneConfig:
    """Point-MAE ViT-S: as ``vit_s`` but with biased first tokenizer layers and no qkv bias."""
    return BackboneConfig(name="vit_s_mae", tokenizer_stage_bias=True, qkv_bias=False)


@register_variant
def tiny() -> BackboneConfig:
    """CPU-friendly teacher: 192 wide, 6 blocks, 3 heads, same 64 x 32 patches.

    The tokenizer is slimmed (32, 32, 64) so that it costs about a sixth of the model: a student
    must keep its own tokenizer, so the tokenizer's share bounds how cheap a student can be.
    """
    return BackboneConfig(name="tiny", tokenizer_widths=(32, 32, 64), pos_hidden=64, dim=192, depth=6, num_heads=3)


@register_variant
def small() -> BackboneConfig:
    """Between ``tiny`` and ``vit_s``: 256 wide, 8 blocks, 4 heads, same 64 x 32 patches and a slim tokenizer.

    The tokenizer stays narrow (32, 48, 96) so that the encoder, not the patch embedding, carries
    the representation: that is what a distilled student must keep.
    """
    return BackboneConfig(name="small", tokenizer_widths=(32, 48, 96), pos_hidden=64, dim=256, depth=8, num_heads=4)


@register_variant
def test() -> BackboneConfig:
    """Seconds-fast variant for tests: 32 wide, 2 blocks, 16 x 8 patches of a 256-point cloud."""
    return BackboneConfig(
        name="test",
        num_points=256,
        num_groups=16,
        group_size=8,
        tokenizer_widths=(16, 32, 32),
        pos_hidden=16,
        dim=32,
        depth=2,
        num_heads=2,
    )


def variant_config(name: str, **overrides) -> BackboneConfig:
    """The config of variant ``name`` with fields replaced by ``overrides`` (checked)."""
    cfg = VARIANTS.get(name)()
    fields = {f.name for f in dataclasses.fields(BackboneConfig)}
    unknown = sorted(k for k in overrides if k not in fields)
    if unknown:
        raise VariantError(f"unknown backbone option(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    cfg.validate()
    return cfg
