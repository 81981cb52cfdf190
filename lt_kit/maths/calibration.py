"""Calibration of a classifier's probabilities (the softmax of its logits): ECE, NLL, reliability data, and
temperature scaling (Guo et al., ICML 2017, "On Calibration of Modern Neural Networks").

- **Confidence** is the largest softmax probability of an image, **correct** whether its argmax is the label.
- **ECE** (expected calibration error): the images binned by confidence into ``bins`` equal-width bins
  ``((m - 1) / M, m / M]`` (a confidence of exactly 0 goes to the first), ``sum_m |B_m| / n * |acc(B_m) -
  conf(B_m)|``; Guo et al. use M = 15.
- **NLL**: the mean of ``-log p(label)``.
- **Temperature**: the T > 0 minimising the NLL of ``softmax(logits / T)`` on held-out (validation) data, by a
  bounded scalar search on log T (the NLL is convex in 1 / T, so it has one minimum). T changes no prediction.

Everything is computed in float64 from the logits, so a large logit scale (TDE, logit adjustment) loses nothing.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

ECE_BINS = 15
T_BOUNDS = (1e-3, 1e3)               # the temperature search's range (a result at an end: see at_bound)


def _logits64(logits) -> Tensor:
    return (logits.detach().cpu() if isinstance(logits, Tensor) else torch.as_tensor(np.asarray(logits))).double()


def _labels(labels) -> Tensor:
    return (labels.detach().cpu() if isinstance(labels, Tensor) else torch.as_tensor(np.asarray(labels))).long()


def log_probs(logits, temperature: float = 1.0) -> Tensor:
    """(N, C) float64 log-softmax of ``logits / temperature``."""
    return torch.log_softmax(_logits64(logits) / float(temperature), dim=1)


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``; NaN with no image."""
    if len(labels) == 0:
        return math.nan
    lp = log_probs(logits, temperature)
    return float(-lp.gather(1, _labels(labels)[:, None]).mean())


def confidence_correct(logits, labels, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(N,) the max-probability confidence and (N,) whether the argmax is the label (bool)."""
    lp = log_probs(logits, temperature)
    top, pred = lp.max(1)
    return top.exp().numpy(), (pred == _labels(labels)).numpy()


def reliability(confidence, correct, bins: int = ECE_BINS) -> dict:
    """The reliability diagram's data: per equal-width bin of ``confidence``, its edges ``lo`` / ``hi``,
    ``count``, mean ``confidence`` and ``accuracy`` (NaN in an empty bin); lists of length ``bins``."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.searchsorted(edges[1:-1], conf, side="left")       # (lo, hi]: an edge goes to the bin below it
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, minlength=bins) / count
        acc = np.bincount(idx, ok, minlength=bins) / count
    return {"lo": edges[:-1].tolist(), "hi": edges[1:].tolist(), "count": count.astype(int).tolist(),
            "confidence": mean_conf.tolist(), "accuracy": acc.tolist()}


def ece(confidence, correct, bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``bins`` equal-width confidence bins; NaN with no image."""
    r = reliability(confidence, correct, bins)
    n = sum(r["count"])
    if n == 0:
        return math.nan
    return float(sum(k / n * abs(a - c) for k, a, c in zip(r["count"], r["accuracy"], r["confidence"]) if k))


def calibration(logits, labels, temperature: float = 1.0, bins: int = ECE_BINS) -> dict:
    """``ece``, ``nll``, ``accuracy``, mean ``confidence``, ``n`` and the ``reliability`` data of
    ``softmax(logits / temperature)`` against ``labels`` (NaN figures with no image)."""
    labels = _labels(labels)
    if len(labels) == 0:
        return {"n": 0, "ece": math.nan, "nll": math.nan, "accuracy": math.nan, "confidence": math.nan,
                "reliability": reliability([], [], bins)}
    conf, ok = confidence_correct(logits, labels, temperature)
    return {"n": len(labels), "ece": ece(conf, ok, bins), "nll": nll(logits, labels, temperature),
            "accuracy": float(ok.mean()), "confidence": float(conf.mean()), "reliability": reliability(conf, ok, bins)}


def fit_temperature(logits, labels, bounds: tuple[float, float] = T_BOUNDS) -> float:
    """The temperature T in ``bounds`` minimising ``nll(logits, labels, T)`` (fit it on validation data, never on
    the test set): a bounded Brent search on log T (scipy's ``minimize_scalar``)."""
    from scipy.optimize import minimize_scalar
    if len(labels) == 0:
        raise ValueError("fitting a temperature needs at least one image")
    z, y = _logits64(logits), _labels(labels)[:, None]

    def loss(log_t: float) -> float:
        return float(-torch.log_softmax(z / math.exp(log_t), dim=1).gather(1, y).mean())

    res = minimize_scalar(loss, bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-5})
    return float(math.exp(res.x))


def at_bound(temperature: float, bounds: tuple[float, float] = T_BOUNDS) -> bool:
    """Whether a fitted temperature lies at an end of the search range (within 0.1 %): the NLL still fell there,
    so the logits are too far off for a temperature in range to calibrate them."""
    return not bounds[0] * 1.001 < temperature < bounds[1] / 1.001
