import json

import pytest
import torch

import foundry3d
from foundry3d.models.checkpoint import save_release
from foundry3d.study import StudyError, study

DISTILL = [
    "data.datasets=[synthetic:train@10]",
    "data.num_points=256",
    "data.cache_views=1",
    "probe.enabled=false",
    "engine.steps=12",
    "engine.batch_size=8",
    "engine.warmup_steps=2",
    "engine.tensorboard=false",
    "engine.progress=false",
    "engine.log_every=4",
]
EVAL = ["progress=false", "svm.grid=[0.1]", "svm.published=false", "svm.num_points=256", "fidelity.num_points=256"]
EXPERT = [
    "num_points=256",
    "finetune.engine.steps=6",
    "finetune.frozen_steps=2",
    "finetune.engine.batch_size=8",
    "kd.engine.steps=6",
    "kd.engine.batch_size=8",
    "finetune.engine.progress=false",
    "kd.engine.progress=false",
]


def _tiny_study(tmp_path, **fields):
    """A study config on a random test teacher and generated shapes (seconds per student)."""
    torch.manual_seed(0)
    teacher = str(save_release(foundry3d.create_model("test"), tmp_path / "teacher"))
    return {"teacher": teacher, "tasks": ["svm:synthetic@8", "fidelity:synthetic@4"], "supertokens": 4, **fields}


@pytest.mark.slow
def test_study_end_to_end_on_a_tiny_teacher(tmp_path):
    cfg = _tiny_study(
        tmp_path,
        kinds=["foundry", "kmeans", "fps", "mlp", "mimic", "patchmerger", "tome", "tome_dso"],
        sweep=[1, 2, 4],
        gate_r=[0.0, 1.0],
        gate_keep=[4],
        merging=["tome", "pitome"],
        experts=["cls:synthetic@6"],
        distill=DISTILL,
        expert_overrides=EXPERT,
        eval=EVAL,
        flops_points=256,
    )
    res = study("paper", config=cfg, out=tmp_path / "paper")
    record = json.loads((tmp_path / "paper" / "study.json").read_text())
    models = record["models"]
    assert {"teacher", "floor", "foundry s=4", "kmeans s=4", "mimic s=4", "expert cls:synthetic@6"} <= set(models)
    assert any(k.startswith("tome (training-free)") for k in models) and all("flops" in m for m in models.values())
    comp = record["comparison"]["fidelity:synthetic@4"]
    assert comp["students"]["foundry s=4"]["gain"]["student"] <= 1.0
    md = (tmp_path / "paper" / "study.md").read_text()
    for title in (
        "1. Universal",
        "2. SuperToken ablation",
        "3. Number of SuperTokens",
        "4. The gate",
        "5. Token merging",
    ):
        assert title in md
    assert (tmp_path / "paper" / "study.html").read_text().count("<table>") >= 5
    assert res["study"].endswith("study.json")
    cfg2 = {**cfg, "sweep": [1]}
    with pytest.raises(StudyError, match="other settings"):
        study("paper", config=cfg2, out=tmp_path / "paper")


def test_the_ablation_over_seeds_reports_spread_paired_differences_and_context_r2(tmp_path):
    cfg = _tiny_study(
        tmp_path,
        kinds=["foundry", "kmeans", "mlp"],
        seeds=[1, 2],
        sweep=[],
        gate_r=[],
        gate_keep=[],
        merging=[],
        experts=[],
        distill=[o for o in DISTILL if not o.startswith("engine.steps")] + ["engine.steps=4"],
        eval=EVAL,
        flops_points=256,
    )
    study("paper", config=cfg, out=tmp_path / "paper")
    record = json.loads((tmp_path / "paper" / "study.json").read_text())
    assert {"foundry s=4", "foundry s=4 seed=2", "kmeans s=4 seed=2", "mlp s=4 seed=2"} <= set(record["models"])
    runs = tmp_path / "paper" / "students"
    seeds = [(runs / n / "config.yaml").read_text() for n in ("foundry_s_4", "foundry_s_4_seed_2")]
    assert "seed: 1" in seeds[0] and "seed: 2" in seeds[1]
    fid = record["seeds"]["tasks"]["fidelity:synthetic@4"]
    assert len(fid["foundry"]["seeds"]) == 2 and fid["foundry"]["sd"] >= 0
    assert "minus_foundry" not in fid["foundry"] and len(fid["kmeans"]["minus_foundry"]) == 3
    d, lo, hi = fid["kmeans"]["minus_foundry"]
    assert lo <= d <= hi
    assert fid["mlp"]["context_r2"]["mean"] == 0.0
    assert "2b. SuperToken ablation at s = 4 over seeds" in (tmp_path / "paper" / "study.md").read_text()
