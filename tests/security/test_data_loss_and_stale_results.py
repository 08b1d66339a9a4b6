"""Users' files survive every flag; a change of data, path, content, model option or setting recomputes."""

import json

import numpy as np
import pytest
import torch

import foundry3d
from foundry3d.data.base import ArrayDataset
from foundry3d.eval.suite import evaluate
from foundry3d.models.checkpoint import CheckpointError, save_release
from foundry3d.models.convert import convert
from foundry3d.models.features import extract
from foundry3d.train.distill import distill
from foundry3d.train.rundir import RunDirError

BASE = [
    "data.datasets=[synthetic:train@6]",
    "data.num_points=256",
    "probe.enabled=false",
    "engine.steps=4",
    "engine.batch_size=4",
    "engine.warmup_steps=1",
    "engine.log_every=2",
    "engine.ckpt_every=2",
    "engine.progress=false",
    "engine.tensorboard=false",
]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    return str(save_release(foundry3d.create_model("test"), tmp_path_factory.mktemp("t") / "teacher"))


def _user_folder(path):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("my: project\n")
    (path / "notes.txt").write_text("precious")
    return path


def test_resume_never_deletes_a_users_folder(teacher, tmp_path):
    user = _user_folder(tmp_path / "project")
    with pytest.raises(RunDirError, match="holds no foundry3d run"):
        distill(teacher=teacher, supertokens=2, overrides=BASE, out=user, resume=True)
    assert (user / "notes.txt").read_text() == "precious" and (user / "config.yaml").exists()


def test_overwrite_never_deletes_a_users_folder_and_only_a_runs_own_files(teacher, tmp_path):
    user = _user_folder(tmp_path / "project")
    with pytest.raises(RunDirError, match="holds no foundry3d run"):
        distill(teacher=teacher, supertokens=2, overrides=BASE, out=user, overwrite=True)
    assert (user / "notes.txt").exists()
    run = tmp_path / "run"
    distill(teacher=teacher, supertokens=2, overrides=BASE, out=run)
    (run / "my_analysis.ipynb").write_text("{}")  # a user's file inside a run folder
    distill(teacher=teacher, supertokens=2, overrides=BASE, out=run, overwrite=True)
    assert (run / "my_analysis.ipynb").exists() and (run / "release" / "model.safetensors").exists()


def test_a_finished_run_without_checkpoints_keeps_its_release(teacher, tmp_path):
    run = tmp_path / "run"
    distill(teacher=teacher, supertokens=2, overrides=[*BASE, "engine.steps=6"], out=run)
    before = (run / "release" / "model.safetensors").read_bytes()
    for f in (run / "checkpoints").iterdir():
        f.unlink()
    with pytest.raises(RunDirError, match="release is kept"):
        distill(teacher=teacher, supertokens=2, overrides=BASE, out=run, resume=True)
    assert (run / "release" / "model.safetensors").read_bytes() == before


def test_a_failed_start_does_not_block_the_same_command(teacher, tmp_path, monkeypatch):
    from foundry3d.train import distill as dmod

    run = tmp_path / "run"
    real = dmod.DistillTask.batch
    monkeypatch.setattr(dmod.DistillTask, "batch", lambda *a, **k: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError):
        distill(teacher=teacher, supertokens=2, overrides=BASE, out=run)
    monkeypatch.setattr(dmod.DistillTask, "batch", real)
    distill(teacher=teacher, supertokens=2, overrides=BASE, out=run)  # no --overwrite needed
    assert (run / "release" / "model.safetensors").exists()


def test_convert_refuses_to_replace_a_release(tmp_path):
    from tests.models.official_layout import OfficialPointJEPA

    torch.save({"state_dict": OfficialPointJEPA().state_dict_official()}, tmp_path / "a.ckpt")
    convert(tmp_path / "a.ckpt", "point-jepa", tmp_path / "rel", heads=2)
    before = (tmp_path / "rel" / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="already exists"):
        convert(tmp_path / "a.ckpt", "point-jepa", tmp_path / "rel", heads=2)
    assert (tmp_path / "rel" / "model.safetensors").read_bytes() == before
    convert(tmp_path / "a.ckpt", "point-jepa", tmp_path / "rel", heads=2, overwrite=True)


