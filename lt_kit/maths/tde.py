"""Causal-norm logits (paper Eq. 7), Total Direct Effect logits (Eq. 8) and the momentum direction.

Pure tensor functions: the classifier head, the evaluator, the notebooks and the tests all call these,
so there is exactly one implementation of the maths. Reference: KaihuaTang/Long-Tailed-Recognition.pytorch,
``models/CausalNormClassifier.py`` and ``run_networks.py`` (KaihuaTang/Long-Tailed-Recognition.pytorch,
``classification/``; docs/methods.md states the formulas in words).
"""
from __future__ import annotations

import torch
from torch import Tensor

from lt_kit.maths.renamed import renamed_keyword
from lt_kit.maths.strength import check_alpha

# The reference divides by ||x|| with no epsilon, so an all-zero feature gives NaN there. lt_kit clamps the
# norm at this value instead; the result differs from the reference only where the reference is NaN.
_NORM_EPS = 1e-12


# The causal-norm scale was the keyword ``tau`` until lt_kit 0.2.0 (``cn_tau`` tells it from logit adjustment's
# ``la_tau`` and tau-normalisation's ``tn_tau``); notebooks written against 0.1.0 still pass ``tau=``.
_OLD_TAU = renamed_keyword("tau", "cn_tau")    # since 0.2.0, removed in 0.3.0 (maths/renamed.py)


def split_heads(t: Tensor, num_heads: int) -> Tensor:
    """(..., D) -> (..., H, D/H): heads are contiguous channel chunks, as ``torch.split`` in the reference."""
    d = t.shape[-1]
    if d % num_heads:
        raise ValueError(f"feature dimension {d} is not divisible by num_heads={num_heads}")
    return t.reshape(*t.shape[:-1], num_heads, d // num_heads)


def unit_norm(t: Tensor) -> Tensor:
    """Each row (last dim) divided by its L2 norm (clamped, see _NORM_EPS)."""
    return t / t.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS)


@_OLD_TAU
def tde_parts(features: Tensor, weight: Tensor, direction: Tensor | None, *, cn_tau: float = 16.0,
              gamma: float = 1 / 32, num_heads: int = 2) -> tuple[Tensor, Tensor]:
    """Split Eq. 8 into its two alpha-free terms: ``logits(alpha) = base - alpha * effect``.

    ``base`` (B, C) is Eq. 7, the causal-norm logits; ``effect`` (B, C) is the head-direction term
    ``cn_tau/H * sum_h cos(x_h, d_h) * <d_h_hat, w_tilde_h>``. Computing both once makes every later alpha
    a single fused multiply-add (the alpha slider and ``bench/alpha.py`` rely on this). ``tau=`` (the name
    before 0.2.0) is still accepted for ``cn_tau=``, with a FutureWarning, until 0.3.0.
    """
    x = unit_norm(split_heads(features, num_heads))                                    # (B, H, D/H)
    w = split_heads(weight, num_heads)                                                 # (C, H, D/H)
    w = w / (w.norm(dim=-1, keepdim=True) + gamma)                                     # causal norm
    scale = cn_tau / num_heads
    base = torch.einsum("bhd,chd->bc", x, w) * scale
    if direction is None:
        return base, torch.zeros_like(base)
    d = unit_norm(split_heads(direction.to(features.dtype), num_heads))                # (H, D/H)
    cos = torch.einsum("bhd,hd->bh", x, d)                                             # cos(x_h, d_h)
    wd = torch.einsum("chd,hd->ch", w, d)                                              # <w_tilde_h, d_h>
    effect = torch.einsum("bh,ch->bc", cos, wd) * scale
    return base, effect


@_OLD_TAU
def tde_logits(features: Tensor, weight: Tensor, direction: Tensor | None, alpha: float, *,
               cn_tau: float = 16.0, gamma: float = 1 / 32, num_heads: int = 2) -> Tensor:
    """Eq. 8: ``sum_h cn_tau/H * <x_h_hat - alpha * cos(x_h_hat, d_h_hat) * d_h_hat, w_h / (||w_h|| + gamma)>``.

    Args:
        features: (B, D) backbone features.
        weight: (C, D) causal-norm classifier weight.
        direction: (D,) momentum direction (un-normalised moving sum of features), or None.
        alpha: TDE strength; 0 gives the training logits (Eq. 7).
        cn_tau: the causal-norm logit scale (the reference's 16). Its name before 0.2.0, ``tau=``, is still
            accepted with a FutureWarning until 0.3.0; giving both is a TypeError.
    Returns:
        (B, C) logits.
    """
    alpha = check_alpha(alpha)
    base, effect = tde_parts(features, weight, direction if alpha else None,
                             cn_tau=cn_tau, gamma=gamma, num_heads=num_heads)
    return base - alpha * effect if alpha else base


def update_direction(direction: Tensor, batch_mean: Tensor, mu: float) -> Tensor:
    """The reference's momentum rule ``d <- mu * d + mean_batch(feature)`` (no ``1 - mu`` factor; only
    the direction of ``d`` is used). ``batch_mean`` must already be averaged over the global batch."""
    return direction.mul(mu).add_(batch_mean.detach().to(direction.dtype))


def cos_to_direction(features: Tensor, direction: Tensor, num_heads: int = 2) -> Tensor:
    """(B, H) cosine of each feature head with the direction's head: the ``cos`` of Eq. 8."""
    x = unit_norm(split_heads(features, num_heads))
    d = unit_norm(split_heads(direction.to(features.dtype), num_heads))
    return torch.einsum("bhd,hd->bh", x, d)


def rule_of_thumb_alpha(features: Tensor, direction: Tensor, num_heads: int = 2) -> float:
    """The reference README's rule: the alpha at which ``alpha * mean(cos(x, d_hat))`` equals 1."""
    mean_cos = cos_to_direction(features, direction, num_heads).mean().item()
    return float("nan") if mean_cos <= 0 else 1.0 / mean_cos
