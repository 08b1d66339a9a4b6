import torch
from torch import nn

from foundry3d.train.sync_batchnorm import CPUSyncBatchNorm, convert_sync_batchnorm


def test_conversion_keeps_weights_and_frozen_layers_frozen():
    net = nn.Sequential(nn.Conv1d(3, 8, 1), nn.BatchNorm1d(8), nn.Sequential(nn.BatchNorm1d(8)))
    torch.nn.init.uniform_(net[1].weight)
    net[1].running_mean.fill_(0.5)
    net[2].requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    convert_sync_batchnorm(net, torch.device("cpu"))
    assert isinstance(net[1], CPUSyncBatchNorm) and isinstance(net[2][0], CPUSyncBatchNorm)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net[1].weight.requires_grad and not net[2][0].weight.requires_grad and not net[2][0].bias.requires_grad
    x = torch.randn(4, 3, 10)
    net.eval()
    assert torch.isfinite(net(x)).all()  # without a process group it is plain BatchNorm
