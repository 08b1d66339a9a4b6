import subprocess
import sys

import pytest
import torch

import foundry3d
from foundry3d.models.checkpoint import CheckpointError, save_release
from foundry3d.models.foundry import FoundryStudent


@pytest.fixture
def teacher():
    torch.manual_seed(0)
    return foundry3d.create_model("test").eval()


def test_assignment_is_exactly_one_hot_in_training_and_eval(teacher, cloud):
    s = FoundryStudent.from_teacher(teacher, supertokens=4)
    tokens, centres, _ = s.tokenize(cloud)
    for train in (True, False):
        s.train(train)
        out = s.forward_tokens(tokens, centres, tau=0.5)
        pos = s.pos_embed(centres)
        _, _, cam, _index, count, _ = s.dso(tokens, pos, torch.ones(2, 16), tau=0.5)
        assert torch.equal(cam.detach().sum(-1), torch.ones(2, 16))  # each token in exactly one bin
        assert set(cam.detach().unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(count.sum(1), torch.full((2,), 16.0))
        assert out["assignment"].min() >= 0 and out["assignment"].max() < 4


def test_supertokens_are_member_means_and_empty_ones_fall_back(teacher, cloud):
    s = FoundryStudent.from_teacher(teacher, supertokens=4).eval()
    tokens, centres, _ = s.tokenize(cloud)
    pos = s.pos_embed(centres)
    real = s.dso.logits

    def forced(tokens, weight):  # bin 3 can never win: it must fall back to its learnable vector
        out = real(tokens, weight).clone()
        out[..., 3] = -1e9
        return out

    s.dso.logits = forced
    with torch.no_grad():
        merged, pos_s, _, index, count, _ = s.dso(tokens, pos, torch.ones(2, 16))
    assert (count[:, 3] == 0).all()
    for b in range(2):
        for k in range(4):
            members = (index[b] == k).nonzero().flatten()
            if len(members):
                assert torch.allclose(merged[b, k], s.dso.v(tokens[b, members]).mean(0), atol=1e-5)
                assert torch.allclose(pos_s[b, k], pos[b, members].mean(0), atol=1e-5)
            else:
                assert torch.equal(merged[b, k], s.dso.supertokens[k])


def test_gradients_reach_supertokens_and_qk(teacher, cloud):
    s = FoundryStudent.from_teacher(teacher, supertokens=4).train()
    out = s.forward_features(cloud)
    out["tokens"].pow(2).mean().backward()
    for name in ("dso.supertokens", "dso.q.weight", "dso.k.weight", "dso.logit_scale"):
        g = dict(s.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name


def test_gate_thresholds(teacher, cloud):
    s = FoundryStudent.from_teacher(teacher, supertokens=4, gate=True).eval()
    assert s.forward_features(cloud, r=1.0)["compressed"].sum() == 0  # every token bypasses DSO
    assert s.forward_features(cloud, r=0.0)["compressed"].all()  # every token goes through DSO
    out = s.forward_features(cloud, r=1.0)
    assert (out["assignment"] == -1).all() and (out["occupancy"] == 0).all()
    k = s.forward_features(cloud, keep=5)
    assert (k["compressed"].sum(1) == 11).all()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            s.forward_features(cloud, r=bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FoundryStudent.from_teacher(teacher, supertokens=4, gate=True, gate_threshold=2.0)


def test_gate_scores_get_gradients(teacher, cloud):
    s = FoundryStudent.from_teacher(teacher, supertokens=4, gate=True).train()
    out = s.forward_features(cloud, r=0.5)
    (out["tokens"].sum() - out["gate_scores"].mean()).backward()
    assert s.gate.mlp[2].weight.grad.abs().sum() > 0  # straight-through mask + regulariser reach the gate


@pytest.mark.parametrize("s_count", [1, 7, 16])
def test_any_s_and_any_c(teacher, s_count):
    st = FoundryStudent.from_teacher(teacher, supertokens=s_count).eval()
    x = torch.randn(1, 2048, 3)
    assert st.forward_features(x, num_groups=128)["tokens"].shape == (1, 128, 32)
    assert st.forward_features(x, num_groups=16)["tokens"].shape == (1, 16, 32)
    with pytest.raises(ValueError, match="exceeds"):
        FoundryStudent.from_teacher(teacher, supertokens=17).forward_features(x, num_groups=16)
    with pytest.raises(ValueError, match=">= 1"):
        FoundryStudent.from_teacher(teacher, supertokens=0)


def test_student_runs_without_the_teacher(teacher, cloud, tmp_path):
    s = FoundryStudent.from_teacher(teacher, supertokens=4).eval()
    assert not any(isinstance(m, type(teacher)) for m in s.modules())
    save_release(s, tmp_path / "student")
    want = s.forward_features(cloud)["tokens"]
    torch.save(cloud, tmp_path / "cloud.pt")
    code = (
        "import sys, torch, foundry3d; m = foundry3d.load(sys.argv[1]); "
        "y = m.forward_features(torch.load(sys.argv[2]))['tokens']; torch.save(y, sys.argv[3])"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "student"), str(tmp_path / "cloud.pt"), str(tmp_path / "y.pt")],
        check=True,
    )
    assert torch.equal(torch.load(tmp_path / "y.pt"), want)
    loaded = foundry3d.load(tmp_path / "student")
    assert loaded.cfg.teacher_name == "test" and len(loaded.cfg.teacher_hash) == 64


def test_kinds_are_not_confused(teacher, tmp_path):
    from foundry3d.models.hub import load_teacher

    s = FoundryStudent.from_teacher(teacher, supertokens=4)
    save_release(s, tmp_path / "student")
    with pytest.raises(CheckpointError, match="student, not a teacher"):
        load_teacher(str(tmp_path / "student"))
    save_release(teacher, tmp_path / "teacher")
    with pytest.raises(CheckpointError, match="expected"):
        foundry3d.load(tmp_path / "teacher", expect_kind="student")


def test_intermediates_are_routed_to_every_token(teacher, cloud):
    s = FoundryStudent.from_teacher(teacher, supertokens=4, blocks=[0, 1]).eval()
    out = s.forward_intermediates(cloud, indices=[0, 1], norm=True)
    assert [h.shape for h in out["intermediates"]] == [(2, 16, 32)] * 2


def test_runtime_gate_setting_from_a_model_spec(teacher, cloud, tmp_path):
    from foundry3d.models.hub import HubError, resolve

    s = FoundryStudent.from_teacher(teacher, supertokens=4, gate=True).eval()
    save_release(s, tmp_path / "gated")
    m, info = resolve(f"{tmp_path / 'gated'}?r=1.0")
    assert info["model"].endswith("?r=1.0") and m.forward_features(cloud)["compressed"].sum() == 0
    _, info2 = resolve(f"{tmp_path / 'gated'}?r=0.0")
    assert info2["hash"] != info["hash"]  # the run-time option is part of the model's identity
    m, _ = resolve(f"{tmp_path / 'gated'}?keep=6")
    assert (m.forward_features(cloud)["compressed"].sum(1) == 10).all()
    save_release(FoundryStudent.from_teacher(teacher, supertokens=4), tmp_path / "plain")
    with pytest.raises(HubError, match="no gate"):
        resolve(f"{tmp_path / 'plain'}?r=0.5")


def test_supertoken_position_options(teacher, cloud):
    for mode in ("mean_pe", "pe_of_mean"):
        s = FoundryStudent.from_teacher(teacher, supertokens=4, supertoken_pos=mode).eval()
        tokens, centres, _ = s.tokenize(cloud)
        captured: dict[str, torch.Tensor] = {}

        def grab(module, args, store=captured):
            store.setdefault("x", args[0])

        hook = s.blocks[0].register_forward_pre_hook(grab)
        out = s.forward_tokens(tokens, centres)
        hook.remove()
        idx, pos = out["assignment"][0], s.pos_embed(centres)[0]
        merged, _, _, _, _, _ = s.dso(tokens, s.pos_embed(centres), torch.ones(2, 16))
        k = int(idx[0])
        members = (idx == k).nonzero().flatten()
        want = pos[members].mean(0) if mode == "mean_pe" else s.pos_embed(centres[0, members].mean(0))
        assert torch.allclose(captured["x"][0, k] - merged[0, k], want, atol=1e-5)


def test_kmeans_xyz_groups_tokens_by_where_they_sit_not_by_what_they_say(cloud):
    import foundry3d
    from foundry3d.models.hub import create_student

    torch.manual_seed(0)
    st = create_student(foundry3d.create_model("test"), kind="kmeans_xyz", supertokens=4).eval()
    with torch.no_grad():
        tokens, centres, _ = st.tokenize(cloud / cloud.norm(dim=-1).amax(1)[:, None, None])
        a = st.forward_tokens(tokens, centres)["assignment"]
        b = st.forward_tokens(torch.randn_like(tokens), centres)["assignment"]  # other features, same places
    assert torch.equal(a, b) and a.shape == tokens.shape[:2] and int(a.max()) < 4
    # the clusters are spatial: tokens sharing a SuperToken sit closer together than tokens that do not
    d = torch.cdist(centres, centres)
    same = a[:, :, None] == a[:, None, :]
    assert d[same].mean() < d[~same].mean()


def test_fps_presample_encodes_only_the_picked_tokens(cloud):
    import foundry3d
    from foundry3d.models.assign import fps_pick_assign
    from foundry3d.models.hub import create_student
    from foundry3d.ops.group import gather_points

    torch.manual_seed(0)
    st = create_student(foundry3d.create_model("test"), kind="fps_presample", supertokens=4).eval()
    with torch.no_grad():
        tokens, centres, _ = st.tokenize(cloud / cloud.norm(dim=-1).amax(1)[:, None, None])
        pos = st.pos_embed(centres)
        merged, pos_s, _, index, count, _ = st.dso(tokens, pos, torch.ones(tokens.shape[:2]), centres=centres)
        pick, want = fps_pick_assign(centres, 4)
    assert torch.equal(merged, gather_points(st.dso.v(tokens), pick)) and torch.equal(pos_s, gather_points(pos, pick))
    assert torch.equal(index, want) and bool((count >= 1).all())  # every kept token is its own slot's member
    other = tokens.clone()
    keep = torch.zeros(tokens.shape[:2], dtype=torch.bool).scatter_(1, pick, True)
    other[~keep] = torch.randn_like(other[~keep])  # the dropped tokens never reach the encoder
    with torch.no_grad():
        m2 = st.dso(other, pos, torch.ones(tokens.shape[:2]), centres=centres)[0]
    assert torch.equal(m2, merged)


def test_kmeans_static_fits_one_codebook_on_training_tokens_and_keeps_it(tmp_path):
    import foundry3d
    from foundry3d.models.checkpoint import save_release
    from foundry3d.ops.knn import square_distance

    torch.manual_seed(0)
    teacher = save_release(foundry3d.create_model("test"), tmp_path / "teacher")
    ov = [
        "data.datasets=[synthetic:train@4]",
        "data.num_points=256",
        "probe.enabled=false",
        "engine.steps=3",
        "engine.batch_size=4",
        "engine.progress=false",
        "engine.tensorboard=false",
        "student.kind=kmeans_static",
    ]
    run = foundry3d.distill(teacher=str(teacher), supertokens=4, overrides=ov, out=tmp_path / "run")  # fmt: skip
    st = foundry3d.load(run["release"])
    book = st.dso.codebook
    assert book.shape == (4, st.tcfg.dim) and float(book.abs().sum()) > 0 and len(torch.unique(book, dim=0)) == 4
    x = torch.randn(2, 256, 3)
    with torch.no_grad():
        tokens, centres, _ = st.tokenize(x / x.norm(dim=-1).amax(1)[:, None, None])
        got = st.forward_tokens(tokens, centres)["assignment"]
    assert torch.equal(got, square_distance(tokens, book.expand(2, -1, -1)).argmin(-1))  # nearest codeword


@pytest.mark.parametrize("count_grad", [False, True])
def test_count_grad_makes_the_bin_mean_gradient_that_of_a_true_mean(count_grad):
    """A bin whose members are identical has mean = every member: moving a member's one-hot weight changes
    a true mean by (v - mean) / n = 0. With the counts detached the gradient is v / n, not 0."""
    from foundry3d.models.foundry import DSO

    torch.manual_seed(0)
    dso = DSO(8, 2, "cosine", centre_keys=False, count_grad=count_grad).train()
    member = torch.randn(1, 1, 8)
    tokens = member.expand(1, 6, 8).clone().requires_grad_(False)
    logits = torch.zeros(1, 6, 2, requires_grad=True)
    dso.logits = lambda t, w: logits  # every token in one bin (ties go to bin 0), soft weights 1/2
    merged, _, _, _, count, _ = dso(tokens, torch.zeros(1, 6, 8), torch.ones(1, 6), noise=False)
    assert count.tolist() == [[6.0, 0.0]]
    (merged[:, 0] * torch.randn(8)).sum().backward()
    grad = logits.grad.abs().max().item()
    assert (grad < 1e-6) if count_grad else (grad > 1e-3), grad


def test_masked_empty_bins_are_never_read(teacher, cloud):
    """empty_bins=mask: whatever an empty SuperToken holds, no output changes (it is no attention key and has
    no member to route back to); with the fallback it is a key and the outputs move."""
    moved = {}
    for mode in ("fallback", "mask"):
        torch.manual_seed(0)
        s = FoundryStudent.from_teacher(teacher, supertokens=8, empty_bins=mode).eval()
        tokens, centres, _ = s.tokenize(cloud)
        real = s.dso.logits

        def forced(tokens, weight, real=real):  # bins 6 and 7 never win: always empty
            out = real(tokens, weight).clone()
            out[..., 6:] = -1e9
            return out

        s.dso.logits = forced
        with torch.no_grad():
            base = s.forward_tokens(tokens, centres)["tokens"]
            s.dso.supertokens[6:] = 50.0 * torch.randn(2, s.dso.supertokens.shape[1])
            other = s.forward_tokens(tokens, centres)["tokens"]
        moved[mode] = (other - base).abs().max().item()
    assert moved["mask"] == 0.0 and moved["fallback"] > 1e-3, moved
