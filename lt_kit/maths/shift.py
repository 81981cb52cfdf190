"""Label shift: the test class distributions ("priors") a long-tailed model may meet, and accuracy under one.

The "test-agnostic" protocol of LADE (Hong et al., CVPR 2021, "Disentangling Label Distribution for Long-tailed
Visual Recognition") and SADE (Zhang et al., NeurIPS 2022, "Self-Supervised Aggregation of Diverse Experts for
Test-Agnostic Long-Tailed Recognition") scores one model under several test label distributions:

- ``forwardR``: long-tailed like the training set, largest class frequency over smallest = R, the classes in
  the training order (sorted by training count, largest first; ties by class index) on the exponential profile
  of the long-tail subsets (``data.datasets.long_tail_counts``): class of rank i gets ``R ** (-i / (C - 1))``;
- ``uniform``: every class alike (the balanced test set as it is);
- ``backwardR``: the same profile in the reverse order, the rarest training class the most frequent;
- ``train``: the training distribution itself (``train_counts``, normalised);
- any list of positive class weights, normalised.

The protocol's ratios are 50, 25, 10, 5, 2 each way (``SHIFT_RATIOS``); any R > 1 is accepted by name.

**Accuracy under a prior** pi is ``sum_c pi_c * acc_c``, the prior-weighted mean of the per-class accuracies on
the balanced test set. SADE builds one test set per prior by subsampling each class of the balanced test set
to its share; the accuracy on such a set is a random variable whose expectation over the subsampling is exactly
this weighted mean (each class's correct fraction is, in expectation, its full-set accuracy). The weighted mean is
that procedure without its sampling noise, and it needs no extra test images.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from lt_kit.errors import LtKitError

SHIFT_RATIOS = (50, 25, 10, 5, 2)             # LADE / SADE: forward and backward
DEFAULT_PRIORS = ("forward50", "forward10", "uniform", "backward10", "backward50")
_NAMED = re.compile(r"^(forward|backward)(\d+(?:\.\d+)?)$")


def prior_names() -> list[str]:
    """The protocol's priors in table order: forward50 .. forward2, uniform, backward2 .. backward50, train."""
    return ([f"forward{r}" for r in SHIFT_RATIOS] + ["uniform"]
            + [f"backward{r}" for r in reversed(SHIFT_RATIOS)] + ["train"])


def long_tail_prior(train_counts: Sequence[float], ratio: float, backward: bool = False) -> np.ndarray:
    """(C,) the exponential long-tail profile with largest / smallest = ``ratio`` over the classes ranked by
    ``train_counts`` (largest first, ties by index); ``backward``: the ranking reversed. Sums to 1."""
    counts = np.asarray(train_counts, dtype=np.float64)
    c = len(counts)
    if not ratio >= 1 or not math.isfinite(ratio):
        raise LtKitError(f"a long-tail prior's ratio must be a finite number >= 1, got {ratio!r}")
    profile = ratio ** (-np.arange(c) / max(c - 1, 1))     # rank 0 .. C-1: 1 .. 1/ratio
    if backward:
        profile = profile[::-1]
    prior = np.empty(c)
    prior[np.argsort(-counts, kind="stable")] = profile
    return prior / prior.sum()


def weights_prior(weights: Sequence[float], num_classes: int) -> np.ndarray:
    """A user's class weights, normalised; ``LtKitError`` unless there are ``num_classes`` finite positive ones."""
    w = np.asarray(list(weights), dtype=np.float64)
    if w.ndim != 1 or len(w) != num_classes:
        raise LtKitError(f"a prior needs one weight per class: got {len(w.ravel())} weights for {num_classes} classes")
    if not (np.isfinite(w).all() and (w > 0).all()):
        raise LtKitError(f"a prior's class weights must be finite and > 0, got {', '.join(f'{v:g}' for v in w)}")
    return w / w.sum()


def check_prior_name(name: str) -> str:
    """``name`` if it names a prior (``uniform``, ``train``, ``forwardR`` / ``backwardR`` with R > 1), else an
    ``LtKitError`` naming the valid ones."""
    m = _NAMED.match(name)
    if name in ("uniform", "train") or (m and float(m.group(2)) > 1):
        return name
    raise LtKitError(f"unknown prior {name!r}; valid: {', '.join(prior_names())} (forwardR / backwardR for any "
                     "ratio R > 1), 'all', or class weights with --weights")


def named_prior(name: str, train_counts: Sequence[float]) -> np.ndarray:
    """The prior called ``name`` (``forward50``, ``uniform``, ``backward10``, ``train``; see the module text)
    for a data set with ``train_counts``; ``LtKitError`` naming the valid names otherwise."""
    c = len(train_counts)
    check_prior_name(name)
    if name == "uniform":
        return np.full(c, 1.0 / c)
    if name == "train":
        if min(train_counts) <= 0:
            raise LtKitError("the 'train' prior needs every class in the training split (a class count is 0)")
        return weights_prior(train_counts, c)
    m = _NAMED.match(name)
    return long_tail_prior(train_counts, float(m.group(2)), backward=m.group(1) == "backward")


def prior_weighted_accuracy(per_class: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``sum_c prior_c * acc_c`` over the last axis of ``per_class`` ((C,) or (S, C): one row per strength).
    A class with no image (NaN accuracy) is left out and the prior renormalised over the others; NaN when
    the prior has no weight left."""
    acc = np.asarray(per_class, dtype=np.float64)
    p = np.asarray(prior, dtype=np.float64)
    seen = ~np.isnan(acc)
    w = np.where(seen, p, 0.0)
    mass = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > 0, (np.where(seen, acc, 0.0) * w).sum(-1) / mass, np.nan)


def choose_for_prior(per_class: np.ndarray, prior: np.ndarray) -> int:
    """The row of ``per_class`` ((S, C): per-class accuracy at each strength of a grid in ascending order, on a
    validation split) with the best prior-weighted accuracy; ties go to the first (smallest strength)."""
    return int(np.argmax(prior_weighted_accuracy(per_class, prior)))


def known_prior_shift(train_counts: Sequence[float], prior: np.ndarray, la_tau: float = 1.0) -> np.ndarray:
    """(C,) the term Menon et al. (ICLR 2021, Eq. 4 generalised to a known test prior) add to the logits:
    ``log(test prior) - la_tau * log(train prior)``; a uniform test prior gives logit adjustment at ``la_tau``
    (up to a constant)."""
    counts = np.asarray(train_counts, dtype=np.float64)
    if (counts <= 0).any():
        raise LtKitError("the known-prior correction needs every class in the training split (a class count is 0)")
    return np.log(np.asarray(prior, dtype=np.float64)) - la_tau * np.log(counts / counts.sum())
