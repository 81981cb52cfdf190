"""Post-hoc debiasing of a trained classifier, the field's usual peers of TDE: pure tensor functions.

- Logit adjustment (Menon et al., ICLR 2021, post-hoc form): ``logits - tau * log(prior)``, the prior being the
  training class frequencies; tau = 1 is the paper's rule (the Bayes-optimal shift for a balanced test set).
- tau-normalisation (Kang et al., ICLR 2020, "Decoupling"): each class weight ``w_c / ||w_c|| ** tau`` on a
  bias-free linear classifier; tau = 1 makes every class weight unit length (the paper's tau lies in [0, 1],
  chosen on a validation set).

The CLI, the evaluator, the notebooks, the benches and the tests all call these two functions
(docs/results.md lists the published figures they are compared with, with their papers).
"""
from __future__ import annotations

import torch
from torch import Tensor

from lt_kit.maths.renamed import renamed_keyword
from lt_kit.maths.strength import check_strength

_NORM_EPS = 1e-12


def log_prior(class_counts) -> Tensor:
    """log of the training class frequencies, (C,) float32 on the CPU, from counts (a list or a tensor). A
    class with no training image has prior 0: its log is -inf and logit adjustment would always predict it, so
    such counts are refused, and so are negative ones (a log prior passed where counts belong)."""
    counts = (class_counts.detach().cpu() if isinstance(class_counts, Tensor)
              else torch.as_tensor(list(class_counts))).to(torch.float64).flatten()
    if (counts < 0).any():
        raise ValueError("class counts must be >= 0, got a negative one (a log prior? pass the counts)")
    if (counts <= 0).any():
        raise ValueError("logit adjustment needs every class in the training split (a class count is 0)")
    return (counts / counts.sum()).log().float()


@renamed_keyword("tau", "la_tau")          # the keyword was tau before 0.2.0
def logit_adjust(logits: Tensor, class_counts, la_tau: float) -> Tensor:
    """Post-hoc logit adjustment: ``logits - la_tau * log(prior)`` with ``prior = counts / counts.sum()``.

    Args:
        logits: (B, C) scores of any classifier.
        class_counts: C training images per class.
        la_tau: strength, >= 0 (0 leaves the logits unchanged; 1 is the paper's rule). Its name before 0.2.0,
            ``tau=``, is still accepted with a FutureWarning until 0.3.0; giving both is a TypeError.
    Returns:
        (B, C) adjusted logits.
    """
    la_tau = check_strength("tau", la_tau)
    if logits.shape[-1] != len(list(class_counts)):
        raise ValueError(f"{logits.shape[-1]} logits per image but {len(list(class_counts))} class counts")
    return logits - la_tau * log_prior(class_counts).to(logits.device, logits.dtype)


@renamed_keyword("tau", "tn_tau")          # the keyword was tau before 0.2.0
def tau_normalize(weight: Tensor, tn_tau: float) -> Tensor:
    """tau-normalisation: each row (class) of ``weight`` divided by its L2 norm to the power ``tn_tau``.

    Args:
        weight: (C, D) weight of a bias-free linear classifier.
        tn_tau: strength, >= 0 (0 leaves the weight unchanged; 1 gives unit-norm class weights). Its name
            before 0.2.0, ``tau=``, is still accepted with a FutureWarning until 0.3.0; giving both is a TypeError.
    Returns:
        (C, D) rescaled weight.
    """
    tn_tau = check_strength("tau", tn_tau)
    return weight / weight.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS).pow(tn_tau)
