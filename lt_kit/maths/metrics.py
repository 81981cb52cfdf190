"""Accuracy metrics: per-class, many/medium/few ("shot") splits, and a head/tail split for small class sets.

Reference: ``utils.shot_acc`` (KaihuaTang/Long-Tailed-Recognition.pytorch, ``classification/utils.py``).
One deliberate departure: a split that holds no class
is NaN here, not 0.0 as in the reference, so an empty split can never be mistaken for a 0% split.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def per_class_accuracy(preds, labels, num_classes: int) -> np.ndarray:
    """(C,) fraction correct per class; NaN for a class with no test sample."""
    preds, labels = _np(preds), _np(labels)
    total = np.bincount(labels, minlength=num_classes).astype(np.float64)
    correct = np.bincount(labels[preds == labels], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / np.maximum(total, 1), np.nan)


def shot_groups(train_counts: Sequence[int], many: int = 100, few: int = 20) -> dict[str, np.ndarray]:
    """Class indices per split: many = count > ``many``, few = count < ``few``, medium = the rest."""
    counts = np.asarray(train_counts)
    return {"many": np.flatnonzero(counts > many),
            "medium": np.flatnonzero((counts <= many) & (counts >= few)),
            "few": np.flatnonzero(counts < few)}


def median_groups(train_counts: Sequence[int]) -> dict[str, np.ndarray]:
    """Head = classes with more training images than the median count, tail = the rest.

    Useful where the reference thresholds leave a split empty (CIFAR-10-LT has no few-shot class)."""
    counts = np.asarray(train_counts)
    med = float(np.median(counts))
    return {"head": np.flatnonzero(counts > med), "tail": np.flatnonzero(counts <= med)}


def _split_means(acc: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for name, idx in groups.items():
        vals = acc[idx]
        vals = vals[~np.isnan(vals)]
        out[name] = float(vals.mean()) if len(vals) else math.nan
    return out


def shot_accuracy(preds, labels, train_counts: Sequence[int], many: int = 100, few: int = 20) -> dict[str, float]:
    """Many/medium/few/overall accuracy as fractions in [0, 1].

    A split's accuracy is the unweighted mean of its classes' accuracies; ``overall`` is plain (micro)
    accuracy; a split with no class is NaN.
    """
    preds, labels = _np(preds), _np(labels)
    acc = per_class_accuracy(preds, labels, len(train_counts))
    out = _split_means(acc, shot_groups(train_counts, many, few))
    out["overall"] = float((preds == labels).mean()) if len(labels) else math.nan
    return out


def head_tail_accuracy(preds, labels, train_counts: Sequence[int]) -> dict[str, float]:
    """Head/tail accuracy by the median-count rule (see :func:`median_groups`)."""
    acc = per_class_accuracy(preds, labels, len(train_counts))
    return _split_means(acc, median_groups(train_counts))
