import inspect
import subprocess
import sys

import pytest
import tyro

from foundry3d.cli import VERB_TABLE, _summary, _verbs, cli_view

VERBS = [
    "quickstart",
    "pretrain",
    "distill",
    "expert",
    "eval",
    "study",
    "bench",
    "export",
    "embed",
    "search",
    "merge",
    "convert",
    "models",
    "data build",
    "data list",
    "data info",
    "data render",
]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "foundry3d.cli", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def test_help_lists_every_verb_with_a_description():
    out = run("--help").stdout
    for verb in VERBS:
        assert f"  {verb} " in out
    assert "Point-JEPA self-supervised pretraining" in out and "SuperToken student" in out


def test_help_summaries_are_the_functions_docstrings_and_start_fast():
    """`foundry3d --help` prints summaries kept beside the verb table (so it imports no verb); each must be
    its function's docstring, and the help must not pull in torch."""
    assert list(VERB_TABLE) == VERBS
    for verb, (_, _, summary) in VERB_TABLE.items():
        assert summary == _summary(_verbs().get(verb)), verb
    code = "import sys\nfrom foundry3d.cli import main\nmain(['--help'])\nprint('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip().endswith("False"), res.stdout[-300:]


@pytest.mark.parametrize("verb", VERBS)
def test_cli_options_are_the_functions_parameters(verb, capsys):
    """Every verb's command line is its function: the same parameter names, and with no option given
    the function receives exactly its own defaults."""
    fn = _verbs().get(verb)
    params = inspect.signature(fn).parameters
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty]
    args = []
    for n in required:
        positional = n in ("overrides", "files", "checkpoint", "name", "spec", "index", "queries", "indexes")
        value = "point-jepa" if n == "source" else "x"
        args += [value] if positional else [f"--{n.replace('_', '-')}", value]
    got = tyro.cli(cli_view(fn, verb, target=lambda **kw: kw), args=args)
    assert set(got) == set(params), f"{verb}: CLI {sorted(got)} vs function {sorted(params)}"
    for n, p in params.items():
        if n not in required:
            assert got[n] == p.default or (not got[n] and not p.default), f"{verb} {n}: {got[n]!r} vs {p.default!r}"
    with pytest.raises(SystemExit):
        tyro.cli(cli_view(fn, verb), args=["--help"], prog=f"foundry3d {verb}")
    help_text = capsys.readouterr().out
    for n in params:
        if n not in ("overrides", "files", "checkpoint", "name", "spec", "index", "queries", "indexes"):
            assert f"--{n.replace('_', '-')}" in help_text or f"--{n}" in help_text, f"{verb}: --{n} not in --help"


def test_models_and_data_list(cache):
    assert "vit_s" in run("models").stdout and "kmeans" in run("models", "--kind", "student").stdout
    table = run("data", "list", "--root", str(cache)).stdout.splitlines()
    assert table[0].split()[:3] == ["name", "kind", "built"]
    sh3d = next(line for line in table if line.startswith("sh3d16 "))
    assert "False" in sh3d and "foundry3d data build sh3d16" in sh3d
    assert any(line.startswith("modelnet40 ") for line in table) and any(line.startswith("oad ") for line in table)


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--model", "random:test", "--tasks", "nope:sh3d16"], "PROTOCOL:DATASET"),
        (["data", "info", "sh3d16", "--root", "/nonexistent-cache"], "foundry3d data build sh3d16"),
        (["pretrain", "engine.stepz=3"], "unknown config key engine.stepz"),
        (["distill", "--teacher", "/no/such/teacher"], "does not exist"),
        (["eval", "--model", "random:huge", "--tasks", "svm:synthetic@2"], "unknown model variant 'huge'; registered"),
        (["convert", "/no/such.ckpt", "--source", "point-jepa", "--out", "x", "--heads", "0"], "heads must be >= 1"),
        (["bench", "--models", "random:test", "--points", "-5"], "points"),
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
    common = ["--tasks", "svm:synthetic@6", "--out", str(tmp_path), "svm.grid=[0.1]", "progress=false"]
    run("eval", "--model", "random:test", "--name", "a", *common)
    run("eval", "--model", "floor:random:test", "--name", "f", *common)
    run("eval", "--model", "tome:random:test?r=4", "--name", "m", *common)
    out = run("eval", "--compare", str(tmp_path / "a"), str(tmp_path / "f"), str(tmp_path / "m")).stdout
    assert "floor (no block, untrained)" in out and "gain kept" in out
    assert out.count("floor (no block, untrained)") == 1  # one task, printed once
    assert "\n  m " in out  # a student is named by its results folder (--name), not a cut-off spec


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--model", "random:test", "--tasks", "svm:synthetic@-5"], "must be 1 to 100000"),
        (["eval", "--model", "random:test", "--tasks", "svm:synthetic@0"], "must be 1 to 100000"),
        (["pretrain", "model.variant=test", "model.options.nope=1"], "unknown backbone option(s) nope"),
        (["eval", "--model", "random:test", "--tasks", "svm:synthetic@4", "--out", "FILE"], "is an existing file"),
        (["distill", "--teacher", "embedded", "--out", "FILE"], "is an existing file"),
        (["data", "info", "sh3d16", "--root", "FILE"], "not built"),
    ],
)
def test_more_user_mistakes_are_one_line(args, message, tmp_path, monkeypatch, capsys):
    from foundry3d.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("mine")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and (tmp_path / "FILE").read_text() == "mine"


def test_a_dataset_cache_that_is_a_file_is_named(tmp_path, monkeypatch, capsys):
    from foundry3d.cli import main

    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("FOUNDRY3D_CACHE", str(tmp_path / "cache"))
    assert main(["data", "info", "sh3d16"]) == 2
    assert "is a file: expected a folder" in capsys.readouterr().err
