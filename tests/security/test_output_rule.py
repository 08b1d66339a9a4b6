"""The one output rule of every verb that writes (the data-loss cases of the second security audit).

Each test plants a user's files, runs the verb the way the audit did, and checks that nothing of the
user's is gone. Every folder removal goes through ``foundry3d.files._delete_tree`` and
``shutil.rmtree``; both are intercepted so that a removal outside the test's own folder fails the test
instead of reaching the machine.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import foundry3d
import foundry3d.files as files
from foundry3d.cli import main
from foundry3d.edge.embed import embed
from foundry3d.errors import Foundry3DError
from foundry3d.files import MARKER, OutputError, folder_lock, run_folder
from foundry3d.models.checkpoint import save_release
from foundry3d.quickstart import QUICKSTART_FILES
from foundry3d.study import study
from foundry3d.train.distill import distill

from .tiny import TINY_DISTILL

BASE = TINY_DISTILL


@pytest.fixture(autouse=True)
def removals_stay_inside(tmp_path, monkeypatch):
    """Any folder removal outside this test's tmp folder fails the test before it happens."""
    real_rmtree = shutil.rmtree
    inside = tmp_path.resolve()

    def guarded(path, *a, **k):
        p = Path(path).resolve()
        if p != inside and inside not in p.parents:
            raise AssertionError(f"a removal reached outside the test folder: {p}")
        return real_rmtree(path, *a, **k)

    monkeypatch.setattr(shutil, "rmtree", guarded)
    monkeypatch.setattr(files, "_delete_tree", guarded)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home folder with a user's files in it ($HOME points there for the test)."""
    h = tmp_path / "home" / "alice"
    h.mkdir(parents=True)
    (h / "thesis.tex").write_text("years of work")
    monkeypatch.setenv("HOME", str(h))
    return h


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "notes.txt").write_text("precious")
    (path / "features").mkdir(exist_ok=True)
    (path / "features" / "mine.csv").write_text("1,2,3")
    return path


def _intact(path: Path) -> bool:
    return (path / "notes.txt").read_text() == "precious" and (path / "features" / "mine.csv").exists()


def _cli(capsys, *args: str) -> tuple[int, str]:
    rc = main(list(args))
    return rc, capsys.readouterr().err.strip()


# 1. quickstart --overwrite


def test_quickstart_overwrite_refuses_a_users_folder_and_never_suggests_the_flag(tmp_path, capsys):
    user = _user_folder(tmp_path / "project")
    for extra in ([], ["--overwrite"]):
        rc, err = _cli(capsys, "quickstart", "--out", str(user), *extra)
        assert rc == 2 and "not written by foundry3d quickstart" in err and "--overwrite" not in err
        assert len(err.splitlines()) == 1
    assert _intact(user) and not (user / MARKER).exists()


@pytest.mark.parametrize("where", ["/", "~", "HOME"])
def test_quickstart_overwrite_refuses_root_and_home(where, home, capsys):
    out = str(home) if where == "HOME" else where
    rc, err = _cli(capsys, "quickstart", "--out", out, "--overwrite")
    assert rc == 2 and "root or a home folder" in err
    assert (home / "thesis.tex").read_text() == "years of work" and not (home / MARKER).exists()


def test_overwrite_of_a_marked_run_removes_only_what_the_verb_wrote(tmp_path):
    out = tmp_path / "qs"
    with run_folder(out, "quickstart", QUICKSTART_FILES) as folder:
        (folder / "stages").mkdir()
        (folder / "report.md").write_text("old")
    (out / "my_analysis.ipynb").write_text("{}")  # a user's file beside the run's
    with run_folder(out, "quickstart", QUICKSTART_FILES, overwrite=True):
        pass
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, files.LOCK, "my_analysis.ipynb"])


def test_a_run_folder_of_another_verb_is_not_taken(tmp_path):
    with run_folder(tmp_path / "x", "embed", ("embed.json",)):
        pass
    other = run_folder(tmp_path / "x", "quickstart", QUICKSTART_FILES, overwrite=True)
    with pytest.raises(OutputError, match="holds a foundry3d embed run, not quickstart"), other:
        pass


# 2. convert --overwrite


@pytest.mark.parametrize("target", ["user", "home", "file"])
def test_convert_overwrite_replaces_only_a_release(target, tmp_path, home, capsys):
    ckpt = tmp_path / "official.pth"
    ckpt.write_bytes(b"not even read")
    out = {"user": _user_folder(tmp_path / "mine"), "home": home, "file": tmp_path / "notes.txt"}[target]
    if target == "file":
        out.write_text("precious")
    rc, err = _cli(capsys, "convert", str(ckpt), "--source", "point-mae", "--out", str(out), "--overwrite")
    assert rc == 2 and len(err.splitlines()) == 1
    assert ("root or a home folder" in err) if target == "home" else ("refusing to replace it" in err)
    assert (home / "thesis.tex").exists()
    if target == "user":
        assert _intact(out)
    if target == "file":
        assert out.read_text() == "precious"


