"""Every user mistake is one line (exit 2) naming the input and what was expected.

Three guarantees, each a test that fails when someone breaks it:
* every ``raise`` inside a config's ``validate()`` (and the data check it calls) is reached from the command
  line by a case below and prints one line: adding a branch without a case fails the coverage test;
* the re-audit's list of inputs that once ended in a traceback stays one line each;
* a read-only output folder (four verbs) and a full disk (three verbs) are one line too, and a full disk
  replaces no complete file.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import foundry3d
import foundry3d.files as files_mod
from foundry3d.cli import main
from foundry3d.errors import Foundry3DError

from ..models.official_layout import OfficialPointMAE, randomise
from .tiny import TINY_DISTILL

SRC = Path(foundry3d.__file__).parent
TINY_PRETRAIN = ["model.variant=test", *TINY_DISTILL]  # the pretrain verb reads the same sections


def _validate_raises() -> set[tuple[str, int]]:
    """(file, line) of every ``raise`` inside a ``validate`` method or ``check_training_data``."""
    found = set()
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef) and fn.name in ("validate", "check_training_data"):
                found |= {(str(path), r.lineno) for r in ast.walk(fn) if isinstance(r, ast.Raise)}
    return found


def _raise_sites(exc: BaseException) -> set[tuple[str, int]]:
    """Every (file, line) on the tracebacks of ``exc`` and the exceptions it was raised from."""
    sites, seen = set(), set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            sites.add((tb.tb_frame.f_code.co_filename, tb.tb_lineno))
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return sites


def _student_without_teacher_config(student: str, out: Path) -> str:
    """The student release with an empty teacher config in its header (the weights, and their hash, unchanged)."""
    with safe_open(str(Path(student) / "model.safetensors"), "pt") as f:
        header = json.loads(f.metadata()["foundry3d"])
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iteration
    header["config"]["teacher"] = {}
    save_file(state, str(out), metadata={"foundry3d": json.dumps(header)})
    return str(out)


# (verb and arguments with {t} teacher, {s} student, {o} output, words the one line must hold)
VALIDATE_CASES = [
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "engine.steps=0"], "steps and batch_size"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "engine.batch_size=-1"], "steps and batch_size"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "engine.workers=-1"], "workers"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "engine.accumulate=3"], "accumulate=3"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "engine.warmup_steps=-1"], "warmup_steps"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "engine.log_every=0"], "log_every"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "engine.lr=-1"], "lr must be > 0"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "engine.device=gpu"], "device must be"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "data.datasets=[sh3d16:test]"], "test split"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "data.num_points=10"], "data.num_points"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "data.cache_views=-1"], "cache_views"),
    (["distill", "--teacher", "{t}", "--supertokens", "0", *TINY_DISTILL], "supertokens must be >= 1"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "student.kind=dso2"], "student kind 'dso2' is not one of"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "student.gate_threshold=2"], "gate threshold"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "student.kind=kmeans", "student.gate=true"], "the gate belongs"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "student.kmeans_iters=0"], "kmeans_iters"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "student.tome_r=-1"], "tome_r"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "student.tokenizer_widths=[8,8,8]"], "tokenizer=narrow"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "student.kind=fps", "student.count_grad=true"], "count_grad"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "student.kind=mlp", "student.empty_bins=mask"], "empty_bins"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "loss.tau_end=0"], "tau_end must be > 0"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "student.kind=kmeans", "loss.tau_end=0.1"], "kind=kmeans"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "loss.gumbel_noise=false", "loss.tau_end=0.1"], "gumbel_noise"),
    (["pretrain", *TINY_PRETRAIN, "snapshot_every=-1"], "snapshot_every"),
    (["pretrain", *TINY_PRETRAIN, "model.options.num_heads=0"], "num_heads must be >= 1"),
    (["pretrain", *TINY_PRETRAIN, "model.options.num_heads=5"], "divisible by num_heads"),
    (["pretrain", *TINY_PRETRAIN, "model.options.depth=-1"], "depth must be >= 0"),
    (["pretrain", *TINY_PRETRAIN, "model.options.tokenizer_channels=0"], "tokenizer_channels"),
    (["pretrain", *TINY_PRETRAIN, "model.options.group_size=100000"], "exceeds num_points"),
    (["pretrain", *TINY_PRETRAIN, "jepa.target_ratio=[0.5,0.1]"], "target_ratio"),
    (["pretrain", *TINY_PRETRAIN, "jepa.ema_start=2"], "ema_start"),
    (["pretrain", *TINY_PRETRAIN, "jepa.num_targets=0"], "num_targets"),
    (["expert", "--task", "cls", "--teacher", "{t}"], "cls:DATASET"),
    (["expert", "--task", "cls:sh3d16", "--teacher", "{t}", "kd.alpha=2"], "kd.alpha"),
    (["eval", "batch_size=0", "--model", "{t}", "--tasks", "svm:synthetic@4"], "batch_size must be >= 1"),
    (["eval", "threads=0", "--model", "{t}", "--tasks", "svm:synthetic@4"], "threads must be >= 1"),
    (["eval", "cache_dir={t}/config.json", "--model", "{t}", "--tasks", "svm:synthetic@4"], "must be a folder"),
    (["eval", "svm.num_points=5", "--model", "{t}", "--tasks", "svm:synthetic@4"], "svm.num_points"),
    (["eval", "svm.grid=[.nan]", "--model", "{t}", "--tasks", "svm:synthetic@4"], "finite C values"),
    (["eval", "svm.cv_max_samples=0", "--model", "{t}", "--tasks", "svm:synthetic@4"], "cv_max_samples"),
    (["eval", "knn.num_points=5", "--model", "{t}", "--tasks", "knn:synthetic@4"], "knn.num_points"),
    (["eval", "knn.k=0", "--model", "{t}", "--tasks", "knn:synthetic@4"], "knn.k must be >= 1"),
    (["eval", "fewshot.shot=0", "--model", "{t}", "--tasks", "fewshot:synthetic@4"], "shot >= 1"),
    (["eval", "fewshot.C=-1", "--model", "{t}", "--tasks", "fewshot:synthetic@4"], "fewshot.C"),
    (["eval", "--model", "{bad_student}", "--tasks", "svm:synthetic@4"], "teacher's backbone config"),
    (["study", "paper", "token_sweep.sizes=[100]"], "token_sweep.sizes"),
    (["study", "paper", "token_sweep.seeds=[1,1]"], "distinct seeds"),
    (["study", "paper", "token_sweep.kinds=[mlp]"], "must hold foundry"),
    (["study", "paper", "token_sweep.steps=0"], "token_sweep.steps"),
    (["study", "paper", "token_sweep.large_tasks=[svm]"], "large_tasks: unknown task 'svm'"),
    (["study", "paper", "token_sweep.large_from=0"], "large_from"),
    (["study", "paper", "token_sweep.roots={{512: /data}}"], "token_sweep.roots maps a sweep size"),
    (["study", "paper", "token_sweep.threads=0"], "token_sweep.threads must be >= 1"),
    (["study", "paper", "token_sweep.ledger=/proc/version"], "token_sweep.ledger /proc/version is an existing file"),
    (["study", "paper", "ledger=/proc/version"], "ledger /proc/version is an existing file"),
    (["study", "paper", "threads=0"], "threads must be >= 1 or null"),
    (["study", "paper", "tasks=[svm]"], "tasks: unknown task 'svm'"),
    (["study", "paper", "kinds=[dso2]"], "kinds must be student kinds"),
    (["study", "paper", "seeds=[]"], "seeds must be one or more distinct seeds"),
    (["study", "paper", "sweep=[0]"], "SuperToken counts >= 1"),
    (["study", "paper", "gate_r=[2]"], "gate_r must be thresholds in [0, 1]"),
    (["study", "paper", "merging=[tome3]"], "merging must be among tome, pitome"),
    (["study", "paper", "experts=[cls]"], "experts must be cls:DATASET"),
    (["study", "paper", "flops_points=0"], "flops_points must be >= 32"),
]


def _id(case: tuple[list[str], str]) -> str:
    """The setting a case changes (its test id)."""
    return next((a for a in reversed(case[0]) if "=" in a or a.lstrip("-").isdigit()), case[0][-1])


def _run(argv: list[str], teacher: str, student: str, tmp_path: Path) -> list[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    bad = tmp_path / "bad_student.safetensors"
    if "{bad_student}" in argv and not bad.exists():
        _student_without_teacher_config(student, bad)
    args = [a.format(t=teacher, s=student, bad_student=bad) for a in argv]
    return [*args[:1], "--out", str(tmp_path / "out"), *args[1:]]


@pytest.mark.parametrize("argv, words", VALIDATE_CASES, ids=[_id(c) for c in VALIDATE_CASES])
def test_each_setting_out_of_range_is_one_line(argv, words, teacher, student, tmp_path, capsys):
    rc = main(_run(argv, teacher, student, tmp_path))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0], err


def test_every_validate_branch_is_reached_from_the_command_line(teacher, student, tmp_path, monkeypatch, capsys):
    """The cases above, run with FOUNDRY3D_DEBUG=1 so the error propagates: together their tracebacks pass
    through every ``raise`` of every ``validate()``. A new branch without a CLI case fails here."""
    monkeypatch.setenv("FOUNDRY3D_DEBUG", "1")
    reached: set[tuple[str, int]] = set()
    for i, (argv, _) in enumerate(VALIDATE_CASES):
        with pytest.raises(Foundry3DError) as info:
            main(_run(argv, teacher, student, tmp_path / str(i)))
        reached |= _raise_sites(info.value)
    capsys.readouterr()
    missing = sorted(_validate_raises() - reached)
    shown = [f"{Path(f).relative_to(SRC)}:{line}" for f, line in missing]
    assert not missing, f"validate() branches no CLI case reaches: {shown}"


def test_no_bare_value_or_runtime_error_is_raised_in_the_package():
    """User input errors derive from Foundry3DError (one line); a bare ValueError/RuntimeError would print a
    traceback. Internal invariants use assert or a project error too."""
    bare = [
        f"{p.relative_to(SRC)}:{n}"
        for p in SRC.rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"raise (ValueError|RuntimeError|TypeError)\(", line)
    ]
    assert not bare, bare


# The re-audit's inputs that once ended in a traceback (exit 1): now one line each.
AUDIT = [
    (["distill", "--teacher", "{t}", "--supertokens", "-1", *TINY_DISTILL], "supertokens"),
    (["distill", "--teacher", "{t}", "--supertokens", "100000", *TINY_DISTILL], "supertokens=100000"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "engine.steps=-5"], "steps"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "engine.batch_size=0"], "batch_size"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "data.num_points=0"], "num_points"),
    (["distill", "--teacher", "{t}", *TINY_DISTILL, "engine.ckpt_every=0"], "ckpt_every"),
    (["eval", "batch_size=-3", "--model", "{t}", "--tasks", "svm:synthetic@4"], "batch_size"),
    (["eval", "svm.grid=[1e400]", "--model", "{t}", "--tasks", "svm:synthetic@4"], "finite C values"),
    (["eval", "svm.num_points=0", "--model", "{t}", "--tasks", "svm:synthetic@4"], "svm.num_points"),
    (["eval", "fewshot.way=0", "--model", "{t}", "--tasks", "fewshot:synthetic@4"], "way >= 2"),
    (["eval", "--model", "{s}?r=2", "--tasks", "svm:synthetic@4"], "[0, 1]"),
    (["eval", "--model", "{t}", "--tasks", "svm:synthetic@-5"], "synthetic@-5"),
    (["eval", "--model", "{t}", "--tasks", "svm:synthetic@0"], "synthetic@0"),
    (["eval", "--model", "{t}", "--tasks", "svm:synthetic@1e14"], "synthetic@1e14"),
    (["pretrain", *TINY_PRETRAIN, "model.options.bogus=1"], "bogus"),
]


@pytest.mark.parametrize("argv, words", AUDIT, ids=[_id(c) for c in AUDIT])
def test_the_audits_tracebacks_are_one_line(argv, words, teacher, student, tmp_path, capsys):
    rc = main(_run(argv, teacher, student, tmp_path))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0], err


def _mae_with(tmp_path: Path, name: str, value) -> Path:
    sd = dict(randomise(OfficialPointMAE(), 0).state_dict())
    key = next(k for k in sd if k.endswith("first_conv.0.weight"))
    sd[key] = value(sd[key])
    torch.save({"base_model": sd}, tmp_path / f"{name}.pth")
    return tmp_path / f"{name}.pth"


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("text", lambda t: "hello", "expected a tensor"),
        ("sparse", lambda t: t.to_sparse(), "expected a dense tensor"),
        ("meta", lambda t: torch.empty(t.shape, device="meta"), "expected a dense tensor"),
        ("huge", lambda t: torch.zeros(1, 3, 1).expand(10**12, 3, 1), "does not back"),
    ],
)
def test_state_entries_that_are_not_plain_tensors_are_one_line(name, value, words, tmp_path, capsys):
    ckpt = _mae_with(tmp_path, name, value)
    rc = main(["convert", str(ckpt), "--source", "point-mae", "--heads", "2", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0] and "first_conv.0.weight" in err[0], err
    assert not (tmp_path / "r").exists()


def test_files_that_are_not_clouds_and_a_cache_that_is_a_file(student, tmp_path, monkeypatch, capsys):
    np.save(tmp_path / "text.npy", np.array(["a", "b", "c"]))
    rc = main(["embed", str(tmp_path / "text.npy"), "--model", student, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "text.npy" in err[0] and "real numbers" in err[0], err
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("FOUNDRY3D_CACHE", str(tmp_path / "afile"))
    rc = main(["data", "list"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "FOUNDRY3D_CACHE" in err[0] and "expected a folder" in err[0], err
    monkeypatch.delenv("FOUNDRY3D_CACHE")
    for verb in (["distill", *TINY_DISTILL], ["embed", str(tmp_path / "text.npy")]):
        rc = main([*verb[:1], "--out", str(tmp_path / "afile"), *verb[1:]])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "is an existing file" in err[0], err


def test_onnx_model_refuses_object_and_ragged_arrays():
    pytest.importorskip("onnxruntime")
    from foundry3d.edge.onnx_runtime import OnnxModelError, OnnxPointModel

    model = OnnxPointModel.__new__(OnnxPointModel)  # check() reads only the export's two sizes
    model.num_groups, model.group_size = 8, 8
    with pytest.raises(OnnxModelError, match="real numbers"):
        model.check(np.array([[[object(), 1, 2]] * 16], dtype=object))
    with pytest.raises(OnnxModelError, match="shape"):
        model.check([[[0.0, 0.0, 0.0]] * 16, [[0.0, 0.0]] * 3])


# Read-only folders and full disks, as the kernel reports them.

VERBS_WRITING = {
    "distill": ["distill", "--teacher", "{t}", *TINY_DISTILL],
    "pretrain": ["pretrain", *TINY_PRETRAIN],
    "eval": ["eval", "--model", "{t}", "--tasks", "svm:synthetic@4"],
    "embed": ["embed", "{cloud}", "--model", "{s}"],
}


def _verb(name: str, teacher: str, student: str, tmp_path: Path, out: Path) -> list[str]:
    np.save(tmp_path / "cloud.npy", np.random.default_rng(0).normal(size=(300, 3)))
    args = [a.format(t=teacher, s=student, cloud=tmp_path / "cloud.npy") for a in VERBS_WRITING[name]]
    return [args[0], "--out", str(out), *args[1:]]


@pytest.mark.parametrize("verb", list(VERBS_WRITING))
def test_a_read_only_output_folder_is_one_line(verb, teacher, student, tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_mkdir = os.mkdir

    def mkdir(path, *a, **k):  # what a read-only mount answers (chmod does not stop root, the kernel does)
        if Path(path).is_relative_to(locked):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(os, "mkdir", mkdir)
    rc = main(_verb(verb, teacher, student, tmp_path, locked / "run"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(locked / "run") in err[0] and "read-only" in err[0], err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("verb", ["distill", "eval", "embed"])
def test_a_full_disk_is_one_line_and_replaces_no_complete_file(verb, teacher, student, tmp_path, monkeypatch, capsys):
    """Every file a verb writes goes through a temporary name: pointed at /dev/full, each write gets the
    kernel's ENOSPC, as on a full disk, and the file system reports no free block."""
    real_temp, real_statvfs = files_mod.temp_path, os.statvfs
    out = tmp_path / "run"

    def temp_path(path, suffix=".tmp"):
        tmp = real_temp(path, suffix)
        tmp.unlink()
        tmp.symlink_to("/dev/full")  # unlinking the temporary later removes the link, never the device
        return tmp

    class NoFreeBlock:
        f_bfree, f_frsize = 0, 4096

    monkeypatch.setattr(files_mod, "temp_path", temp_path)
    monkeypatch.setattr(os, "statvfs", lambda p: NoFreeBlock() if Path(p).is_relative_to(out) else real_statvfs(p))
    rc = main(_verb(verb, teacher, student, tmp_path, out))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "the disk is full" in err[0] and str(out) in err[0], err
    assert Path("/dev/full").is_char_device()
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.stat().st_size > 0 and not p.name.startswith(".")]
    names = {p.name for p in leftovers}
    assert not names & {"last.pt", "model.safetensors", "results.json", "embeddings.npy"}, names
