import pytest
import torch

import foundry3d
from foundry3d.edge.bench import bench
from foundry3d.edge.export import export_onnx
from foundry3d.edge.flops import count_flops
from foundry3d.edge.memory import peak_activation_bytes
from foundry3d.models.checkpoint import save_release
from foundry3d.models.foundry import FoundryStudent


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    t = foundry3d.create_model("test").eval()
    return t, FoundryStudent.from_teacher(t, supertokens=2).eval()


def test_flops_follow_the_2_per_mac_convention():
    lin = torch.nn.Linear(3, 5, bias=False)

    class M(torch.nn.Module):
        def forward_features(self, points):
            return {"tokens": lin(points)}

    assert count_flops(M(), torch.randn(2, 7, 3))["flops"] == 2 * 7 * 3 * 5  # per cloud


def test_student_costs_less_than_its_teacher(pair):
    t, s = pair
    x = torch.randn(1, 1024, 3)
    ft, fs = count_flops(t, x, num_groups=64)["flops"], count_flops(s, x, num_groups=64)["flops"]
    assert fs < ft
    assert peak_activation_bytes(t, x, num_groups=64) > 0


def test_bench_reports_every_setting(pair, tmp_path):
    t, s = pair
    save_release(t, tmp_path / "t")
    save_release(s, tmp_path / "s")
    models, names = [str(tmp_path / "t"), str(tmp_path / "s")], ["teacher", "s=2"]
    r = bench(models, points=[256, 512], batches=[1, 2], out=tmp_path / "b", budget_s=0.05, names=names)
    assert len(r["rows"]) == 4 and {"b1_median_ms", "b2_p90_ms", "flops_ratio", "b1_peak_rss_mb"} <= set(r["rows"][0])
    assert (tmp_path / "b" / "bench.csv").read_text().count("\n") == 5
    r = bench(
        models,
        [256, 512],
        [1, 2],
        out=tmp_path / "cap",
        budget_s=0.05,
        batch_max_points=256,
        names=names,
        explicit_attention=True,
    )
    big = [x for x in r["rows"] if x["points"] == 512]
    assert all("b1_median_ms" in x and "b2_median_ms" not in x for x in big)
    assert any(x["model"] == "teacher (explicit attention)" for x in r["rows"])
    assert "b2_latency_ratio" in r["rows"][2] and "b2_median_ms" in (tmp_path / "cap" / "bench.csv").read_text()


def test_bench_reports_oom_under_a_memory_cap(pair, tmp_path):
    t, _ = pair
    save_release(t, tmp_path / "t")
    # explicit attention over 4,096 tokens needs ~130 MB more than the loaded process (~0.7 GB of address space)
    r = bench(
        [str(tmp_path / "t")],
        points=[256, 65536],
        batches=[1],
        out=None,
        budget_s=0.05,
        memory_cap_gb=0.8,
        explicit_attention=True,
    )
    rows = {(x["model"].rsplit("/", 1)[-1], x["points"]): x for x in r["rows"]}
    assert "b1_median_ms" in rows[("t", 256)] and rows[("t (explicit attention)", 65536)].get("b1_oom")


def test_onnx_export_matches_pytorch(pair, tmp_path):
    _, s = pair
    save_release(s, tmp_path / "student")
    res = export_onnx(str(tmp_path / "student"), tmp_path / "s.onnx", num_points=256)
    assert all(r["max_abs_err"] < 1e-4 and r["assignment_match"] >= 0.99 for r in res["parity"])


def test_the_shipped_edge_recipe_builds_a_student_under_the_flops_target():
    """configs/distill/edge.yaml: the README's edge student, <= 0.15x the FLOPs of its teacher at 1k points."""
    import dataclasses

    from foundry3d.config import load_config
    from foundry3d.models.hub import create_student, load_teacher
    from foundry3d.models.student import StudentArch
    from foundry3d.train.distill import DistillConfig

    cfg = load_config(DistillConfig, "distill/edge")
    assert cfg.student.tokenizer == "narrow" and not cfg.student.freeze_tokenizer
    teacher = load_teacher(cfg.teacher)
    arch = {f.name: getattr(cfg.student, f.name) for f in dataclasses.fields(StudentArch)}
    student = create_student(teacher, **arch).eval()
    x = torch.randn(1, 1024, 3, generator=torch.Generator().manual_seed(0))
    ratio = count_flops(student, x)["flops"] / count_flops(teacher, x)["flops"]
    assert 0.1 < ratio <= 0.15
