import json
import subprocess
import sys

import pytest

VERBS = ["pretrain", "distill", "eval", "quickstart", "bench", "export", "data", "convert", "models"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "foundry3d.cli", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def test_help_lists_every_verb_with_a_description():
    out = run("--help").stdout
    for verb in VERBS:
        assert verb in out
    assert "Point-JEPA self-supervised pretraining" in out and "Foundry SuperToken student" in out


def test_models_and_data_list(cache):
    assert "vit_s" in run("models").stdout
    rows = json.loads(run("data", "list", "--json", "--root", str(cache)).stdout)
    names = {r["name"]: r for r in rows}
    assert names["sh3d16"]["built"] is False and "foundry3d data build sh3d16" in names["sh3d16"]["build"]
    assert "modelnet40" in names


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--model", "random:test", "--task", "nope:sh3d16"], "PROTOCOL:DATASET"),
        (["data", "info", "sh3d16", "--root", "/nonexistent-cache"], "foundry3d data build sh3d16"),
        (["pretrain", "engine.stepz=3"], "unknown config key engine.stepz"),
        (["distill", "--teacher", "/no/such/teacher"], "does not exist"),
        (["eval", "--model", "random:huge", "--task", "svm:synthetic@2"], "unknown model variant 'huge'; registered"),
    ],
)
def test_errors_are_one_clear_line(args, message, tmp_path):
    res = (
        run(*args, "--out", str(tmp_path / "o"), check=False)
        if args[0] in ("pretrain", "eval")
        else run(*args, check=False)
    )
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr


def test_eval_verb_writes_json_and_compares(tmp_path):
    common = ["--task", "svm:synthetic@6", "--out", str(tmp_path), "svm.grid=[0.1]", "progress=false"]
    run("eval", "--model", "random:test", "--name", "a", *common)
    run("eval", "--model", "floor:random:test", "--name", "f", *common)
    run("eval", "--model", "tome:random:test?r=4", "--name", "m", *common)
    out = run("eval", "--compare", str(tmp_path / "a"), str(tmp_path / "f"), str(tmp_path / "m")).stdout
    assert "floor (no block, untrained)" in out and "tome:random:test?r=4" in out and "gain kept" in out
