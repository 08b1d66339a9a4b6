"""Each evaluation protocol on a case with a known answer (not only 0 <= score <= 1)."""

import numpy as np
import pytest
import torch

from foundry3d.data.base import ArrayDataset
from foundry3d.eval.tasks.fewshot import FewShotConfig, fewshot_from_features
from foundry3d.eval.tasks.finetune import FinetuneConfig, finetune_protocol
from foundry3d.eval.tasks.svm import fit_svm


def _blobs(n_per: int, classes: int, dim: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per)
    centres = rng.normal(size=(classes, dim)) * sep
    return centres[y] + rng.normal(size=(len(y), dim)), y


def test_svm_separates_separable_classes_and_fails_on_noise():
    x, y = _blobs(30, 4, 8, sep=10.0, seed=0)
    xt, yt = _blobs(20, 4, 8, sep=10.0, seed=0)
    clf, used = fit_svm(x, y, grid=(0.1, 1.0))
    assert (clf.predict(xt) == yt).mean() == 1.0 and used["C"] in (0.1, 1.0)
    rng = np.random.default_rng(1)
    noise, labels = rng.normal(size=(200, 8)), rng.integers(0, 4, 200)
    clf, _ = fit_svm(noise, labels, grid=(0.1,))
    acc = (clf.predict(rng.normal(size=(400, 8))) == rng.integers(0, 4, 400)).mean()
    assert 0.15 < acc < 0.35  # chance is 0.25


def test_fewshot_known_answers():
    xs, ys = _blobs(12, 6, 8, sep=10.0, seed=2)
    xq, yq = _blobs(25, 6, 8, sep=10.0, seed=2)
    res = fewshot_from_features(xs, ys, xq, yq, FewShotConfig(way=5, shot=10, query=20, folds=3))
    assert res["acc"] == 1.0
    rng = np.random.default_rng(3)
    res = fewshot_from_features(
        rng.normal(size=xs.shape), ys, rng.normal(size=xq.shape), yq, FewShotConfig(way=5, shot=10, query=20, folds=5)
    )
    assert 0.05 < res["acc"] < 0.4  # chance is 0.2


def test_finetune_protocol_learns_an_easy_task(tmp_path):
    """Two classes a backbone cannot confuse: a small sphere vs a flat disc."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def cloud(kind: int) -> np.ndarray:
        p = rng.normal(size=(256, 3))
        p /= np.linalg.norm(p, axis=1, keepdims=True)
        if kind:
            p[:, 1] *= 0.05
        return p.astype(np.float32)

    y = np.array([i % 2 for i in range(48)])
    pts = np.stack([cloud(k) for k in y])
    train = ArrayDataset(pts[:32], y[:32], name="easy", split="train", classes=["ball", "disc"])
    test = ArrayDataset(pts[32:], y[32:], name="easy", split="test", classes=["ball", "disc"])
    import foundry3d

    backbone = foundry3d.create_model("test")
    cfg = FinetuneConfig(num_points=256, frozen_steps=10)
    cfg.engine.steps, cfg.engine.batch_size, cfg.engine.warmup_steps = 200, 16, 10  # BatchNorm statistics settle
    res = finetune_protocol(backbone, train, test, cfg, tmp_path / "ft")
    assert res["acc"] >= 0.9


@pytest.mark.parametrize("frozen", [True])
def test_finetune_keeps_the_backbone_frozen_during_the_head_phase(frozen, tmp_path):
    import foundry3d
    from foundry3d.eval.tasks.finetune import FinetuneTask

    ds = ArrayDataset(
        np.random.default_rng(0).normal(size=(8, 256, 3)).astype(np.float32), np.arange(8) % 2, classes=["a", "b"]
    )
    task = FinetuneTask(foundry3d.create_model("test"), ds, FinetuneConfig(frozen_steps=5))
    task.before_step(0)
    assert not any(p.requires_grad for p in task.module.model.backbone.parameters())
    task.before_step(5)
    assert all(p.requires_grad for p in task.module.model.backbone.parameters())


def test_fidelity_teacher_tokens_cache_gives_the_same_scores_and_skips_the_teacher(tmp_path, monkeypatch):
    from foundry3d.eval.tasks.fidelity import FidelityConfig, fidelity_protocol
    from foundry3d.models.hub import create_model, create_student

    torch.manual_seed(0)
    teacher = create_model("test").eval()
    student = create_student(teacher, supertokens=4).eval()
    test = ArrayDataset(np.random.default_rng(0).normal(size=(6, 256, 3)).astype(np.float32), name="six", split="test")
    cfg = FidelityConfig(num_points=256, batch_size=4)
    plain = fidelity_protocol(student, teacher, test, cfg)
    first = fidelity_protocol(student, teacher, test, cfg, cache=tmp_path)
    (file,) = tmp_path.glob("fidelity-teacher-*.npy")
    calls: list[int] = []
    real = teacher.forward_tokens
    monkeypatch.setattr(teacher, "forward_tokens", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = fidelity_protocol(student, teacher, test, cfg, cache=tmp_path)
    assert plain == first == second  # the cache changes no score, to the bit
    assert not calls  # the teacher's blocks did not run again
    file.write_bytes(file.read_bytes()[:100])  # a truncated cache file is recomputed, not trusted
    assert fidelity_protocol(student, teacher, test, cfg, cache=tmp_path) == plain
    assert calls and np.load(file).shape[0] == 6
    with torch.no_grad():
        list(teacher.parameters())[-3].add_(1.0)  # another teacher: its own file, never the first one's tokens
    assert fidelity_protocol(student, teacher, test, cfg, cache=tmp_path)["r2"] != plain["r2"]
    assert len(list(tmp_path.glob("fidelity-teacher-*.npy"))) == 2
