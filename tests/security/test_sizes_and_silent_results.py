"""Sizes taken from a file never drive an allocation, and a wrong result is never reported silently
(the second security audit: size bombs, NaN weights, nonsense settings, truncated caches).

The size bombs run in a child process under a 3 GB address-space limit: a reader that trusted the
file's sizes would die there with MemoryError instead of answering with one line.
"""

import json
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import laspy
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import foundry3d
from foundry3d.cli import main
from foundry3d.data.pointfile import PointFileError, PointFileWarning, read_points
from foundry3d.edge.embed import embed
from foundry3d.errors import Foundry3DError
from foundry3d.models.checkpoint import save_release
from foundry3d.models.convert import convert_point_mae
from foundry3d.train.distill import distill

from ..models.official_layout import OfficialPointMAE, randomise
from .tiny import TINY_DISTILL

LIMIT = 3 * 1024**3
BASE = TINY_DISTILL


def _bounded(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """``foundry3d ARGS`` in a child limited to 3 GB of address space and ``timeout`` seconds."""
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, {LIMIT}))\n"
        "from foundry3d.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)


def _one_line_error(res: subprocess.CompletedProcess, *words: str) -> None:
    assert res.returncode == 2, res.stderr[-3000:]
    line = res.stderr.strip().splitlines()[-1]
    assert "Traceback" not in res.stderr and all(w in line for w in words), res.stderr[-3000:]


def _mae_checkpoint(path: Path, edit=None) -> Path:
    sd = dict(randomise(OfficialPointMAE(), 0).state_dict())
    if edit:
        edit(sd)
    torch.save({"base_model": sd, "epoch": 1}, path)
    return path


# 9. sizes from a file


def test_a_stride_zero_tensor_claiming_gigabytes_is_refused_before_any_copy(tmp_path):
    def bomb(sd):
        key = next(k for k in sd if k.endswith("first_conv.0.weight"))
        sd[key] = torch.zeros(1, 3, 1).expand(400_000_000, 3, 1)  # 4e8 x 3 claimed, 12 bytes stored

    ckpt = _mae_checkpoint(tmp_path / "bomb.pth", bomb)
    assert ckpt.stat().st_size < 5_000_000
    res = _bounded("convert", str(ckpt), "--source", "point-mae", "--heads", "2", "--out", str(tmp_path / "r"))
    _one_line_error(res, "stride-0", "does not back")


