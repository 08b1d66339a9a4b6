"""Bring your own teacher: a module written here (not our architecture) is distilled through the adapter."""

import json

import pytest
import torch
from test_distill import BASE  # tests/train is a rootdir-inserted folder (no __init__)
from torch import nn

import foundry3d
from foundry3d.cli import main
from foundry3d.models.foreign import ForeignTeacher, ForeignTeacherError

FOREIGN = '''
import torch
from torch import nn


class PatchMLP(nn.Module):
    """Not a foundry3d model: 24 patch centres (every 10th point), max-pooled MLP of 12 neighbours, width 40."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.mlp = nn.Sequential(nn.Linear(3, 40), nn.GELU(), nn.Linear(40, 40))
        self.mix = nn.Linear(40, 40)

    def forward(self, points):
        centres = points[:, ::10][:, :24]
        idx = torch.cdist(centres, points).topk(12, largest=False).indices
        nb = torch.gather(points[:, None].expand(-1, 24, -1, -1), 2, idx[..., None].expand(-1, -1, -1, 3))
        tokens = self.mlp(nb - centres[:, :, None]).amax(2)
        return tokens + self.mix(tokens.mean(1, keepdim=True)), centres


def build():
    return PatchMLP()


def broken():
    return nn.Linear(3, 3)
'''


@pytest.fixture
def module_file(tmp_path):
    path = tmp_path / "my_teacher.py"
    path.write_text(FOREIGN)
    return path


def test_a_foreign_module_is_distilled_and_the_student_stands_alone(module_file, tmp_path):
    from foundry3d.models.foreign import load_foreign

    teacher = load_foreign(f"py:{module_file}:build")
    assert (teacher.dim, teacher.num_groups) == (40, 24)
    run = foundry3d.distill(
        teacher=teacher.module,
        supertokens=4,
        out=tmp_path / "run",
        overrides=[*BASE, "data.datasets=[synthetic:train@8]", "engine.steps=60"],
    )
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert rows[-1]["distill_loss"] < 0.8 * rows[0]["distill_loss"]
    student = foundry3d.load(run["release"])
    cloud = torch.randn(2, 256, 3)
    cloud = cloud / cloud.norm(dim=-1).amax(1)[:, None, None]
    out = student.forward_features(cloud)
    assert out["tokens"].shape == (2, 24, 40)  # the teacher's width and token count
    with torch.no_grad():  # the student's tokens, at the teacher's own centres, approach the teacher's
        target, centres = teacher(cloud)
        tok, cen, _ = student.tokenize(cloud, centres=centres)
        ours = student.forward_tokens(tok, cen)["tokens"]
    assert torch.nn.functional.smooth_l1_loss(ours, target) < rows[0]["distill_loss"]


def test_the_command_line_takes_a_factory_and_reports_a_broken_contract(module_file, tmp_path, capsys):
    rc = main(["distill", "--teacher", f"py:{module_file}:build", "--supertokens", "2", "--out", str(tmp_path / "r"),
               *BASE, "engine.steps=2"])  # fmt: skip
    assert rc == 0 and (tmp_path / "r" / "release" / "model.safetensors").is_file()
    rc = main(["distill", "--teacher", f"py:{module_file}:broken", "--out", str(tmp_path / "r2"), *BASE])
    err = capsys.readouterr().err
    assert rc == 2 and "returned Tensor; expected a pair (tokens (B, c, d), centres (B, c, 3))" in err
    assert not (tmp_path / "r2").exists()
    rc = main(["distill", "--teacher", f"py:{module_file}:missing", "--out", str(tmp_path / "r3"), *BASE])
    assert rc == 2 and "has no function 'missing'" in capsys.readouterr().err


def test_contract_checks():
    class WrongCentres(nn.Module):
        def forward(self, points):
            return points[:, :8, :].repeat(1, 1, 4), points[:, :7]

    with pytest.raises(ForeignTeacherError, match=r"centres \(2, 7, 3\), expected \(B=2, c=8, 3\)"):
        ForeignTeacher(WrongCentres(), "module:WrongCentres")
