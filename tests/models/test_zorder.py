"""The zorder kind (one file in models/students/): equal bins that are neighbours along the Z-order curve."""

import torch

from foundry3d.models.students.zorder import morton, zorder_assign


def test_bins_are_equal_runs_of_the_curve_and_the_kind_distils():
    torch.manual_seed(0)
    centres = torch.rand(3, 64, 3)
    index, kept = zorder_assign(torch.zeros(3, 64, 8), centres, 16, torch.ones(3, 64), 0)
    assert kept is None and all(torch.bincount(row, minlength=16).tolist() == [4] * 16 for row in index)
    code = morton(centres)
    for row, c in zip(index, code):  # a bin is a contiguous run: its codes lie between the previous and next bins'
        runs = [c[row == b] for b in range(16)]
        assert all(runs[b].max() < runs[b + 1].min() for b in range(15))
    # the curve is local: tokens sharing a bin sit closer together than random pairs
    same = torch.cdist(centres[0], centres[0])[index[0][:, None] == index[0][None, :]].mean()
    assert same < 0.6 * torch.cdist(centres[0], centres[0]).mean()
    # corner cells: the code interleaves x, y, z bits
    corners = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]])
    assert morton(corners, bits=1).tolist() == [[0, 1, 2, 4, 7]]


def test_distill_a_zorder_student(tmp_path):
    from foundry3d.train.distill import distill

    run = distill(
        teacher="random:test",
        overrides=[
            "student.kind=zorder",
            "student.supertokens=4",
            "data.datasets=[synthetic@2]",
            "data.num_points=256",
            "engine.steps=2",
            "engine.batch_size=4",
            "engine.warmup_steps=0",
            "engine.progress=false",
            "probe.enabled=false",
        ],
        out=tmp_path / "z",
    )
    assert (tmp_path / "z" / "release" / "model.safetensors").exists(), run
