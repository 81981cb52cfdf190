"""Estimating a test set's class prior from its unlabelled images: EM and BBSE, pure functions on a
classifier's probabilities or hard predictions. Neither reads a test label; neither takes one.

Label shift: the test set's classes follow a prior q that differs from the source's p, while each class's
images look alike in both (p(x | y) is shared). Two estimators of q:

- **EM** (Saerens, Latinne & Decaestecker, "Adjusting the Outputs of a Classifier to New a Priori
  Probabilities: A Simple Procedure", Neural Computation 2002). Given posteriors p(y | x_i) calibrated under
  the source prior p, the likelihood of the unlabelled test images as a function of q is maximised by
  iterating, from q_0 = p (or any positive start),

      E: w_i(y) = q_k(y) / p(y) * p(y | x_i), normalised over y;      M: q_{k+1}(y) = mean_i w_i(y)

  until no class's share moves by ``tol`` (or ``max_iter`` steps). The log-likelihood is concave in q, so the
  fixed point is the maximum-likelihood prior wherever it starts. It is only as good as the posteriors'
  calibration: an over-confident network pulls the estimate toward its own argmax counts (hence the
  calibration below, fitted on the validation split at the run level, ``evaluation/adaptation.py``).
- **BBSE**, black-box shift estimation (Lipton, Wang & Smola, "Detecting and Correcting for Label Shift with
  Black Box Predictors", ICML 2018). With hard predictions y^ of any fixed classifier, label shift gives
  ``mu(i) = q(y^ = i) = sum_j p(y^ = i | y = j) q(j)``: the test set's prediction frequencies mu are a linear
  image of q. With the joint confusion ``C[i, j] = p_src(y^ = i, y = j)`` measured on labelled source data,
  ``mu = C w`` where ``w(j) = q(j) / p_src(j)`` are the importance weights. BBSE solves ``C w = mu^`` (least
  squares: a class the classifier never predicts makes C singular), clips w to >= 0, and returns
  ``q = w * p_src`` renormalised.

**Which source, which prior.** At the run level the confusion matrix is measured on the validation split, so
the source prior in ``w = q / p_src`` is the validation split's own (its label frequencies, which this module
takes as C's column sums), not the training prior. lt_kit's validation splits are balanced (``val_per_class``,
ImageNet-LT's val list), so ``C = M / K`` with ``M[i, j] = p(y^ = i | y = j)`` and the system is ``M q = mu``
directly. The training prior enters nowhere: the classifier may be as biased toward head classes as it likes,
because its bias is measured into M on held-out data (on the training images themselves M would be optimistic);
it would enter only through importance weights for re-training on the training set, ``q / p_train``, which
nothing here does. A better-conditioned M (a classifier nearer balanced, fewer confusions) gives a less noisy
estimate, which is why the run level feeds BBSE the predictions of the calibrated model below (nearer balanced
than the head's own).

**Calibration for EM** (:func:`fit_balanced_calibration`). A long-tailed model's softmax is neither calibrated nor
a posterior under a known prior: the head's logits z lean toward the training prior by some unknown amount, and
are over- or under-confident. On a labelled split whose prior is known (the balanced validation split) the model
``softmax((z - beta * log p_train) / T)`` is fitted by NLL: beta on a grid (``BETA_GRID``: 0 = the head as it is,
1 = logit adjustment's balanced form), T by ``maths.calibration.fit_temperature`` at each beta. It is a
bias-corrected temperature scaling in the spirit of Alexandari, Kundaje & Shrikumar ("Maximum Likelihood with
Bias-Corrected Calibration is Hard-To-Beat at Label Shift Adaptation", ICML 2020), its bias restricted to the one
direction a long tail gives it; the result is calibrated under the split's own prior, the reference prior EM is
then given. (A temperature alone, fitted on a balanced split to logits that lean toward the training prior,
spends itself on that lean.)

**Error** of an estimate: the total variation distance ``TV(q, q^) = 1/2 sum_c |q_c - q^_c|`` (0 .. 1).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lt_kit.errors import LtKitError

EM_TOL = 1e-6                 # stop when no class's share moves by more than this in one step
EM_MAX_ITER = 1000
BETA_GRID = tuple(np.round(np.arange(0.0, 2.0001, 0.25), 6))      # fit_balanced_calibration's log-prior weights


class Calibration(NamedTuple):
    beta: float                # weight of -log p_train added to the logits
    temperature: float
    nll: float                 # the labelled split's mean NLL at (beta, temperature)


class EMEstimate(NamedTuple):
    prior: np.ndarray          # (C,) the estimated test prior
    iterations: int            # EM steps taken
    converged: bool            # False: stopped at max_iter


def _prior(p, num_classes: int, what: str) -> np.ndarray:
    v = np.asarray(p, dtype=np.float64)
    if v.shape != (num_classes,) or not (np.isfinite(v).all() and (v > 0).all()):
        raise LtKitError(f"{what} must be {num_classes} finite weights > 0, got shape {v.shape}")
    return v / v.sum()


def _probs(probs) -> np.ndarray:
    P = np.asarray(probs, dtype=np.float64)
    if P.ndim != 2 or len(P) == 0:
        raise LtKitError(f"probabilities must be (N, C) with N >= 1, got shape {P.shape}")
    if not (np.isfinite(P).all() and (P >= 0).all() and (P.sum(1) > 0).all()):
        raise LtKitError("probabilities must be finite, >= 0 and not all zero in a row")
    return P / P.sum(1, keepdims=True)


def tv_distance(p, q) -> float:
    """Total variation distance ``1/2 sum |p - q|`` between two priors (each normalised first)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def reweight_posteriors(probs, from_prior, to_prior) -> np.ndarray:
    """(N, C) posteriors calibrated under ``from_prior`` moved to ``to_prior`` by Bayes' rule:
    ``p'(y | x) ∝ p(y | x) * to(y) / from(y)``."""
    P = _probs(probs)
    c = P.shape[1]
    r = _prior(to_prior, c, "the target prior") / _prior(from_prior, c, "the source prior")
    out = P * r
    return out / out.sum(1, keepdims=True)