def test_a_kill_during_the_release_write_leaves_no_half_release(tmp_path, monkeypatch):
    from foundry3d.models import checkpoint

    model = foundry3d.create_model("test")

    def dying(state, tmp, metadata=None):
        raise KeyboardInterrupt  # the write dies half-way

    monkeypatch.setattr(checkpoint, "save_file", dying)
    with pytest.raises(KeyboardInterrupt):
        save_release(model, tmp_path / "release")
    assert not (tmp_path / "release").exists()
    assert not list(tmp_path.glob(".release*"))  # no temporary debris either


def _data(points, labels, name="same"):
    return ArrayDataset(points.astype(np.float32), labels, name=name, split="test", classes=["a", "b"], version="v1")


def test_token_and_feature_caches_follow_the_content(tmp_path):
    rng = np.random.default_rng(0)
    model = foundry3d.create_model("test").eval()
    a = _data(rng.normal(size=(4, 256, 3)), np.array([0, 1, 0, 1]))
    b = _data(rng.normal(size=(4, 256, 3)), np.array([0, 1, 0, 1]))  # same name, split, size and version
    fa, fb = extract(model, a, num_points=256), extract(model, b, num_points=256)
    assert not np.allclose(fa["features"], fb["features"])


def test_results_are_recomputed_when_the_data_or_a_setting_changes(tmp_path, cache):
    from foundry3d.data import build

    ov = [
        "progress=false",
        "svm.grid=[0.1]",
        "svm.published=false",
        "svm.num_points=256",
        "fewshot.folds=2",
        "fewshot.query=5",
        "fewshot.shot=2",
        "fewshot.way=2",
    ]
    first = evaluate("random:test", ["svm:synthetic@6", "fewshot:synthetic@6"], overrides=ov, out=tmp_path, name="m")
    again = evaluate("random:test", ["svm:synthetic@6", "fewshot:synthetic@6"], overrides=ov, out=tmp_path, name="m")
    assert again["tasks"]["svm:synthetic@6"]["seconds"] == first["tasks"]["svm:synthetic@6"]["seconds"]  # reused
    # a setting only the SVM section holds but few-shot reads (its features) recomputes few-shot too
    changed = evaluate(
        "random:test", ["fewshot:synthetic@6"], overrides=[*ov, "svm.sampling=random"], out=tmp_path, name="m"
    )
    assert changed["tasks"]["fewshot:synthetic@6"]["settings"]["svm"]["sampling"] == "random"
    # other data with the same name: recomputed (the content fingerprint differs)
    res = json.loads((tmp_path / "m" / "results.json").read_text())
    res["tasks"]["svm:synthetic@6"]["dataset_fingerprint"] = "from-another-dataset"
    (tmp_path / "m" / "results.json").write_text(json.dumps(res))
    redo = evaluate("random:test", ["svm:synthetic@6"], overrides=ov, out=tmp_path, name="m")
    assert redo["tasks"]["svm:synthetic@6"]["dataset_fingerprint"] != "from-another-dataset"
    assert build  # the builder module imports (kept for the name used in messages)


def test_corrupt_results_and_feature_files_are_recomputed(tmp_path):
    ov = ["progress=false", "svm.grid=[0.1]", "svm.published=false", "svm.num_points=256"]
    evaluate("random:test", ["svm:synthetic@6"], overrides=ov, out=tmp_path, name="m")
    (tmp_path / "m" / "results.json").write_text("{ not json")
    for f in (tmp_path / "m" / "features").glob("*.npz"):
        f.write_bytes(b"garbage")
    res = evaluate("random:test", ["svm:synthetic@6"], overrides=ov, out=tmp_path, name="m")
    assert 0 <= res["tasks"]["svm:synthetic@6"]["acc"] <= 1


def test_bad_inputs_are_refused_where_they_enter():
    m = foundry3d.create_model("test")
    with pytest.raises(ValueError, match="empty batch"):
        m.forward_features(torch.zeros(0, 256, 3))
    with pytest.raises(ValueError, match="beyond 1e15"):
        m.forward_features(torch.full((1, 256, 3), 1e30))
    with pytest.raises(ValueError, match="NaN"):
        m.forward_features(torch.full((1, 256, 3), float("nan")))