def test_save_release_overwrite_swaps_only_a_release_and_cleans_killed_writers_debris(teacher, tmp_path):
    net = foundry3d.load(teacher)
    rel = save_release(net, tmp_path / "rel")
    dead = 2**22 + 17  # above the default pid_max: no such process
    (tmp_path / f".rel.{dead}.partial").mkdir()
    (tmp_path / f".rel.old-{dead}").mkdir()
    (tmp_path / f".rel.{os.getpid()}.keep").mkdir()  # a live writer's (ours): kept
    save_release(net, rel, overwrite=True)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["rel", f".rel.{os.getpid()}.keep"]), left
    (rel / "notes.txt").write_text("mine")
    with pytest.raises(Foundry3DError, match="not a foundry3d release folder"):
        save_release(net, rel, overwrite=True)
    assert (rel / "notes.txt").exists()


# 3. study


def test_study_refuses_a_users_folder_even_with_a_study_config_in_it(tmp_path, capsys):
    user = _user_folder(tmp_path / "mine")
    (user / "study_config.json").write_text('{"teacher_hash": "x"}')
    for extra in ([], ["--overwrite"]):
        rc, err = _cli(capsys, "study", "paper", "--out", str(user), *extra)
        assert rc == 2 and "not written by foundry3d study" in err
    assert _intact(user) and (user / "study_config.json").exists()
    with pytest.raises(OutputError):
        study(out=user, overwrite=True)


# 4. a failed --resume never marks a user's folder


