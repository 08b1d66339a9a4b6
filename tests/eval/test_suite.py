import json

import numpy as np
import pytest
import torch

import foundry3d
from foundry3d.data.base import DatasetError
from foundry3d.errors import ConfigError
from foundry3d.eval.results import compare
from foundry3d.eval.suite import EvalError, evaluate, parse_task
from foundry3d.eval.tasks.fewshot import FewShotConfig, fewshot_from_features
from foundry3d.models.checkpoint import save_release
from foundry3d.models.foundry import FoundryStudent

FAST = [
    "progress=false",
    "svm.grid=[0.1, 1.0]",
    "fewshot.folds=3",
    "fewshot.query=5",
    "partseg.seeds=[0]",
    "partseg.engine.steps=30",
    "partseg.num_points=256",
    "partseg.max_train_shapes=24",
    "partseg.engine.batch_size=8",
    "partseg.points_per_step=64",
    "svm.num_points=256",
]
TASKS = ["svm:synthetic@8", "fewshot:synthetic@12", "partseg:synthetic@4"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    teacher = foundry3d.create_model("test").eval()
    save_release(teacher, d / "teacher")
    save_release(FoundryStudent.from_teacher(teacher, supertokens=4), d / "student")
    return d


def test_suite_runs_on_teacher_and_student_and_compares(models, tmp_path):
    a = evaluate(str(models / "teacher"), TASKS, overrides=FAST, out=tmp_path, name="t")
    f = evaluate("floor:" + str(models / "teacher"), TASKS, overrides=FAST, out=tmp_path, name="f")
    b = evaluate(str(models / "student"), TASKS, overrides=FAST, out=tmp_path, name="s")
    for r in (a, f, b):
        assert set(r["tasks"]) == set(TASKS)
        svm = r["tasks"]["svm:synthetic@8"]
        assert svm["acc"] == pytest.approx(np.mean(svm["per_item"]["score"]))  # headline = its per-item mean
        lo, hi = svm["ci95"]
        assert lo <= svm["acc"] <= hi
        ps = r["tasks"]["partseg:synthetic@4"]
        assert len(ps["per_item"]["iou"]) == ps["test_shapes"]
    assert f["model"]["kind"] == "floor" and b["model"]["kind"] == "student:foundry"
    table = compare([tmp_path / "t", tmp_path / "f", tmp_path / "s"])
    assert "svm:synthetic@8" in table and "floor (no block, untrained)" in table and "gain kept" in table
    saved = json.loads((tmp_path / "t" / "results.json").read_text())
    assert saved["settings"]["svm"]["grid"] == [0.1, 1.0] and saved["model"]["kind"] == "backbone"
    # a second run reuses finished tasks; another model in the same folder is refused
    assert evaluate(str(models / "teacher"), TASKS[:1], overrides=FAST, out=tmp_path, name="t")["tasks"]
    with pytest.raises(EvalError, match="another model"):
        evaluate(str(models / "student"), TASKS[:1], overrides=FAST, out=tmp_path, name="t")


def test_partseg_on_output_tokens_and_changed_settings_are_remeasured(models, tmp_path, monkeypatch):
    task = ["partseg:synthetic@4"]
    first = evaluate(str(models / "student"), task, overrides=FAST, out=tmp_path, name="s")["tasks"][task[0]]
    calls = []
    from foundry3d.eval.tasks import partseg

    real = partseg.partseg_protocol
    monkeypatch.setattr(partseg, "partseg_protocol", lambda *a, **k: calls.append(1) or real(*a, **k))
    same = evaluate(str(models / "student"), task, overrides=FAST, out=tmp_path, name="s")["tasks"][task[0]]
    assert not calls and same == first  # same settings: reused
    out = evaluate(str(models / "student"), task, overrides=[*FAST, "partseg.features=output"], out=tmp_path, name="s")
    res = out["tasks"][task[0]]
    assert calls and res["features"] == "output" and res["blocks"] is None and 0 <= res["class_miou"] <= 1
    assert res["settings"]["partseg"]["features"] == "output" and first["settings"]["partseg"]["features"] == "blocks"


def test_bad_inputs(models, tmp_path, cache):
    with pytest.raises(EvalError, match="PROTOCOL:DATASET"):
        parse_task("segment:sh3d16")
    with pytest.raises(EvalError, match=r"PROTOCOL in fewshot, fidelity, finetune, .*svm"):  # the registered tasks
        evaluate(str(models / "teacher"), ["detect:sh3d16"], out=tmp_path)
    with pytest.raises(DatasetError, match="foundry3d data build"):
        evaluate(str(models / "teacher"), ["svm:sh3d16"], overrides=FAST, out=tmp_path)
    with pytest.raises(DatasetError, match="cannot sample"):
        fewshot_from_features(
            np.zeros((6, 2)), np.arange(6) % 3, np.zeros((6, 2)), np.arange(6) % 3, FewShotConfig(way=5, shot=2)
        )


def test_fewshot_folds_are_reproducible():
    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=(80, 4)), np.repeat(np.arange(8), 10)
    xq, yq = rng.normal(size=(160, 4)), np.repeat(np.arange(8), 20)
    xs[:, 0] += ys
    xq[:, 0] += yq
    a = fewshot_from_features(xs, ys, xq, yq, FewShotConfig(shot=5, folds=4))
    b = fewshot_from_features(xs, ys, xq, yq, FewShotConfig(shot=5, folds=4))
    assert a == b and a["acc"] > 0.4


