import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from foundry3d.train.engine import EngineConfig, Task, TrainingDiverged, batch_indices, lr_at
from foundry3d.train.loop import fit
from foundry3d.train.pretrain import pretrain
from foundry3d.train.rundir import RunDirError

TINY = [
    "model.variant=test",
    "data.datasets=[synthetic:train@8]",
    "data.num_points=256",
    "jepa.predictor_dim=16",
    "jepa.predictor_depth=1",
    "jepa.predictor_heads=2",
    "jepa.predictor_pos_hidden=16",
    "probe.enabled=false",
    "engine.batch_size=8",
    "engine.warmup_steps=5",
    "engine.log_every=5",
    "engine.progress=false",
    "engine.tensorboard=false",
    "engine.threads=1",
]


def losses(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


def cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "foundry3d.cli", *args], env=env, **kw)


def test_schedule_and_order_are_pure_functions():
    cfg = EngineConfig(steps=100, warmup_steps=10, lr=1.0, min_lr=0.0, warmup_start_lr=0.0)
    assert lr_at(0, cfg) == 0.0 and lr_at(10, cfg) == 1.0 and abs(lr_at(100, cfg)) < 1e-12
    a = batch_indices(20, 4, seed=1, step=7)
    assert np.array_equal(a, batch_indices(20, 4, seed=1, step=7))
    epoch = np.concatenate([batch_indices(20, 4, 1, s) for s in range(5)])
    assert sorted(epoch.tolist()) == list(range(20))


def test_pretraining_lowers_the_loss(tmp_path):
    pretrain(overrides=[*TINY, "engine.steps=200"], out=tmp_path / "run")
    ls = losses(tmp_path / "run")
    assert np.mean(ls[-4:]) < 0.5 * np.mean(ls[:2]), ls
    assert (tmp_path / "run" / "release" / "model.safetensors").exists()
    assert (tmp_path / "run" / "config.yaml").exists()


