"""Malicious files of every container kind never run code: a sentinel file is never created."""

import contextlib
import io
import os
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
import torch

import foundry3d
from foundry3d.data.base import DatasetError
from foundry3d.models.checkpoint import CheckpointError, load_train_state, save_release
from foundry3d.models.convert import convert
from tests.models.official_layout import OfficialPointJEPA


class Evil:
    """Unpickling this runs ``touch <sentinel>`` unless the unpickler refuses to call os.system."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.fixture
def sentinel(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a malicious file ran code"


def _official(evil):
    return {"state_dict": OfficialPointJEPA().state_dict_official(), "callbacks": evil, "hyper_parameters": [evil]}


def test_zip_checkpoint_for_convert(tmp_path, sentinel):
    torch.save(_official(Evil(sentinel)), tmp_path / "evil.ckpt")
    out = convert(tmp_path / "evil.ckpt", "point-jepa", tmp_path / "rel", heads=2)
    assert out["mapped"] > 0  # the weights still convert; the payload became an inert placeholder


@pytest.mark.parametrize("source", ["point-jepa", "point-mae"])
def test_legacy_non_zip_checkpoint_for_convert(tmp_path, sentinel, source):
    torch.save(_official(Evil(sentinel)), tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    with contextlib.suppress(CheckpointError):  # point-mae: not its layout; what matters is that nothing ran
        convert(tmp_path / "legacy.ckpt", source, tmp_path / "rel", heads=2)


def test_legacy_header_record_is_restricted_too(tmp_path, sentinel):
    # torch's legacy loader reads its first records with pickle_module.load: a payload there must not run
    (tmp_path / "header.ckpt").write_bytes(pickle.dumps(Evil(sentinel), protocol=2) + b"\x80\x02}q\x00.")
    with pytest.raises(CheckpointError):
        convert(tmp_path / "header.ckpt", "point-jepa", tmp_path / "rel", heads=2)


def test_torchscript_archive_is_refused_before_loading(tmp_path, sentinel, monkeypatch):
    class M(torch.nn.Module):
        def forward(self, x):
            return x + 1

    torch.jit.save(torch.jit.script(M()), str(tmp_path / "script.pt"))
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: sentinel.write_text("jit.load ran"))
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        convert(tmp_path / "script.pt", "point-jepa", tmp_path / "rel", heads=2)


def test_tar_checkpoint_is_refused(tmp_path, sentinel):
    payload = pickle.dumps(Evil(sentinel))
    with tarfile.open(tmp_path / "old.tar", "w") as t:
        info = tarfile.TarInfo("pickle")
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    with pytest.raises(CheckpointError, match="tar"):
        convert(tmp_path / "old.tar", "point-jepa", tmp_path / "rel", heads=2)


def test_training_state_for_resume(tmp_path, sentinel):
    torch.save({"format": "foundry3d-train-state", "step": 1, "task": Evil(sentinel)}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError):
        load_train_state(tmp_path / "last.pt")


def test_release_with_a_pickle_inside_is_not_a_release(tmp_path, sentinel):
    save_release(foundry3d.create_model("test"), tmp_path / "rel")
    torch.save({"x": Evil(sentinel)}, tmp_path / "rel" / "model.safetensors")  # a pickle posing as weights
    with pytest.raises(CheckpointError, match="safetensors"):
        foundry3d.load(tmp_path / "rel")


def test_benchmark_pickles(tmp_path, sentinel):
    from foundry3d.data.pickles import load_numpy_pickle

    with open(tmp_path / "evil.dat", "wb") as f:
        pickle.dump([np.zeros((2, 3)), Evil(sentinel)], f)
    with pytest.raises(DatasetError, match="holds objects other than numpy arrays"):
        load_numpy_pickle(tmp_path / "evil.dat")


def test_eval_feature_cache_with_a_pickled_object_is_recomputed(tmp_path, sentinel):
    from foundry3d.eval.suite import evaluate

    args = dict(overrides=["progress=false", "svm.grid=[0.1]", "svm.published=false", "svm.num_points=256"])
    evaluate("random:test", ["svm:synthetic@6"], out=tmp_path, name="m", **args)
    cache = next((tmp_path / "m" / "features").glob("*.npz"))
    np.savez(cache, features=np.array([Evil(sentinel)], dtype=object), labels=np.zeros(1))
    (tmp_path / "m" / "results.json").unlink()
    res = evaluate("random:test", ["svm:synthetic@6"], out=tmp_path, name="m", **args)
    assert 0 <= res["tasks"]["svm:synthetic@6"]["acc"] <= 1


def test_zip_with_evil_pickle_posing_as_benchmark_h5(tmp_path, sentinel):
    # h5 readers never unpickle; a zip named .h5 is just an unreadable file
    with zipfile.ZipFile(tmp_path / "ply_data_train0.h5", "w") as z:
        z.writestr("data.pkl", pickle.dumps(Evil(sentinel)))
    from foundry3d.data.benchmarks.modelnet import load_modelnet40

    with pytest.raises(DatasetError):
        load_modelnet40(tmp_path, "train")