def test_failed_resume_leaves_no_marker_and_a_later_overwrite_is_refused(teacher, tmp_path):
    user = tmp_path / "project"
    (user / "checkpoints").mkdir(parents=True)
    (user / "config.yaml").write_text("my: project\n")
    torch.save({"epoch": 3, "weights": torch.zeros(2)}, user / "checkpoints" / "last.pt")  # the user's own
    before = (user / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(Foundry3DError):
        distill(teacher=teacher, supertokens=2, overrides=BASE, out=user, resume=True)
    assert not (user / MARKER).exists()
    with pytest.raises(Foundry3DError, match="holds no foundry3d run"):
        distill(teacher=teacher, supertokens=2, overrides=BASE, out=user, overwrite=True)
    assert (user / "config.yaml").read_text() == "my: project\n"
    assert (user / "checkpoints" / "last.pt").read_bytes() == before


# 5. embed into the input folder; an embedding read back as a cloud


def test_embed_never_overwrites_its_input_and_refuses_to_read_features_as_points(student, tmp_path, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    pts = np.random.default_rng(0).normal(size=(600, 3)).astype(np.float32)
    np.savez(scans / "scan.npz", points=pts)
    before = (scans / "scan.npz").read_bytes()
    rc, err = _cli(capsys, "embed", str(scans / "scan.npz"), "--model", student, "--out", str(scans))
    assert rc == 2 and "not written by foundry3d embed" in err
    assert (scans / "scan.npz").read_bytes() == before
    out = tmp_path / "emb"
    embed([str(scans / "scan.npz")], model=student, out=str(out), progress=False)
    rc, err = _cli(capsys, "embed", str(out / "scan.npz"), "--model", student, "--out", str(out))
    assert rc == 2 and "a foundry3d embedding" in err  # its features are never read as coordinates
    assert np.load(out / "scan.npz")["tokens"].ndim == 2


def test_out_with_a_tilde_means_the_home_folder(student, home, tmp_path):
    np.save(tmp_path / "c.npy", np.random.default_rng(0).normal(size=(500, 3)))
    embed([str(tmp_path / "c.npy")], model=student, out="~/emb", progress=False)
    assert (home / "emb" / "c.npz").exists() and not Path("~").exists()


# 6. export onto any file; eval --overwrite in any folder


def test_export_never_overwrites_a_file_it_did_not_write(student, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    rc, err = _cli(capsys, "export", "--model", student, "--out", str(notes))
    assert rc == 2 and "ending in .onnx" in err and notes.read_text() == "precious"
    other = tmp_path / "theirs.onnx"
    other.write_bytes(b"someone else's graph")
    rc, err = _cli(capsys, "export", "--model", student, "--out", str(other), "--overwrite")
    assert rc == 2 and "not an ONNX graph exported by foundry3d" in err
    assert other.read_bytes() == b"someone else's graph"
    ours = tmp_path / "s.onnx"
    assert _cli(capsys, "export", "--model", student, "--out", str(ours), "--num-points", "256")[0] == 0
    rc, err = _cli(capsys, "export", "--model", student, "--out", str(ours), "--num-points", "256")
    assert rc == 2 and "already exists" in err
    assert _cli(capsys, "export", "--model", student, "--out", str(ours), "--num-points", "256", "--overwrite")[0] == 0


def test_eval_overwrite_refuses_a_users_folder(student, tmp_path, capsys):
    user = _user_folder(tmp_path / "results" / "mine")
    rc, err = _cli(
        capsys, "eval", "--model", student, "--tasks", "svm:sh3d16", "--out", str(user.parent),
        "--name", "mine", "--overwrite",
    )  # fmt: skip
    assert rc == 2 and "not written by foundry3d eval" in err
    assert _intact(user)
    rc, err = _cli(capsys, "eval", "--model", student, "--out", str(tmp_path), "--name", "../x")
    assert rc == 2 and "plain folder name" in err


# 7. one process at a time per run folder


def test_a_second_process_cannot_write_into_a_locked_run_folder(teacher, tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom foundry3d.files import folder_lock\n"
         "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n", str(run)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=rf"another foundry3d process \(pid {holder.pid}\)"):
            distill(teacher=teacher, supertokens=2, overrides=BASE, out=run)
        assert not (run / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    distill(teacher=teacher, supertokens=2, overrides=BASE, out=run)  # a killed holder's lock is gone with it
    assert (run / "release" / "model.safetensors").exists()


def test_the_lock_is_reentrant_within_one_process(tmp_path):
    with folder_lock(tmp_path / "r"), folder_lock(tmp_path / "r"):
        pass
    with folder_lock(tmp_path / "r"):
        pass


# 8. export writes atomically and verifies before the file appears


def test_export_leaves_no_file_when_the_check_fails_or_the_write_dies(student, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    import foundry3d.edge.export as export

    rc, err = _cli(capsys, "export", "--model", student, "--out", str(tmp_path / "a.onnx"), "--atol", "nan")
    assert rc == 2 and "atol must be a finite number" in err

    def failing(*a, **k):
        raise export.ExportError("ONNX parity check failed at input (1, 256, 3)")

    monkeypatch.setattr(export, "verify_onnx", failing)
    rc, err = _cli(capsys, "export", "--model", student, "--out", str(tmp_path / "a.onnx"), "--num-points", "256")
    assert rc == 2 and "parity" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the graph nor a temporary is left
    monkeypatch.undo()

    real = torch.onnx.export

    def dies_mid_write(model, args, f, **k):
        real(model, args, f, **k)
        Path(f).write_bytes(Path(f).read_bytes()[:100])  # a truncated file, then the process "dies"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", dies_mid_write)
    with pytest.raises(OSError):
        export.export_onnx(student, tmp_path / "b.onnx", num_points=256)
    assert not (tmp_path / "b.onnx").exists() and not list(tmp_path.glob(".b.onnx.*"))


def test_atomic_write_keeps_the_old_file_on_a_failed_check_and_uses_the_umask(tmp_path):
    target = tmp_path / "r.json"
    files.write_text(target, "old")
    old_mask = os.umask(0o027)
    try:

        def bad(tmp):
            raise ValueError("not right")

        with pytest.raises(ValueError):
            files.atomic_write(target, lambda t: Path(t).write_text("new"), check=bad)
        assert target.read_text() == "old"
        files.write_text(target, json.dumps({"v": 1}))
        assert (target.stat().st_mode & 0o777) == 0o640
    finally:
        os.umask(old_mask)
    assert not list(tmp_path.glob(".r.json.*"))


def test_debris_of_dead_writers_is_removed_on_the_next_write(tmp_path):
    dead = 2**22 + 17
    (tmp_path / f".r.json.{dead}.x.tmp.json").write_text("half")
    files.write_text(tmp_path / "r.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


# 12. the frozen tokenizer stays frozen in online distillation


def test_online_distillation_never_moves_the_frozen_tokenizers_statistics(teacher, tmp_path):
    ov = [*BASE, "data.cache_views=0", "engine.steps=3"]
    distill(teacher=teacher, supertokens=2, overrides=ov, out=tmp_path / "run")
    t = foundry3d.load(teacher).state_dict()
    s = foundry3d.load(str(tmp_path / "run" / "release")).state_dict()
    stats = [k for k in t if k.startswith("tokenizer.") and "running_" in k]
    assert stats and all(torch.equal(s[k], t[k]) for k in stats)