def test_run_dir_is_protected(tmp_path):
    pretrain(overrides=[*TINY, "engine.steps=5"], out=tmp_path / "run")
    with pytest.raises(RunDirError, match="already holds a run"):
        pretrain(overrides=[*TINY, "engine.steps=5"], out=tmp_path / "run")
    pretrain(overrides=[*TINY, "engine.steps=5"], out=tmp_path / "run", overwrite=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_then_resume_gives_the_same_weights(tmp_path, workers):
    """Killed and resumed, with batches built in the training process or in 2 worker processes: the same
    weights and log as one uninterrupted run without workers."""
    steps = ["engine.steps=60", "engine.ckpt_every=10"]
    ref = cli("pretrain", "--out", str(tmp_path / "ref"), *TINY, *steps)
    assert ref.wait(timeout=300) == 0
    run = tmp_path / "killed"
    steps.append(f"engine.workers={workers}")
    p = cli("pretrain", "--out", str(run), *TINY, *steps, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert ckpt.exists() and not (run / "release").exists()
    r = cli("pretrain", "--out", str(run), "--resume", *TINY, *steps)
    assert r.wait(timeout=300) == 0
    a = load_file(tmp_path / "ref" / "release" / "model.safetensors")
    b = load_file(run / "release" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert losses(run) == losses(tmp_path / "ref")  # the resumed log has no duplicate rows


def test_resume_with_a_changed_recipe_is_recorded(tmp_path):
    run = tmp_path / "run"
    pretrain(overrides=[*TINY, "engine.steps=10", "engine.ckpt_every=5"], out=run)
    pretrain(overrides=[*TINY, "engine.steps=15", "engine.ckpt_every=5"], out=run, resume=True)
    rows = [json.loads(x) for x in (run / "config_changes.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["at_step"] == 10 and rows[0]["changes"] == {"engine.steps": [10, 15]}
    assert "steps: 15" in (run / "config.yaml").read_text()
    assert max(r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())) == 15


class ExplodingTask(Task):
    def __init__(self, bad_step: int) -> None:
        self.module = torch.nn.Linear(2, 1)
        self.bad_step = bad_step
        self.step = 0

    def num_samples(self) -> int:
        return 16

    def batch(self, indices, generator, device):
        return {"x": torch.randn(len(indices), 2, generator=generator)}


class _Loss(torch.nn.Module):
    def __init__(self, task):
        super().__init__()
        self.lin = task.module
        self.task = task

    def forward(self, x, generator):
        self.task.step += 1
        out = self.lin(x).pow(2).mean()
        return (out * float("nan") if self.task.step > self.task.bad_step else out), {}


def test_nan_loss_stops_with_step_and_checkpoint(tmp_path):
    task = ExplodingTask(bad_step=7)
    task.module = _Loss(task)
    cfg = EngineConfig(steps=20, batch_size=4, ckpt_every=5, progress=False, tensorboard=False, warmup_steps=0)
    with pytest.raises(TrainingDiverged, match=r"step 7.*checkpoints/last.pt"):
        fit(task, cfg, tmp_path / "run", {"x": 1})


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path, torchrun):
    steps = ["engine.steps=30", "engine.batch_size=8", "model.options={drop_path_rate: 0.0}"]
    one = cli("pretrain", "--out", str(tmp_path / "one"), *TINY, *steps)
    assert one.wait(timeout=300) == 0
    two = torchrun(29533, "pretrain", "--out", str(tmp_path / "two"), *TINY, *steps)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = np.array(losses(tmp_path / "one")), np.array(losses(tmp_path / "two"))
    assert len(a) == len(b) == 6
    # Same data, augmentations and (synchronised) BatchNorm statistics: only reduction order differs.
    assert np.max(np.abs(a - b) / a) < 0.01, (a, b)


def test_precision_settings_say_what_this_machine_can_run():
    from foundry3d.errors import Foundry3DError
    from foundry3d.train.engine import _cpu_bf16, autocast_dtype

    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None
    with pytest.raises(Foundry3DError, match="fp16 needs a CUDA GPU"):
        autocast_dtype("fp16", cpu)
    if _cpu_bf16():
        assert autocast_dtype("bf16", cpu) is torch.bfloat16
    else:
        with pytest.raises(Foundry3DError, match="no bf16 instructions"):
            autocast_dtype("bf16", cpu)


def test_compile_without_a_compiler_is_one_line(tmp_path, monkeypatch):
    import foundry3d.train.loop as engine

    monkeypatch.setattr(engine.shutil, "which", lambda name: None)
    monkeypatch.setattr(engine.torch.cuda, "is_available", lambda: False)
    with pytest.raises(engine.EngineError, match="needs a C\\+\\+ compiler"):
        engine._compiled(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("verb", ["pretrain", "distill"])
def test_the_gpu_recipes_run_on_the_cpu_with_the_test_variant(verb, tmp_path):
    """pretrain/vit_s and distill/vit_s as shipped (batch, schedule, workers), shrunk to a few steps of the `test`
    variant on generated shapes; fp32 (bf16 needs a CPU or GPU that has it)."""
    from foundry3d.config import load_config
    from foundry3d.train.distill import DistillConfig, distill

    small = ["data.datasets=[synthetic:train@4]", "data.num_points=256", "engine.steps=2", "engine.batch_size=8",
             "engine.warmup_steps=1", "engine.precision=fp32", "engine.workers=2", "probe.enabled=false",
             "engine.progress=false", "engine.tensorboard=false"]  # fmt: skip
    if verb == "pretrain":
        out = pretrain(config="pretrain/vit_s", overrides=[*small, "model.variant=test", "jepa.predictor_dim=16",
                                                            "jepa.predictor_heads=2"], out=tmp_path / "r")  # fmt: skip
    else:
        teacher = tmp_path / "teacher"
        torch.manual_seed(0)
        import foundry3d
        from foundry3d.models.checkpoint import save_release

        save_release(foundry3d.create_model("test"), teacher)
        out = distill(config="distill/vit_s", teacher=str(teacher), overrides=small, out=tmp_path / "r")
        cfg = load_config(DistillConfig, "distill/vit_s", None)
        assert cfg.engine.batch_size == 256 and cfg.student.supertokens == 16 and cfg.engine.workers == 8
    assert (tmp_path / "r" / "release" / "model.safetensors").is_file() and out["release"]