def fit_balanced_calibration(logits, labels, log_train_prior, betas=BETA_GRID) -> Calibration:
    """(beta, T) minimising the NLL of ``softmax((logits - beta * log_train_prior) / T)`` against ``labels`` of a
    labelled split (the validation split; never the test set): T by ``maths.calibration.fit_temperature`` at each
    beta of ``betas``; the first of equal NLLs (the smallest beta) wins. See the module text."""
    import torch

    from lt_kit.maths.calibration import fit_temperature, nll
    z = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits.detach().cpu())
    z = z.double()
    lp = torch.as_tensor(np.asarray(log_train_prior, dtype=np.float64))
    if lp.shape != (z.shape[1],) or not torch.isfinite(lp).all():
        raise LtKitError(f"the log training prior must be {z.shape[1]} finite numbers (every class trained)")
    best = None
    for b in betas:
        shifted = z - float(b) * lp
        t = fit_temperature(shifted, labels)
        fit = Calibration(float(b), t, nll(shifted, labels, t))
        if best is None or fit.nll < best.nll:
            best = fit
    return best


def em_prior(probs, source_prior, *, tol: float = EM_TOL, max_iter: int = EM_MAX_ITER,
             init=None) -> EMEstimate:
    """Saerens et al.'s EM: the test prior that maximises the likelihood of ``probs`` ((N, C) posteriors of the
    unlabelled test images, calibrated under ``source_prior``), starting from ``init`` (default: the source
    prior); see the module text."""
    P = _probs(probs)
    c = P.shape[1]
    src = _prior(source_prior, c, "the source prior")
    q = src.copy() if init is None else _prior(init, c, "EM's starting prior")
    if not (tol > 0 and max_iter >= 1):
        raise LtKitError(f"EM needs tol > 0 and max_iter >= 1, got {tol}, {max_iter}")
    base = P / src
    for it in range(1, max_iter + 1):
        w = base * q
        s = w.sum(1, keepdims=True)
        w = np.divide(w, s, out=np.zeros_like(w), where=s > 0)
        new = w.mean(0)
        new /= new.sum()
        if np.abs(new - q).max() < tol:
            return EMEstimate(new, it, True)
        q = new
    return EMEstimate(q, max_iter, False)


def confusion_matrix(predictions, labels, num_classes: int) -> np.ndarray:
    """(C, C) joint frequencies ``C[i, j]`` = share of the (labelled, source) images predicted i whose class is
    j; its column sums are the source's label frequencies."""
    yh, y = np.asarray(predictions, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    if yh.shape != y.shape or yh.ndim != 1 or len(y) == 0:
        raise LtKitError(f"a confusion matrix needs as many predictions as labels (>= 1), got {yh.size} and {y.size}")
    if yh.min() < 0 or y.min() < 0 or yh.max() >= num_classes or y.max() >= num_classes:
        raise LtKitError(f"predictions and labels must be classes 0 .. {num_classes - 1}")
    return np.bincount(yh * num_classes + y, minlength=num_classes ** 2).reshape(num_classes, num_classes) / len(y)


def bbse_prior(predictions, confusion) -> np.ndarray:
    """Lipton et al.'s BBSE: (C,) the test prior from the unlabelled test images' hard ``predictions`` ((N,)
    classes) and the classifier's joint ``confusion`` matrix on labelled source data (:func:`confusion_matrix`):
    solve ``confusion @ w = mu^`` by least squares, clip ``w >= 0``, ``q = w * p_src`` renormalised. Should
    every weight clip to 0 the source prior is returned."""
    C = np.asarray(confusion, dtype=np.float64)
    k = C.shape[0]
    if C.ndim != 2 or C.shape != (k, k) or not np.isfinite(C).all() or C.sum() <= 0:
        raise LtKitError(f"a confusion matrix must be square, finite and not all zero, got shape {C.shape}")
    yh = np.asarray(predictions, dtype=np.int64)
    if yh.ndim != 1 or len(yh) == 0 or yh.min() < 0 or yh.max() >= k:
        raise LtKitError(f"BBSE needs >= 1 prediction, each a class 0 .. {k - 1}")
    mu = np.bincount(yh, minlength=k) / len(yh)
    p_src = C.sum(0) / C.sum()
    w = np.clip(np.linalg.lstsq(C / C.sum(), mu, rcond=None)[0], 0.0, None)
    q = w * p_src
    return q / q.sum() if q.sum() > 0 else p_src
