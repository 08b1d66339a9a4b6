"""timm-style contract over every registered model variant and every student kind."""

import pytest
import torch

import foundry3d
from foundry3d.models.checkpoint import save_release
from foundry3d.models.hub import VARIANTS, create_student, load, resolve
from foundry3d.models.student import student_kinds

KINDS = student_kinds().names()  # every kind, those of models/students/ included


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return foundry3d.create_model("test").eval()


def _student(teacher, kind):
    torch.manual_seed(1)
    return create_student(teacher, kind=kind, supertokens=4, tome_r=2)


@pytest.mark.parametrize("name", VARIANTS.names())
def test_every_variant_builds_and_intermediates_agree(name):
    m = foundry3d.create_model(name).eval()
    x = torch.randn(1, m.cfg.num_points, 3)
    x = x / x.norm(dim=-1).max()
    with torch.no_grad():
        feats = m.forward_features(x)
        inter = m.forward_intermediates(x, indices=[-1])
        every = m.forward_intermediates(x)  # timm: indices=None is every block
    assert torch.allclose(m.encoder.norm(inter["intermediates"][0]), feats["tokens"], atol=1e-5)
    assert torch.allclose(inter["tokens"], feats["tokens"])
    assert len(every["intermediates"]) == m.cfg.depth and torch.equal(
        every["intermediates"][-1], inter["intermediates"][0]
    )
    assert m.num_classes == 0 and torch.equal(m.forward_head(feats, pre_logits=True), m.forward_head(feats))


@pytest.mark.parametrize("kind", KINDS)
def test_student_kind_shapes_and_intermediates(teacher, kind, cloud):
    s = _student(teacher, kind).eval()
    with torch.no_grad():
        f = s.forward_features(cloud)
        i = s.forward_intermediates(cloud, indices=[0], norm=True)
    assert f["tokens"].shape == (2, 16, teacher.dim)
    assert torch.allclose(i["tokens"], f["tokens"], atol=1e-5)  # the same forward pass
    assert i["intermediates"][0].shape == (2, 16, teacher.dim)
    assert s.forward_head(f).shape == (2, 2 * teacher.dim)
    assert torch.equal(s.forward_head(f, pre_logits=True), s.forward_head(f))
    with torch.no_grad():
        assert len(s.forward_intermediates(cloud)["intermediates"]) == s.num_blocks  # timm: None is every block


@pytest.mark.parametrize("kind", KINDS)
def test_backward_reaches_every_trainable_parameter(teacher, kind, cloud):
    s = _student(teacher, kind).train()
    s.tokenizer.requires_grad_(False)  # frozen in distillation (its BatchNorm runs in eval)
    s.tokenizer.eval()
    s.forward_features(cloud)["tokens"].pow(2).mean().backward()
    missing = [n for n, p in s.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing, f"{kind}: no gradient reaches {missing}"


@pytest.mark.parametrize("kind", KINDS)
def test_student_kind_round_trips_and_runs_without_the_teacher(teacher, kind, cloud, tmp_path):
    s = _student(teacher, kind).eval()
    save_release(s, tmp_path / kind)
    loaded = load(tmp_path / kind, expect_kind="student")
    assert type(loaded) is type(s) and loaded.cfg.kind == kind
    assert not any(isinstance(m, type(teacher)) for m in loaded.modules())
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(cloud)["tokens"], s.forward_features(cloud)["tokens"])


@pytest.mark.parametrize("kind", KINDS)
def test_student_kind_is_export_safe(teacher, kind):
    s = _student(teacher, kind).eval()

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.forward_features(x)["tokens"]

    x = torch.randn(1, 256, 3)
    prog = torch.export.export(Wrap(s), (x,), strict=False)
    with torch.no_grad():
        assert torch.allclose(prog.module()(x), Wrap(s)(x), atol=1e-5)


def test_specs_resolve_to_floor_and_merged_teachers(teacher, tmp_path, cloud):
    save_release(teacher, tmp_path / "t")
    floor, info = resolve(f"floor:{tmp_path / 't'}")
    assert info["kind"] == "floor"
    with torch.no_grad():
        tokens, centres, _ = teacher.tokenize(cloud)
        want = torch.nn.functional.layer_norm(tokens + teacher.pos_embed(centres), (teacher.dim,))
        assert torch.allclose(floor.forward_features(cloud)["tokens"], want, atol=1e-6)
    for method in ("tome", "pitome"):
        m, info = resolve(f"{method}:{tmp_path / 't'}?r=2")
        with torch.no_grad():
            out = m.forward_features(cloud)["tokens"]
        assert out.shape == (2, 16, teacher.dim) and info["kind"] == "merged_backbone"
    m0, _ = resolve(f"tome:{tmp_path / 't'}?r=0")  # no merging: exactly the teacher
    with torch.no_grad():
        assert torch.allclose(
            m0.forward_features(cloud)["tokens"], teacher.forward_features(cloud)["tokens"], atol=1e-5
        )


def test_describe_model_names_what_a_table_row_is(teacher, tmp_path):
    from foundry3d.models.hub import describe_model

    narrow = create_student(teacher, supertokens=4, tokenizer="narrow", tokenizer_widths=(4, 4, 8), blocks=[1])
    save_release(narrow, tmp_path / "narrow")
    line = describe_model(*resolve(str(tmp_path / "narrow")))
    assert line.startswith("student:foundry s=4, narrow tokenizer [4, 4, 8], teacher blocks [1]")
    assert f"{sum(p.numel() for p in narrow.parameters()):,} parameters" in line
    assert describe_model(*resolve(_student(teacher, "kmeans"))).startswith("student:kmeans s=4, teacher's tokenizer")
    assert describe_model(teacher, {"kind": "backbone", "params": 12}) == "backbone, 12 parameters"
