"""A tiny teacher and student release shared by the security tests (seconds to build)."""

import pytest
import torch

import foundry3d
from foundry3d.models.checkpoint import save_release
from foundry3d.models.hub import create_student


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    return str(save_release(foundry3d.create_model("test"), tmp_path_factory.mktemp("t") / "teacher"))


@pytest.fixture(scope="module")
def student(teacher, tmp_path_factory):
    torch.manual_seed(0)
    net = create_student(foundry3d.load(teacher), supertokens=4)
    return str(save_release(net, tmp_path_factory.mktemp("s") / "student"))
