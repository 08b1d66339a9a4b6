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


def test_library_path_is_exact_fps_knn_and_reproducible(monkeypatch):
    """The large-cloud path (QuickFPS + pykdtree): an exact FPS from its own start, exact kNN, same every run."""
    from foundry3d.ops import fast

    assert fast.available()  # both are declared dependencies: a missing wheel is a failure here
    monkeypatch.setattr(fast, "FAST_MIN_POINTS", 2000)  # QuickFPS for these 3,000-point clouds
    pts = torch.randn(2, 3000, 3, generator=torch.Generator().manual_seed(0))
    a, b = fast.fps_fast(pts, 40), fast.fps_fast(pts, 40)
    assert torch.equal(a, b)  # the library's start is random unless fixed: two runs must agree
    for i in range(2):
        assert a[i].tolist() == brute_fps(pts[i], 40, start=int(a[i, 0]))  # exact FPS from that start
    q = gather_points(pts, a)
    idx, d = fast.knn_fast(q, pts, 8)
    ref_idx, ref_d = knn(q, pts, 8)
    assert torch.allclose(d, ref_d, atol=1e-5)
    assert torch.equal(idx.sort(-1).values, ref_idx.sort(-1).values)


def test_library_path_matches_the_pytorch_path_below_its_threshold_and_takes_over_only_where_it_may(monkeypatch):
    from foundry3d.ops import fast

    assert fast.available()  # both are declared dependencies: a missing wheel is a failure here
    x = torch.randn(3, 1024, 3, generator=torch.Generator().manual_seed(1))
    nb, centres, idx = group_points(x, 64, 32)  # library path (CPU, no autograd)
    monkeypatch.setattr(fast, "LIBRARY_OPS", False)
    nb_ref, centres_ref, idx_ref = group_points(x, 64, 32)  # PyTorch reference
    assert torch.allclose(nb, nb_ref)
    assert torch.equal(centres, centres_ref)  # plain FPS from index 0: the same centres in the same order
    assert torch.equal(idx.sort(-1).values, idx_ref.sort(-1).values)  # the same neighbours
    monkeypatch.setattr(fast, "LIBRARY_OPS", True)
    calls = []
    real = fast.fps_fast
    monkeypatch.setattr(fast, "fps_fast", lambda p, k: calls.append(p.shape[1]) or real(p, k))
    monkeypatch.setattr(fast, "FAST_MIN_POINTS", 2000)  # bucket FPS from 2,000 points on
    nb, centres, idx = group_points(torch.randn(1, 2500, 3), 16, 8)
    assert calls == [2500]
    assert nb.shape == (1, 16, 8, 3) and (nb[:, :, 0].abs() < 1e-6).all()  # each patch holds its own centre
    y = torch.randn(1, 2500, 3, requires_grad=True)  # autograd inputs keep the PyTorch path
    nb, _, _ = group_points(y, 16, 8)
    nb.sum().backward()  # gradients reach the points through the gathers
    assert calls == [2500] and y.grad is not None
    with pytest.raises(ValueError, match="cannot sample"):
        fast.fps_fast(torch.randn(1, 10, 3), 20)
