"""torchrun support: process-group set-up, the few collective ops training needs, and SyncBatchNorm.

Under ``torchrun --nproc_per_node=N -m lt_kit train ...`` the environment names the rank; NCCL is used on
GPUs and gloo on the CPU. Outside torchrun every function here is a no-op for a single process.

``convert_sync_bn`` also works on the CPU, where ``torch.nn.SyncBatchNorm`` refuses to run: there a small
``GlobalBatchNorm`` all-reduces the batch statistics over gloo, so that a 2-process CPU run normalises with the
statistics of the global batch, exactly as the 1-process run does (the equivalence test relies on this).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lt_kit.errors import LtKitError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> DistInfo:
    """Initialise the process group when launched by torchrun; returns rank facts either way."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device.type == "cuda":
            if info.local_rank >= torch.cuda.device_count():
                raise LtKitError(f"local rank {info.local_rank} but only {torch.cuda.device_count()} GPU(s) visible; "
                                 "use --nproc_per_node <= the number of GPUs")
            # bind the GPU before NCCL starts, so no rank opens a context on GPU 0 (and barriers know the device)
            torch.cuda.set_device(info.local_rank)
            dist.init_process_group("nccl", device_id=torch.device("cuda", info.local_rank))
        else:
            dist.init_process_group("gloo")
    return info


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """Each process drives the GPU of its local rank."""
    if info.enabled and device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return device


def local_batch_size(batch_size: int, info: DistInfo) -> int:
    """Each rank's share of the global batch; the global batch must split evenly (or the recipe changes)."""
    if batch_size % info.world_size:
        raise LtKitError(f"batch_size {batch_size} does not split evenly over {info.world_size} processes; "
                         f"choose a multiple of {info.world_size}")
    return batch_size // info.world_size


def mean_across(t: Tensor, info: DistInfo) -> Tensor:
    """All-reduce mean in place (each rank holds an equal share of the global batch)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world_size
    return t


def sum_across(t: Tensor, info: DistInfo) -> Tensor:
    """All-reduce sum in place."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- SyncBatchNorm, also on the CPU
class _SumAcross(torch.autograd.Function):
    """All-reduce sum whose gradient is the all-reduce sum of the incoming gradients (what DDP's averaging
    of parameter gradients needs when a rank's loss depends on the other ranks' activations)."""

    @staticmethod
    def forward(ctx, t: Tensor, group) -> Tensor:
        ctx.group = group
        t = t.clone()
        dist.all_reduce(t, group=group)
        return t

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics are those of the global batch, over any backend (gloo too).

    Two collectives per layer: the sums (with the count) for the mean, then the centred squares for the
    variance (two passes, not E[x^2] - E[x]^2, which loses precision). Eval mode is plain BatchNorm.
    """

    def __init__(self, *args, group=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.group = group

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        out_dtype = x.dtype
        if x.dtype in (torch.bfloat16, torch.float16):     # under autocast: statistics in float32, output as x
            x = x.float()
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        # float64 sums: the count stays exact and the mean matches one-process BatchNorm to float32 rounding
        n_local = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64, device=x.device)
        sums = _SumAcross.apply(torch.cat([x.sum(dims, dtype=torch.float64), n_local]), self.group)
        n = sums[-1].detach()
        mean = (sums[:-1] / n).to(x.dtype)
        xc = x - mean.view(shape)
        var = (_SumAcross.apply((xc * xc).sum(dims, dtype=torch.float64), self.group) / n).to(x.dtype)  # biased
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), m)
                unbiased = var.detach() * float(n / (n - 1).clamp(min=1))             # as torch's BatchNorm
                self.running_var.lerp_(unbiased, m)
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(out_dtype)


def _to_global_bn(module: nn.Module, group) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats, group=group)
        out.load_state_dict(module.state_dict())
        out.train(module.training)
        if module.running_mean is not None:
            out.to(module.running_mean.device)
    for name, child in module.named_children():
        out.add_module(name, _to_global_bn(child, group))
    return out


def convert_sync_bn(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``model`` normalises with global-batch statistics (no-op for one process).

    CUDA uses ``torch.nn.SyncBatchNorm``; other devices (gloo on the CPU) use :class:`GlobalBatchNorm` over
    a process group of its own, so its collectives never interleave with DDP's gradient all-reduce."""
    if not info.enabled:
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global_bn(model, dist.new_group(backend="gloo"))
