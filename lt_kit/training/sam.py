"""Sharpness-aware minimisation (Foret et al., ICLR 2021), a recipe switch (``sam_rho``; 0 = off, the reference).

DDC and GLMC+SAM use it for ResNet-32 on CIFAR-LT (rho 0.05). One SAM step: take the batch's gradient g, move
the weights to ``w + rho * g / ||g||`` (the norm over all parameters), take the gradient there, move back, and
let the optimizer step with that second gradient. BatchNorm's running statistics are updated by the first
pass only (``frozen_bn_stats`` for the second), as the SAM reference code's ``disable_running_stats``.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn


@torch.no_grad()
def ascend(params, rho: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Move each parameter with a gradient by ``rho * grad / ||grad||`` (global L2 norm); returns the moves."""
    with_grad = [p for p in params if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm(2) for p in with_grad]), 2)
    scale = rho / (norm + 1e-12)
    moves = []
    for p in with_grad:
        e = p.grad * scale
        p.add_(e)
        moves.append((p, e))
    return moves


@torch.no_grad()
def descend_back(moves) -> None:
    """Undo :func:`ascend` (the gradients now in ``.grad`` are the ones taken at the moved weights)."""
    for p, e in moves:
        p.sub_(e)


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module):
    """BatchNorm layers keep their running statistics (momentum 0) inside the block."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom, nbt in saved:
            m.momentum = mom
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)
