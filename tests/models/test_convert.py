import pytest
import torch

import foundry3d
from foundry3d.models.checkpoint import CheckpointError
from foundry3d.models.convert import convert, convert_point_jepa, convert_point_mae
from foundry3d.ops.group import group_points

from .official_layout import OfficialPointJEPA, OfficialPointMAE, randomise


def _planted(sd: dict) -> dict:
    """Every tensor gets values no other tensor has: key index * 1e4 + position."""
    out = {}
    for i, (k, v) in enumerate(sorted(sd.items())):
        if v.dtype.is_floating_point:
            out[k] = (i * 1e4 + torch.arange(v.numel(), dtype=torch.float64)).to(v.dtype).reshape(v.shape)
        else:
            out[k] = v.clone()
    return out


def _check_every_tensor_lands(sd: dict, conv) -> None:
    assert set(conv.mapping) | set(conv.dropped) == set(sd)
    assert not set(conv.mapping) & set(conv.dropped)
    for official, ours in conv.mapping.items():
        assert torch.equal(conv.state_dict[ours].flatten().double(), sd[official].flatten().double()), official
    model = foundry3d.models.backbone.PointTransformer(conv.config)
    assert set(model.state_dict()) == set(conv.state_dict)


def test_point_jepa_every_tensor_lands_in_its_role():
    ref = OfficialPointJEPA()
    sd = _planted(ref.state_dict_official())
    conv = convert_point_jepa({"state_dict": sd, "epoch": 499, "hyper_parameters": {"lr": 1e-3}}, num_heads=2)
    _check_every_tensor_lands(sd, conv)
    assert conv.mapping["student.blocks.1.attn.qkv.weight"] == "encoder.blocks.1.attn.qkv.weight"
    assert conv.mapping["tokenizer.embedding.encoder.second_conv.3.weight"] == "tokenizer.embed.stage2.3.weight"
    assert conv.mapping["positional_encoding.2.bias"] == "pos_embed.2.bias"
    assert "predictor.predictor_embed.weight" in conv.dropped and "mask_token" in conv.dropped
    assert conv.config.qkv_bias and not conv.config.tokenizer_stage_bias
    ema = convert_point_jepa({"state_dict": sd}, weights="ema", num_heads=2)
    _check_every_tensor_lands(sd, ema)
    assert ema.mapping["teacher.ema_model.norm.weight"] == "encoder.norm.weight"


def test_point_mae_every_tensor_lands_in_its_role():
    ref = OfficialPointMAE()
    sd = _planted(dict(ref.state_dict()))
    wrapped = {"base_model": {"module." + k: v for k, v in sd.items()}, "epoch": 300}
    conv = convert_point_mae(wrapped, num_heads=2)
    _check_every_tensor_lands(sd, conv)
    assert conv.mapping["MAE_encoder.blocks.blocks.0.mlp.fc2.bias"] == "encoder.blocks.0.mlp.fc2.bias"
    assert conv.mapping["MAE_encoder.encoder.first_conv.0.bias"] == "tokenizer.embed.stage1.0.bias"
    assert "MAE_decoder.blocks.0.attn.qkv.weight" in conv.dropped
    assert conv.config.tokenizer_stage_bias and not conv.config.qkv_bias


@pytest.mark.parametrize("kind", ["jepa-student", "jepa-ema", "mae"])
def test_converted_weights_reproduce_the_official_forward(kind, tmp_path, cloud):
    torch.manual_seed(0)
    if kind.startswith("jepa"):
        ref = randomise(OfficialPointJEPA(), 1).eval()
        weights = "ema" if kind == "jepa-ema" else "student"
        randomise(ref.teacher.ema_model, 2)
        sd = ref.state_dict_official()
        torch.save({"state_dict": sd, "pytorch-lightning_version": "1.9.5"}, tmp_path / "official.ckpt")
        info = convert(tmp_path / "official.ckpt", "point-jepa", tmp_path / "rel", weights=weights, heads=2)
    else:
        ref = randomise(OfficialPointMAE(), 3).eval()
        torch.save({"base_model": {"module." + k: v for k, v in ref.state_dict().items()}}, tmp_path / "mae.pth")
        info = convert(tmp_path / "mae.pth", "point-mae", tmp_path / "rel", heads=2)
    assert info["dropped"] > 0
    # float64 on both sides: any mismatch in role or order would show far above rounding error.
    model = foundry3d.load(tmp_path / "rel").double()
    ref = ref.double()
    cloud = cloud.double()
    patches, centres, _ = group_points(cloud, 16, model.cfg.group_size)  # official group size: 32
    with torch.no_grad():
        ours = model.forward_features(cloud, num_groups=16)["tokens"]
        if kind == "mae":
            theirs = ref(patches, centres)
        else:
            theirs = ref(patches, centres, encoder="ema" if kind == "jepa-ema" else "student")
    assert torch.allclose(ours, theirs, atol=1e-10), (ours - theirs).abs().max()


def test_strictness():
    sd = OfficialPointJEPA().state_dict_official()
    with pytest.raises(CheckpointError, match="unexpected key"):
        convert_point_jepa({"state_dict": {**sd, "student.extra.weight": torch.zeros(1)}}, num_heads=2)
    missing = {k: v for k, v in sd.items() if k != "student.blocks.0.mlp.fc1.weight"}
    with pytest.raises(CheckpointError, match=r"does not fill|lacks"):
        convert_point_jepa({"state_dict": missing}, num_heads=2)
    bad = dict(sd)
    bad["student.norm.weight"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match="shape"):
        convert_point_jepa({"state_dict": bad}, num_heads=2)
    with pytest.raises(CheckpointError, match="not a Point-JEPA"):
        convert_point_jepa({"state_dict": {"foo": torch.zeros(1)}})
    with pytest.raises(CheckpointError, match="not a Point-MAE"):
        convert_point_mae({"base_model": sd})


def test_nan_batchnorm_stats_are_repaired():
    sd = OfficialPointJEPA().state_dict_official()
    sd["tokenizer.embedding.encoder.first_conv.1.running_var"] = torch.full_like(
        sd["tokenizer.embedding.encoder.first_conv.1.running_var"], float("nan")
    )
    conv = convert_point_jepa({"state_dict": sd}, num_heads=2)
    assert torch.equal(conv.state_dict["tokenizer.embed.stage1.1.running_var"], torch.ones(16))
    assert conv.notes


def test_foreign_pickles_never_execute(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    sd = OfficialPointJEPA().state_dict_official()
    torch.save({"state_dict": sd, "callbacks": Evil()}, tmp_path / "evil.ckpt")
    convert(tmp_path / "evil.ckpt", "point-jepa", tmp_path / "rel", heads=2)
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "trunc.ckpt").write_bytes((tmp_path / "evil.ckpt").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="readable"):
        convert(tmp_path / "trunc.ckpt", "point-jepa", tmp_path / "rel2", heads=2)
