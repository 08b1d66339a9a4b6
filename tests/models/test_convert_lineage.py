"""Point-BERT and ACT converters: every official tensor lands in its role, and the converted release
reproduces the official forward (class token and reduce_dim included) in float64."""

import pytest
import torch

import foundry3d
from foundry3d.models.checkpoint import CheckpointError
from foundry3d.models.convert import convert, convert_act, convert_point_bert
from foundry3d.ops.group import group_points

from .official_layout import OfficialACT, OfficialPointBERT, OfficialPointBERTFinetuned, randomise
from .test_convert import _check_every_tensor_lands, _planted

CASES = {
    "point-bert": (
        OfficialPointBERT,
        "point-bert",
        lambda sd: {"base_model": {"module." + k: v for k, v in sd.items()}},
    ),
    "point-bert-finetuned": (OfficialPointBERTFinetuned, "point-bert", lambda sd: {"base_model": sd}),
    "act": (OfficialACT, "act", lambda sd: {"base_model": {"module." + k: v for k, v in sd.items()}}),
}


def test_point_bert_every_tensor_lands_in_its_role():
    sd = _planted(dict(OfficialPointBERT().state_dict()))
    conv = convert_point_bert({"base_model": sd}, num_heads=2)
    _check_every_tensor_lands(sd, conv)
    assert conv.mapping["transformer_q.reduce_dim.weight"] == "tokenizer.proj.weight"
    assert conv.mapping["transformer_q.cls_pos"] == "cls_pos"
    assert "transformer_k.blocks.blocks.0.norm1.weight" in conv.dropped and "queue" in conv.dropped
    assert conv.config.cls_token and conv.config.tokenizer_channels == 24 and conv.config.dim == 32


def test_act_every_tensor_lands_in_its_role():
    sd = _planted(dict(OfficialACT().state_dict()))
    conv = convert_act({"base_model": sd}, num_heads=2)
    _check_every_tensor_lands(sd, conv)
    assert conv.mapping["ACT_encoder.cls_token"] == "cls_token" and "cls_pos" in conv.dropped
    assert "dvae_tokenizer.vit.weight" in conv.dropped and conv.config.tokenizer_channels is None


@pytest.mark.parametrize("case", list(CASES))
def test_converted_weights_reproduce_the_official_forward(case, tmp_path, cloud):
    cls, source, wrap = CASES[case]
    torch.manual_seed(0)
    ref = randomise(cls(), 5).eval()
    torch.save(wrap(dict(ref.state_dict())), tmp_path / "official.pth")
    info = convert(tmp_path / "official.pth", source, tmp_path / "rel", heads=2)
    assert info["dropped"] > 0 or case.endswith("finetuned")
    model = foundry3d.load(tmp_path / "rel").double()
    cloud = cloud.double()
    patches, centres, _ = group_points(cloud, 16, model.cfg.group_size)
    with torch.no_grad():
        ours = model.forward_features(cloud, num_groups=16)["tokens"]
        theirs = ref.double()(patches, centres)
    assert torch.allclose(ours, theirs, atol=1e-10), (ours - theirs).abs().max()


def test_a_point_mae_file_is_not_taken_for_point_bert():
    from .official_layout import OfficialPointMAE

    with pytest.raises(CheckpointError, match="not a Point-BERT checkpoint"):
        convert_point_bert({"base_model": dict(OfficialPointMAE().state_dict())}, num_heads=2)


@pytest.mark.parametrize("case", ["point-bert", "act"])
def test_full_size_vit_s_through_the_command_line(case, tmp_path):
    """The official ViT-S sizes (mini-PointNet 128/256/512 -> 256, width 384, 12 blocks, 6 heads), converted by
    `foundry3d convert` from a .pth file, against the re-stated official forward in float64."""
    from foundry3d.cli import main

    cls, source, wrap = CASES[case]
    kw = {"widths": (128, 256, 512), "dim": 384, "depth": 12, "heads": 6, "pos_hidden": 128}
    if case == "point-bert":
        kw["channels"] = 256
    torch.manual_seed(0)
    ref = randomise(cls(**kw), 7).eval()
    torch.save(wrap(dict(ref.state_dict())), tmp_path / "official.pth")
    assert main(["convert", str(tmp_path / "official.pth"), "--source", source, "--out", str(tmp_path / "rel")]) == 0
    model = foundry3d.load(tmp_path / "rel").double()
    cloud = torch.randn(2, 1024, 3, generator=torch.Generator().manual_seed(1)).double()
    cloud = cloud / cloud.norm(dim=-1).amax(1)[:, None, None]
    patches, centres, _ = group_points(cloud, 64, model.cfg.group_size)
    with torch.no_grad():
        ours = model.forward_features(cloud)["tokens"]
        theirs = ref.double()(patches, centres)
    assert ours.shape == (2, 64, 384) and torch.allclose(ours, theirs, atol=1e-9), (ours - theirs).abs().max()
