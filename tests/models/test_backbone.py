import pytest
import torch

import foundry3d
from foundry3d.errors import Foundry3DError
from foundry3d.models.backbone import pool_tokens
from foundry3d.models.checkpoint import CheckpointError, save_release
from foundry3d.models.hub import load


def test_variants_are_registered_and_build():
    assert {"vit_s", "tiny", "test", "vit_s_mae"} <= set(foundry3d.list_models())
    m = foundry3d.create_model("test")
    assert m.cfg.dim == 32
    with pytest.raises(ValueError, match=r"unknown model variant .vit_huge.; registered: small"):
        foundry3d.create_model("vit_huge")
    with pytest.raises(ValueError, match="unknown backbone option"):
        foundry3d.create_model("test", widht=3)


def test_vit_s_shape_matches_the_paper():
    m = foundry3d.create_model("vit_s")
    n = sum(p.numel() for p in m.parameters())
    assert m.cfg.dim == 384 and len(m.encoder.blocks) == 12 and m.cfg.num_heads == 6
    assert m.cfg.num_groups == 64 and m.cfg.group_size == 32
    assert 21.7e6 < n < 21.9e6  # tokenizer 0.49M + pos 0.05M + encoder 21.29M


def test_forward_api(cloud):
    m = foundry3d.create_model("test").eval()
    f = m.forward_features(cloud)
    assert f["tokens"].shape == (2, 16, 32) and f["centres"].shape == (2, 16, 3)
    inter = m.forward_intermediates(cloud, indices=[0, -1], norm=True)
    assert len(inter["intermediates"]) == 2
    assert torch.allclose(inter["tokens"], f["tokens"], atol=1e-6)
    assert torch.allclose(inter["intermediates"][1].mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert m(cloud).shape == (2, 64)
    assert torch.equal(m.forward_head(f), pool_tokens(f["tokens"]))
    assert m.forward_features(cloud, num_groups=8)["tokens"].shape == (2, 8, 32)


def test_pos_is_added_before_every_block(cloud):
    m = foundry3d.create_model("test").eval()
    tokens, centres, _ = m.tokenize(cloud)
    pos = m.pos_embed(centres)
    x = tokens
    for blk in m.encoder.blocks:
        x = blk(x + pos)
    assert torch.allclose(m.encoder.norm(x), m.forward_features(cloud)["tokens"], atol=1e-6)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.randn(2, 256), "shape"),
        (torch.randint(0, 5, (2, 256, 3)), "floating"),
        (torch.randn(2, 4, 3), "fewer than"),
        (torch.full((2, 256, 3), float("nan")), "NaN"),
    ],
)
def test_bad_clouds_are_rejected(bad, match):
    m = foundry3d.create_model("test")
    with pytest.raises((ValueError, TypeError), match=match):
        m.forward_features(bad)


def test_release_roundtrip_and_bad_files(tmp_path, cloud):
    m = foundry3d.create_model("test").eval()
    save_release(m, tmp_path / "rel", meta={"note": "x"})
    m2 = foundry3d.load(tmp_path / "rel")
    assert torch.equal(m.forward_features(cloud)["tokens"], m2.forward_features(cloud)["tokens"])
    assert m2.release_meta == {"note": "x"}
    assert foundry3d.load(tmp_path / "rel" / "model.safetensors").cfg.name == "test"
    # truncated
    data = (tmp_path / "rel" / "model.safetensors").read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated|corrupt|readable"):
        load(tmp_path / "trunc.safetensors")
    # wrong kind requested
    with pytest.raises(CheckpointError, match="expected"):
        load(tmp_path / "rel", expect_kind="foundry_student")
    # not a release at all
    with pytest.raises(CheckpointError):
        load(tmp_path / "nothing-here")
    torch.save({"a": 1}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not a foundry3d release"):
        load(tmp_path / "x.pt")


def test_every_embedded_teacher_loads_and_pretrained_means_the_default():
    from foundry3d.models.hub import DEFAULT_TEACHER, EMBEDDED, embedded_path, load_teacher, model_hash

    assert DEFAULT_TEACHER in foundry3d.list_models("embedded")
    x = torch.randn(2, 1024, 3)
    for name in foundry3d.list_models("embedded"):
        m = load_teacher(f"embedded:{name}")
        arch = foundry3d.create_model(EMBEDDED.info(name)["variant"]).cfg
        assert (m.cfg.dim, m.cfg.depth, m.cfg.num_heads) == (arch.dim, arch.depth, arch.num_heads)
        assert (embedded_path(name) / "MODEL_CARD.md").is_file()
        assert torch.isfinite(m.forward_features(x)["tokens"]).all()
    default = foundry3d.create_model(DEFAULT_TEACHER, pretrained=True)
    assert model_hash(default) == model_hash(load_teacher("embedded"))
    named = foundry3d.create_model("tiny", pretrained=True)  # the teacher named tiny, not the default tiny2
    assert model_hash(named) == model_hash(load_teacher("embedded:tiny")) != model_hash(default)
    assert model_hash(foundry3d.create_model(f"tiny.{DEFAULT_TEACHER}", pretrained=True)) == model_hash(default)
    with pytest.raises(Foundry3DError, match="no pretrained weights named 'vit_s'; shipped: tiny"):
        foundry3d.create_model("vit_s", pretrained=True)
    with pytest.raises(Foundry3DError, match=r"no pretrained weights named 'small\.tiny2'"):
        foundry3d.create_model("small.tiny2", pretrained=True)