def test_occupancy_matches_the_students_own_assignments(models):
    from foundry3d.data.registry import load_dataset
    from foundry3d.data.transforms import collate
    from foundry3d.models.occupancy import occupancy

    student = foundry3d.load(models / "student")
    ds = load_dataset("synthetic:test@8")
    occ = occupancy(student, ds, num_points=256, batch_size=5)
    with torch.no_grad():
        out = student.forward_features(collate([ds[i] for i in range(len(ds))], 256, "first")["points"])
    assert occ["mean_per_cloud"] == pytest.approx(out["occupancy"].float().mean().item())
    assert occ["never_used"] == int((out["counts"].sum(0) == 0).sum())
    assert sum(occ["usage_share"]) == pytest.approx(1.0, abs=1e-3)


def test_knn_retrieval_is_a_registered_task_with_its_label_and_cis(models, tmp_path):
    from foundry3d.eval.tasks.knn import retrieve
    from foundry3d.report.tables import task_label

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    y_tr, y_te = np.repeat(np.arange(3), 10), np.repeat(np.arange(3), 4)
    x_tr, x_te = centres[y_tr] + rng.normal(size=(30, 16)), centres[y_te] + rng.normal(size=(12, 16))
    assert retrieve(x_tr, y_tr, x_te, y_te, k=5)["score"].mean() == 1.0  # separable: every neighbour agrees
    shuffled = retrieve(x_tr, rng.permutation(y_tr), x_te, y_te, k=5)
    assert shuffled["score"].mean() < 0.75 and 0 <= shuffled["precision"].min() <= shuffled["precision"].max() <= 1
    res = evaluate(str(models / "teacher"), ["knn:synthetic@8"], overrides=[*FAST, "knn.num_points=256"], out=tmp_path)
    knn = res["tasks"]["knn:synthetic@8"]
    assert (
        0 <= knn["ci95"][0] <= knn["acc"] <= knn["ci95"][1] <= 1 and len(knn["per_item"]["score"]) == knn["test_shapes"]
    )
    assert task_label("knn:sh3d16") == "SH3D-16 k-NN (top-1)"
    with pytest.raises(EvalError, match=r"lower knn\.k"):
        evaluate(str(models / "teacher"), ["knn:synthetic@1"], overrides=[*FAST, "knn.k=500"], out=tmp_path, name="k")


def test_a_cache_folder_shares_the_tokenizer_across_models_and_changes_no_score(models, tmp_path, monkeypatch):
    """eval's cache_dir: a student scored after its teacher reads the teacher's tokenizer output (the student
    copied that tokenizer) and fidelity's teacher tokens from disk; every per-item outcome is the one computed
    without the cache."""
    from foundry3d.models import features

    tasks = [*TASKS, "fidelity:synthetic@4"]
    fast = [*FAST, "fidelity.num_points=256", f"fidelity.teacher={models / 'teacher'}"]
    plain = {
        m: evaluate(str(models / m), tasks, overrides=fast, out=tmp_path / "plain", name=m)
        for m in ("teacher", "student")
    }
    cached = {}
    for m in ("teacher", "student"):
        features._TOKENS.clear()  # as in a new process: nothing shared in memory
        ov = [*fast, f"cache_dir={tmp_path / 'cache'}"]
        cached[m] = evaluate(str(models / m), tasks, overrides=ov, out=tmp_path / "cached", name=m)
        if m == "teacher":  # the student must not tokenize again: every cloud set is on disk now
            monkeypatch.setattr(features, "_tokenize_all", lambda *a, **k: pytest.fail("tokenized again"))
    for m in ("teacher", "student"):
        for t in tasks:
            assert cached[m]["tasks"][t]["per_item"] == plain[m]["tasks"][t]["per_item"], (m, t)
    files = {p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()}
    assert files == {"tokens", "fidelity"}
    monkeypatch.undo()
    for f in (tmp_path / "cache").glob("tokens-*"):
        f.write_bytes(f.read_bytes()[:64])  # truncated (a full disk, a kill): recomputed, never trusted
    features._TOKENS.clear()
    again = evaluate(str(models / "student"), tasks, overrides=ov, out=tmp_path / "again", name="student")
    assert again["tasks"]["svm:synthetic@8"]["per_item"] == plain["student"]["tasks"]["svm:synthetic@8"]["per_item"]
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    with pytest.raises(ConfigError, match="cache_dir must be a folder"):  # refused before any work, file untouched
        evaluate(str(models / "student"), tasks, overrides=[*fast, f"cache_dir={a_file}"], out=tmp_path / "x")
    assert a_file.read_text() == "mine"
