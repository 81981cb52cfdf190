"""One training epoch as a plain function: the step ``fit`` runs, the benches time and the tests compare.

Recipe (the reference's ``run_networks.py``): SGD on every parameter, cross-entropy on the causal-norm logits (or the
run's loss), the last partial batch dropped, and the momentum direction ``d <- mu*d + mean(features)`` updated
every step from the (global) batch.
"""
from __future__ import annotations

import torch

import lt_kit.training.distributed as D
import lt_kit.training.sam as sam
from lt_kit.data.augment import Mixer
from lt_kit.errors import check_losses
from lt_kit.maths.tde import update_direction
from lt_kit.methods import LOSSES
from lt_kit.precision import autocast, resolve_bf16

SINGLE = D.DistInfo()                 # one process: the default of every call


def train_one_epoch(model, loader, optimizer, *, mu: float, epoch: int, dist=SINGLE, bf16: bool = False,
                    raw_model=None, bar=None, criterion=None, mixer=None, sam_rho: float = 0.0) -> dict:
    """Train for one pass over ``loader``; returns mean loss and training accuracy (the head's logits).

    ``criterion(logits, y)`` is the epoch's loss from ``methods.make_criterion`` (default: cross-entropy).
    ``mixer`` (``augment.Mixer``, mixup/CutMix) mixes each batch; the loss is then the lambda-weighted pair of
    criteria, training accuracy counts the first label, and the direction sees the mixed batch's features.
    ``sam_rho`` > 0: each step is a SAM step (``sam.py``); the loss, accuracy and direction are the first pass's.
    ``model`` may be DDP-wrapped; ``raw_model`` is the unwrapped ``LTModel`` holding the direction.
    The loss is checked once per epoch (no per-step GPU sync); a non-finite loss raises with its step.
    """
    raw_model = raw_model or model
    criterion = criterion or LOSSES["ce"].make({}, [], epoch)
    model.train()
    dev = raw_model.direction.device
    amp = autocast(dev, resolve_bf16(bf16, dev))
    losses = torch.zeros(len(loader), device=dev)
    correct = torch.zeros((), device=dev)
    seen = 0
    if mixer is not None:
        mixer.set_epoch(epoch)
    for step, (x, y) in enumerate(loader):
        x, mix = mixer.mix(x, y) if mixer is not None else (x, None)
        with amp:
            logits, feats = model(x)
        loss = Mixer.loss(criterion, logits.float(), y, mix)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if sam_rho > 0:                 # the gradient at the sharpest nearby weights (sam.py), then step from here
            moves = sam.ascend(raw_model.parameters(), sam_rho)
            optimizer.zero_grad(set_to_none=True)
            with sam.frozen_bn_stats(raw_model), amp:
                second = model(x)[0]
            Mixer.loss(criterion, second.float(), y, mix).backward()
            sam.descend_back(moves)
        optimizer.step()
        with torch.no_grad():
            batch_mean = D.mean_across(feats.detach().float().mean(0), dist)
            raw_model.direction.copy_(update_direction(raw_model.direction, batch_mean, mu))
            losses[step] = loss.detach()
            correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if bar is not None:
            bar.update(1)
    D.mean_across(losses, dist)         # first: a NaN on any rank is then seen by every rank, and all stop
    check_losses(losses, epoch)
    totals = D.sum_across(torch.stack([correct, torch.tensor(float(seen), device=dev)]), dist)
    return {"loss": losses.mean().item(), "train_acc": (totals[0] / totals[1]).item()}
