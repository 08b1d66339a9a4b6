import json

import pytest
import torch

import foundry3d
from foundry3d import quickstart as qs
from foundry3d.config import apply_overrides
from foundry3d.models.checkpoint import save_release


def as_config(*settings: str) -> dict:
    """A partial config (what a recipe's distill / eval field holds) from dotted settings."""
    return apply_overrides({}, list(settings))


def tiny_recipe() -> qs.Recipe:
    return qs.Recipe(
        supertokens=[1, 4],
        build=[],
        tasks=["svm:synthetic@8", "fewshot:synthetic@12", "partseg:synthetic@4", "fidelity:synthetic@4"],
        showcase=["synthetic:test@2"],
        distill=as_config(
            "data.datasets=[synthetic:train@10]",
            "data.num_points=256",
            "data.cache_views=1",
            "probe.enabled=false",
            "engine.steps=20",
            "engine.batch_size=8",
            "engine.warmup_steps=2",
            "engine.tensorboard=false",
            "engine.progress=false",
            "engine.log_every=5",
        ),
        eval=as_config(
            "progress=false",
            "svm.grid=[0.1]",
            "svm.num_points=256",
            "fewshot.folds=2",
            "fewshot.query=5",
            "partseg.seeds=[0]",
            "partseg.engine.steps=10",
            "partseg.num_points=256",
            "partseg.engine.batch_size=8",
            "partseg.points_per_step=32",
        ),
        bench_points=[256, 512],
        bench_batches=[1, 2],
        bench_budget_s=0.05,
        bench_batch32_max_points=256,
    )


@pytest.fixture
def teacher(tmp_path):
    torch.manual_seed(0)
    return str(save_release(foundry3d.create_model("test"), tmp_path / "teacher"))


def test_quickstart_end_to_end_resume_and_refusal(tmp_path, teacher, monkeypatch, cache):
    # `cache`: an empty dataset cache, so the run can only use the recipe's synthetic data
    out = tmp_path / "qs"
    calls = []
    real_bench = qs._stage_bench

    def failing_bench(*a, **k):
        calls.append("bench")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(qs, "_stage_bench", failing_bench)
    with pytest.raises(RuntimeError, match="interrupted"):
        qs.quickstart(out=out, teacher=teacher, recipe=tiny_recipe())
    assert (out / "stages" / "eval.json").exists() and not (out / "stages" / "bench.json").exists()
    monkeypatch.setattr(qs, "_stage_bench", real_bench)
    # resumes from the last finished stage: distillation and evaluation are not redone
    mtime = (out / "stages" / "eval.json").stat().st_mtime
    stages = qs.quickstart(out=out, teacher=teacher, recipe=tiny_recipe())
    assert (out / "stages" / "eval.json").stat().st_mtime == mtime
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5  # self-contained: every figure inlined
    md = (out / "report.md").read_text()
    assert "s=4" in md and "SuperTokens" in md and "floor" in md and "kept" in md
    for f in md.split("](")[1:]:
        assert (out / f.split(")")[0]).exists()
    assert set(stages["eval"]["results"]) == {"teacher", "floor", "s=1", "s=4"}
    assert stages["eval"]["tasks"] == tiny_recipe().tasks  # the recipe's tasks, not the default suite
    assert json.loads((out / "bench" / "bench.json").read_text())["rows"]
    # a different run in the same folder is refused unless overwrite
    other = tiny_recipe()
    other.supertokens = [2]
    with pytest.raises(qs.QuickstartError, match="different quickstart run"):
        qs.quickstart(out=out, teacher=teacher, recipe=other)
