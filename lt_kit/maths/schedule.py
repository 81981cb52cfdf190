"""Learning-rate and momentum-direction schedules as pure functions of the epoch (the
reference's ``run_networks.py`` and ``config/CIFAR10_LT/causal_norm_32.yaml``).

The reference steps its schedulers at the *start* of every epoch, so 1-based epoch ``e`` trains with the
schedule value at index ``e``: warm-up epoch 1 uses 0.0933 (not 0.0667), cosine epoch 90 uses 0.
"""
from __future__ import annotations

import bisect
import math


def lr_at(epoch: int, *, lr: float, schedule: str, epochs: int, warmup_epochs: int = 5,
          milestones: list[int] = (120, 160), lr_factor: float = 0.01) -> float:
    """Learning rate for 1-based ``epoch``. ``warmup_multistep``: linear warm-up from lr/3 over
    ``warmup_epochs``, then x``lr_factor`` at each milestone. ``cosine``: ``lr*(1+cos(pi*e/epochs))/2``."""
    if schedule == "warmup_multistep":
        factor = 1.0
        if epoch < warmup_epochs:
            a = epoch / warmup_epochs
            factor = (1 / 3) * (1 - a) + a
        return lr * factor * lr_factor ** bisect.bisect_right(sorted(milestones), epoch)
    if schedule == "cosine":
        return lr * (1 + math.cos(math.pi * epoch / epochs)) / 2
    raise ValueError(f"unknown schedule {schedule!r}; valid: warmup_multistep, cosine")


def mu_at(current_lr: float, *, mu: float, mu_schedule: str) -> float:
    """Momentum of the direction update. ``fixed`` (CIFAR): ``mu``. ``lr_scaled`` (ImageNet-LT):
    ``1 - 0.1 * min(50 * lr, 1)``, re-set each epoch, so mu -> 1 as the cosine lr -> 0."""
    if mu_schedule == "fixed":
        return mu
    if mu_schedule == "lr_scaled":
        return 1.0 - 0.1 * min(50.0 * current_lr, 1.0)
    raise ValueError(f"unknown mu_schedule {mu_schedule!r}; valid: fixed, lr_scaled")