def test_a_release_whose_config_declares_a_huge_model_is_refused_before_building_it(teacher, tmp_path):
    from safetensors import safe_open

    with safe_open(str(Path(teacher) / "model.safetensors"), "pt") as f:
        header = json.loads(f.metadata()["foundry3d"])
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iteration
    header["config"]["dim"] = 4_000_000
    bad = tmp_path / "huge.safetensors"
    save_file(state, str(bad), metadata={"foundry3d": json.dumps(header)})
    np.save(tmp_path / "c.npy", np.random.default_rng(0).normal(size=(300, 3)))
    res = _bounded("embed", str(tmp_path / "c.npy"), "--model", str(bad), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "weights do not fit the stored backbone config" in res.stderr
    assert "Traceback" not in res.stderr and "MemoryError" not in res.stderr


def _las(path: Path, n: int = 2048) -> bytearray:
    h = laspy.LasHeader(point_format=3, version="1.2")
    h.scales, h.offsets = [0.001] * 3, [0, 0, 0]
    las = laspy.LasData(h)
    las.x, las.y, las.z = np.random.default_rng(0).normal(size=(n, 3)).T
    las.write(str(path))
    return bytearray(path.read_bytes())


def test_las_headers_that_lie_about_sizes(tmp_path):
    raw = _las(tmp_path / "ok.las")
    lying = bytearray(raw)
    lying[107:111] = struct.pack("<I", 100_000_000)  # claims 1e8 points, holds 2,048
    (tmp_path / "claims.las").write_bytes(lying)
    vlrs = bytearray(raw[:400])
    vlrs[100:104] = struct.pack("<I", 4_000_000_000)  # 4e9 VLRs in 400 bytes
    (tmp_path / "vlrs.las").write_bytes(vlrs)
    with pytest.warns(PointFileWarning, match="declares 100000000 points but the file holds 2048"):
        assert read_points(tmp_path / "claims.las").shape == (2048, 3)
    with pytest.raises(PointFileError, match="4000000000 VLRs"):
        read_points(tmp_path / "vlrs.las")
    code = (
        "import resource, time\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, {LIMIT}))\n"
        "from foundry3d.data.pointfile import read_points\n"
        f"print(read_points({str(tmp_path / 'claims.las')!r}).shape)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "(2048, 3)" in res.stdout, res.stderr[-2000:]


def test_a_billion_laughs_yaml_is_refused_at_once(tmp_path):
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    text = "model:\n  variant: test\n  options:\n    extra:\n" + "".join(f"      {ln}\n" for ln in levels)
    (tmp_path / "laughs.yaml").write_text(text)
    assert len(text) < 2000
    res = _bounded("pretrain", "--config", str(tmp_path / "laughs.yaml"), "--out", str(tmp_path / "r"), timeout=60)
    _one_line_error(res, "aliases", "not accepted")


# 11. silent wrong results


def test_nan_weights_are_refused_by_convert_and_by_load(tmp_path, teacher):
    def poison(sd):
        key = next(k for k in sd if k.endswith("blocks.0.mlp.fc1.weight"))
        sd[key][0, 0] = float("nan")

    with pytest.raises(Foundry3DError, match="NaN or infinite"):
        convert_point_mae(str(_mae_checkpoint(tmp_path / "nan.pth", poison)), num_heads=2)
    net = foundry3d.load(teacher)
    with torch.no_grad():
        net.encoder.blocks[0].mlp.fc1.weight[0, 0] = float("nan")
    rel = save_release(net, tmp_path / "nan_release")
    with pytest.raises(Foundry3DError, match="hold NaN or infinite values"):
        foundry3d.load(str(rel))


@pytest.mark.parametrize(
    "spec, words",
    [
        ("tome:{t}?r=-1", "finite number >= 0"),
        ("tome:{t}?r=0.5", "whole number"),
        ("tome:{t}?r=1&r=2", "given twice"),
        ("floor:", "spec is empty"),
        ("", "spec is empty"),
    ],
)
def test_model_specs_that_meant_something_else_are_refused(spec, words, teacher, tmp_path, capsys):
    rc = main(["eval", "--model", spec.format(t=teacher), "--tasks", "svm:sh3d16", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "setting, words",
    [
        ("fewshot.folds=0", "folds >= 1"),
        ("fewshot.way=0", "way >= 2"),
        ("fewshot.C=-1", "fewshot.C"),
        ("svm.grid=[.nan]", "finite C values"),
        ("svm.grid=[1e400]", "finite C values"),
        ("svm.num_points=5", "svm.num_points"),
        ("batch_size=0", "batch_size"),
    ],
)
def test_eval_settings_that_would_store_nan_are_refused(setting, words, teacher, tmp_path, capsys):
    rc = main(["eval", "--model", teacher, "--tasks", "fewshot:kicad33", "--out", str(tmp_path), setting])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1


def test_training_never_reads_a_test_split_and_resume_keeps_its_teacher(teacher, tmp_path, capsys):
    rc = main(["distill", "--teacher", teacher, "--out", str(tmp_path / "a"), "data.datasets=[sh3d16:test]"])
    assert rc == 2 and "is a test split" in capsys.readouterr().err
    rc = main(["pretrain", "--out", str(tmp_path / "p"), "data.datasets=[synthetic:test*2]", "model.variant=test"])
    assert rc == 2 and "is a test split" in capsys.readouterr().err
    run = tmp_path / "run"
    distill(teacher=teacher, supertokens=2, overrides=[*BASE, "engine.ckpt_every=1"], out=run)
    torch.manual_seed(1)
    other = str(save_release(foundry3d.create_model("test"), tmp_path / "other"))
    more = [*BASE, "engine.steps=4", "engine.ckpt_every=1"]
    with pytest.raises(Foundry3DError, match="distilled from another teacher"):
        distill(teacher=other, supertokens=2, overrides=more, out=run, resume=True)


def test_complex_bool_and_text_arrays_are_not_coordinates(student, tmp_path):
    from foundry3d.edge.onnx_runtime import OnnxModelError, OnnxPointModel

    xyz = np.random.default_rng(0).normal(size=(400, 3))
    for name, arr in [("c.npy", xyz + 1j), ("b.npy", xyz > 0), ("s.npy", xyz.astype(str))]:
        np.save(tmp_path / name, arr)
        with pytest.raises(PointFileError, match="expected real numbers"):
            read_points(tmp_path / name)
    fake = OnnxPointModel.__new__(OnnxPointModel)
    fake.num_groups, fake.group_size = 4, 8
    for arr in (xyz[None] + 1j, xyz[None] > 0, xyz[None].astype(object)):
        with pytest.raises(OnnxModelError, match="real numbers"):
            fake.check(arr)


def test_a_pcd_shorter_than_its_header_warns(tmp_path):
    rows = "\n".join("0.1 0.2 0.3" for _ in range(5))
    head = "VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 9\nHEIGHT 1\nPOINTS 9\nDATA ascii\n"
    (tmp_path / "short.pcd").write_text(head + rows + "\n")
    with pytest.warns(PointFileWarning, match="declares 9 points, the file holds 5 rows"):
        assert read_points(tmp_path / "short.pcd").shape == (5, 3)


# also: truncated caches, tiny clouds


def test_truncated_feature_and_view_caches_are_recomputed(teacher, tmp_path, capsys):
    run = tmp_path / "run"
    ov = [*BASE, "data.cache_views=1", f"data.cache_dir={tmp_path / 'views'}"]
    distill(teacher=teacher, supertokens=2, overrides=ov, out=run)
    (cache,) = (tmp_path / "views").glob("teacher-views-*.pt")
    clouds = torch.load(cache, weights_only=True)["tokens"].shape[0]
    cache.write_bytes(cache.read_bytes()[:200])  # truncated
    distill(teacher=teacher, supertokens=2, overrides=ov, out=tmp_path / "run2")
    assert "recomputing" in capsys.readouterr().out
    assert torch.load(cache, weights_only=True)["tokens"].shape[0] == clouds


def test_clouds_of_a_few_dozen_points_embed(student, tmp_path):
    for n in (32, 40, 47):
        np.save(tmp_path / f"c{n}.npy", np.random.default_rng(n).normal(size=(n, 3)))
    files = [str(tmp_path / f"c{n}.npy") for n in (32, 40, 47)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a warning
        r = embed(files, model=student, out=str(tmp_path / "o"), point_features=True, progress=False)
    assert len(r["outputs"]) == 3 and not r["failed"]
