"""Synchronised BatchNorm for CPU process groups (torch's SyncBatchNorm is GPU-only).

Point-JEPA trains with synchronised BatchNorm; without it, each process normalises its patches
with its own statistics and a 2-process run drifts from the 1-process run it should equal. The
forward all-reduces per-channel sums (count, sum, sum of squares); the backward all-reduces the
two gradient sums that couple samples, exactly as in torch's CUDA implementation.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from typing_extensions import override


class _SyncBN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
        stats = torch.cat([x.new_tensor([float(x.shape[0])]), x.sum(0), (x * x).sum(0)])
        dist.all_reduce(stats)
        n = stats[0]
        c = x.shape[1]
        mean = stats[1 : 1 + c] / n
        var = (stats[1 + c :] / n - mean * mean).clamp_min(0.0)
        invstd = torch.rsqrt(var + eps)
        xhat = (x - mean) * invstd
        ctx.save_for_backward(xhat, weight, invstd, n)
        return xhat * weight + bias, mean, var * n / (n - 1).clamp_min(1.0)

    @staticmethod
    def backward(ctx, gy: Tensor, _gm: Tensor, _gv: Tensor):
        xhat, weight, invstd, n = ctx.saved_tensors
        local = torch.cat([gy.sum(0), (gy * xhat).sum(0)])
        grad_bias, grad_weight = local[: gy.shape[1]].clone(), local[gy.shape[1] :].clone()
        dist.all_reduce(local)
        c = gy.shape[1]
        sum_gy, sum_gy_xhat = local[:c], local[c:]
        gx = weight * invstd * (gy - sum_gy / n - xhat * sum_gy_xhat / n)
        return gx, grad_weight, grad_bias, None


class CPUSyncBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics span every process of the default group."""

    @override
    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        flat = x if x.dim() == 2 else x.transpose(1, 2).reshape(-1, x.shape[1])
        y, mean, var = _SyncBN.apply(flat, self.weight, self.bias, self.eps)
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            assert self.running_mean is not None and self.running_var is not None  # track_running_stats
            assert self.num_batches_tracked is not None
            self.running_mean.lerp_(mean, m)
            self.running_var.lerp_(var, m)
            self.num_batches_tracked.add_(1)
        if x.dim() == 2:
            return y
        return y.reshape(x.shape[0], x.shape[2], x.shape[1]).transpose(1, 2)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Swap every BatchNorm1d for a synchronised one (torch's on CUDA, ours on CPU). Frozen layers
    stay frozen: a swapped layer keeps its parameters' ``requires_grad`` (DDP would otherwise wait for
    gradients that a frozen tokenizer or teacher never produces)."""
    if device.type == "cuda":
        frozen = {n for n, p in module.named_parameters() if not p.requires_grad}
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        for n, p in module.named_parameters():
            if n in frozen:
                p.requires_grad_(False)
        return module
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d) and not isinstance(child, CPUSyncBatchNorm):
            new = CPUSyncBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            if child.affine:
                new.weight.requires_grad_(child.weight.requires_grad)
                new.bias.requires_grad_(child.bias.requires_grad)
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return module
