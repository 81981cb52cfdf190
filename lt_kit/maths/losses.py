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

import lt_kit.maths.posthoc as posthoc
from lt_kit.maths.renamed import renamed_keyword


@renamed_keyword("tau", "loss_tau")        # the keyword was tau before 0.2.0
def logit_adjusted_loss(logits: Tensor, target: Tensor, class_counts=None, loss_tau: float = 1.0,
                        label_smoothing: float = 0.0, *, log_prior: Tensor | None = None) -> Tensor:
    """Cross-entropy on ``logits + loss_tau * log(prior)`` (prior = training class frequencies).

    Give either ``class_counts`` (a list or a tensor: counts, whatever their type) or, by keyword,
    ``log_prior`` = ``posthoc.log_prior(counts)`` (computed once, already on the device). A log prior is
    checked to be one (a float tensor, one entry per class, whose exp sums to 1): counts passed there are
    refused, never silently used as a shift. ``tau=``, the name of ``loss_tau`` before 0.2.0, is still accepted
    with a FutureWarning until 0.3.0; giving both is a TypeError."""
    if (class_counts is None) == (log_prior is None):
        raise ValueError("give class_counts or log_prior (keyword), exactly one of them")
    if log_prior is None:
        shift = posthoc.log_prior(class_counts)
    else:
        shift = check_log_prior(log_prior, logits.shape[-1])
    return adjusted_cross_entropy(logits, target, shift, loss_tau, label_smoothing)


def check_log_prior(log_prior, num_classes: int) -> Tensor:
    """``log_prior`` if it is the log of ``num_classes`` class frequencies, else ``ValueError`` saying so."""
    if not isinstance(log_prior, Tensor) or not log_prior.is_floating_point() or log_prior.shape != (num_classes,):
        got = (f"a {log_prior.dtype} tensor of shape {tuple(log_prior.shape)}" if isinstance(log_prior, Tensor)
               else type(log_prior).__name__)
        raise ValueError(f"log_prior must be a float tensor of {num_classes} classes' log frequencies "
                         f"(posthoc.log_prior(counts)), got {got}; pass counts as class_counts")
    total = float(torch.logsumexp(log_prior.detach().double(), 0))
    if not bool(torch.isfinite(log_prior).all()) or abs(total) > 1e-3:
        raise ValueError(f"log_prior is not a log prior: its exp sums to exp({total:.4g}), not 1 (class counts? "
                         "pass them as class_counts)")
    return log_prior


@renamed_keyword("tau", "loss_tau")        # the keyword was tau before 0.2.0
def adjusted_cross_entropy(logits: Tensor, target: Tensor, shift: Tensor, loss_tau: float,
                           label_smoothing: float = 0.0) -> Tensor:
    """The loss itself, unchecked: ``shift`` is a log prior already built (the training step calls this every
    step with ``methods``' precomputed one, with no host sync). ``tau=`` for ``loss_tau``: as in
    :func:`logit_adjusted_loss`."""
    return F.cross_entropy(logits + loss_tau * shift.to(logits.device, logits.dtype), target,
                           label_smoothing=label_smoothing)


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
    margin = (scale * margins.to(logits.device, logits.dtype))[target, None]
    shift = F.one_hot(target, logits.shape[1]).to(logits.dtype) * margin
    return F.cross_entropy(logits - shift, target,
                           weight=None if weight is None else weight.to(logits.device, logits.dtype),
                           label_smoothing=label_smoothing)
