"""Training-time long-tail losses, as pure functions of logits, labels and the training class counts.

- Cross-entropy (the reference's loss).
- The logit-adjusted loss (Menon et al., ICLR 2021): cross-entropy on ``logits + tau * log(prior)``; with
  tau = 1 it is Balanced Softmax (Ren et al., NeurIPS 2020).
- LDAM-DRW (Cao et al., NeurIPS 2019; public code kaidic/LDAM-DRW, ``losses.py::LDAMLoss`` and
  ``cifar_train.py``'s deferred re-weighting): on a normalised linear head whose logits are ``s * cos``, the
  true class's logit is lowered by ``s * m_y`` with ``m_c = 1 / n_c ** (1/4)`` scaled so the largest margin is
  ``max_margin`` (0.5); from the deferred epoch on, each image is weighted by its class's
  ``(1 - beta) / (1 - beta ** n_c)`` (beta = 0.9999), the weights normalised to sum to the number of classes.

Each takes ``label_smoothing`` (Szegedy et al., 2016; torch's ``cross_entropy`` argument), a recipe switch
that is off (0) in the reference.

``methods.LOSSES`` turns these into the criterion that ``train.train_one_epoch`` calls each step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .posthoc import log_prior


def logit_adjusted_loss(logits: Tensor, target: Tensor, class_counts, tau: float = 1.0,
                        label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy on ``logits + tau * log(prior)`` (prior = training class frequencies). ``class_counts``
    may be the counts or their ``log_prior`` as a tensor (computed once, already on the device)."""
    prior = class_counts if isinstance(class_counts, Tensor) else log_prior(class_counts)
    shift = prior.to(logits.device, logits.dtype)
    return F.cross_entropy(logits + tau * shift, target, label_smoothing=label_smoothing)


def ldam_margins(class_counts, max_margin: float = 0.5) -> Tensor:
    """``m_c = n_c ** -1/4``, scaled so that the largest (the rarest class's) equals ``max_margin``."""
    m = torch.as_tensor(list(class_counts), dtype=torch.float64).pow(-0.25)
    return (m * (max_margin / m.max())).float()


def drw_weights(class_counts, beta: float = 0.9999) -> Tensor:
    """Class-balanced weights ``(1 - beta) / (1 - beta ** n_c)``, normalised to sum to the class count."""
    n = torch.as_tensor(list(class_counts), dtype=torch.float64)
    w = (1 - beta) / (1 - torch.pow(beta, n))
    return (w / w.sum() * len(n)).float()


def ldam_loss(logits: Tensor, target: Tensor, margins: Tensor, scale: float, weight: Tensor | None = None,
              label_smoothing: float = 0.0) -> Tensor:
    """LDAM: cross-entropy after lowering each image's true-class logit (``scale * cos``) by ``scale * m_y``,
    optionally class-weighted (DRW). ``logits`` are already scaled, as the normalised head outputs them."""
    shift = F.one_hot(target, logits.shape[1]).to(logits.dtype) * (scale * margins.to(logits.device, logits.dtype))[target, None]
    return F.cross_entropy(logits - shift, target,
                           weight=None if weight is None else weight.to(logits.device, logits.dtype),
                           label_smoothing=label_smoothing)
