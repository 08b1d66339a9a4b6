import pytest
import torch

from foundry3d.ops import farthest_point_sample, gather_points, group_points, knn, nearest_neighbour_order


def brute_fps(p: torch.Tensor, k: int, start: int = 0) -> list[int]:
    idx = [start]
    d = ((p - p[start]) ** 2).sum(-1)
    for _ in range(k - 1):
        j = int(d.argmax())
        idx.append(j)
        d = torch.minimum(d, ((p - p[j]) ** 2).sum(-1))
    return idx


def test_fps_matches_brute_force_and_is_prefix_consistent(cloud):
    idx = farthest_point_sample(cloud, 32)
    for b in range(cloud.shape[0]):
        assert idx[b].tolist() == brute_fps(cloud[b], 32)
    assert torch.equal(farthest_point_sample(cloud, 8), idx[:, :8])


def test_fps_start_options(cloud):
    g = torch.Generator().manual_seed(3)
    r = farthest_point_sample(cloud, 4, start="random", generator=g)
    g = torch.Generator().manual_seed(3)
    assert torch.equal(r, farthest_point_sample(cloud, 4, start="random", generator=g))
    s = torch.tensor([5, 7])
    assert farthest_point_sample(cloud, 4, start=s)[:, 0].tolist() == [5, 7]
    with pytest.raises(ValueError, match="start"):
        farthest_point_sample(cloud, 4, start=10_000)
    with pytest.raises(ValueError, match="cannot sample"):
        farthest_point_sample(cloud, 1000)


def test_knn_matches_cdist_and_chunks(cloud):
    q = cloud[:, :10]
    idx, d = knn(q, cloud, 8)
    ref = torch.cdist(q, cloud).topk(8, largest=False)
    assert torch.equal(idx, ref.indices)
    assert torch.allclose(d, ref.values**2, atol=1e-4)
    idx2, d2 = knn(q, cloud, 8, max_elements=300)  # forces one-query chunks
    assert torch.equal(idx, idx2) and torch.allclose(d, d2)


def test_group_points_contains_centre_and_is_centred(cloud):
    patches, centres, idx = group_points(cloud, 16, 8)
    assert patches.shape == (2, 16, 8, 3) and centres.shape == (2, 16, 3)
    assert torch.allclose(patches[:, :, 0], torch.zeros(2, 16, 3), atol=1e-6)  # nearest = the centre itself
    assert torch.allclose(gather_points(cloud, idx) - centres.unsqueeze(2), patches)


def test_sequencer_is_a_nearest_neighbour_chain():
    c = torch.tensor([[[3.0, 0, 0], [0, 0, 0], [1, 0, 0], [2, 0, 0]]])
    assert nearest_neighbour_order(c)[0].tolist() == [1, 2, 3, 0]


def test_knn_scales_to_large_clouds():
    pts = torch.rand(1, 300_000, 3)
    q = pts[:, :64]
    idx, _ = knn(q, pts, 4)
    assert idx.shape == (1, 64, 4) and torch.equal(idx[0, :, 0], torch.arange(64))
