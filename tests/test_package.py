"""The package as users get it: a built wheel in a clean virtual environment, run outside the checkout.

An editable install reads files straight from the source tree, so a file the wheel leaves out (the
report templates once) is found by every other test and missed by every user. Here the wheel is
built, installed with the ``onnx`` extra into a fresh venv (the same CPU torch as the test
environment), and the commands of a first session run from an empty folder; any traceback fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from foundry3d.cli import VERB_TABLE

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["FOUNDRY3D_CACHE"] = str(cwd / "cache")  # no dataset of the developer's cache
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0 and "Traceback" not in res.stderr, (
        f"{' '.join(cmd)} -> rc {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    )
    return res


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)], dist)
    return next(dist.glob("foundry3d-*.whl"))


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", str(where / "env")], where)
    py = str(where / "env" / "bin" / "python")
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"  # the CPU build this machine carries
    _run([py, "-m", "pip", "install", "-q", torch_pin], where)
    _run([py, "-m", "pip", "install", "-q", f"{wheel}[onnx]"], where)
    return where / "env" / "bin"


def test_the_wheel_carries_every_file_the_package_reads(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "src"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:  # not a git checkout (an unpacked sdist): every file under src
        tracked = [str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*") if p.is_file()]
    data = [f for f in tracked if not f.endswith(".py") and "__pycache__" not in f]
    missing = [f for f in data if f.split("/", 1)[1] not in names]
    assert data and not missing, f"files under src/ the wheel leaves out: {missing}"
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_a_first_session_from_the_installed_wheel(venv, tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    fd3 = str(venv / "foundry3d")
    assert "verbs:" in _run([fd3, "--help"], user).stdout
    for verb in VERB_TABLE:
        _run([fd3, *verb.split(), "--help"], user)
    assert "* tiny3" in _run([fd3, "models"], user).stdout  # the default teacher, marked
    py = str(venv / "python")
    _run([py, "-c", "import numpy as np; np.save('scan.npy', np.random.default_rng(0).normal(size=(2000, 3)))"], user)
    _run([fd3, "embed", "scan.npy", "--out", "emb", "--no-progress"], user)
    assert (user / "emb" / "scan.npz").exists()
    _run(
        [
            fd3, "distill", "--teacher", "embedded", "--supertokens", "4", "--out", "run",
            "data.datasets=[synthetic:train@8]", "data.num_points=512", "probe.enabled=false",
            "engine.steps=3", "engine.batch_size=4", "engine.warmup_steps=1", "engine.progress=false",
            "engine.tensorboard=false",
        ],
        user,
    )  # fmt: skip
    assert (user / "run" / "release" / "model.safetensors").exists()
    _run([fd3, "export", "--model", "run/release", "--out", "student.onnx", "--num-points", "512"], user)
    assert (user / "student.onnx").stat().st_size > 0
    _run([py, "-c", "import foundry3d; m = foundry3d.load('run/release'); print(m.kind)"], user)


def test_the_four_commands_of_your_data_from_the_installed_wheel(venv, tmp_path):
    """distill on a folder, eval on it, embed it, search it: as a user runs them, from the wheel."""
    user = tmp_path / "user"
    user.mkdir()
    fd3, py = str(venv / "foundry3d"), str(venv / "python")
    make = (
        "import numpy as np, trimesh, os\n"
        "rng = np.random.default_rng(0)\n"
        "for cls in ('box', 'can', 'blob'):\n"
        "    os.makedirs(f'scans/{cls}', exist_ok=True)\n"
        "    for i in range(8):\n"
        "        if cls == 'box': trimesh.creation.box(extents=rng.uniform(0.5, 2, 3)).export(f'scans/box/b{i}.stl')\n"
        "        elif cls == 'can': trimesh.creation.cylinder(radius=rng.uniform(.2, 1), height=2).export("
        "f'scans/can/c{i}.obj')\n"
        "        else: np.save(f'scans/blob/p{i}.npy', rng.normal(size=(900, 3)) * rng.uniform(0.5, 2, 3))\n"
    )
    _run([py, "-c", make], user)
    _run(
        [
            fd3, "distill", "--data", "folder:scans", "--supertokens", "4", "--out", "run",
            "data.num_points=512", "engine.steps=3", "engine.batch_size=4", "engine.warmup_steps=1",
            "engine.eval_every=3", "engine.progress=false", "engine.tensorboard=false",
        ],
        user,
    )  # fmt: skip
    out = _run([fd3, "eval", "--model", "run/release", "--tasks", "svm:folder:scans", "--out", "ev",
                "svm.num_points=512", "progress=false"], user).stdout  # fmt: skip
    assert "svm:folder:scans" in out
    _run([fd3, "embed", "scans", "--model", "run/release", "--out", "idx", "--no-progress"], user)
    assert len((user / "idx" / "index.csv").read_text().splitlines()) == 25
    res = _run([fd3, "search", "idx", "scans/box/b3.stl", "--top-k", "3", "--out", "found"], user).stdout
    assert "scans/box/b3.stl" in res and (user / "found" / "results.csv").is_file()
