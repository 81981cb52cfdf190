"""Shifted test sets that are real samples: the balanced test set sub-sampled, class by class, to a test prior.

SADE's construction (Zhang et al., NeurIPS 2022, "Self-Supervised Aggregation of Diverse Experts for
Test-Agnostic Long-Tailed Recognition"): for a prior pi, the class with the largest share keeps all its test
images, n_max of them, and every other class c keeps

    n_c = round(n_max * pi_c / pi_max)           (rounded half up, at least 1)

of its images, drawn without replacement. When several classes share the largest share (``uniform``), n_max is
the fewest images any of them has, so each of them keeps that many. On a balanced test set of n images per
class every class then has enough images (n_c <= n_max = n); a test set short of images for a class (one it
lacks entirely, or fewer than its count) is refused, naming the class.

Every class count is fixed by the prior, so every draw of one prior has the same size and the same class
frequencies ``n / n.sum()``: the prior the drawn set really has (the named prior up to the rounding). Which images
are kept is random: draw k of a call seeded S is drawn from ``numpy.random.default_rng(S + k)``, so one draw is
reproduced from its own seed alone (:func:`draw_indices`).

(``maths/shift.py`` scores a prior by the prior-weighted mean of per-class accuracy, the expectation of these
draws' accuracy; the draws are what an estimator of the prior needs: a real unlabelled set to read.)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lt_kit.errors import LtKitError

DEFAULT_DRAWS = 10


def draw_counts(prior, available, *, class_names: Sequence[str] | None = None, what: str = "the draw") -> np.ndarray:
    """(C,) int: how many test images each class keeps in a draw for ``prior`` when the test set holds
    ``available[c]`` images of class c (see the module text). ``LtKitError`` naming the first class that has
    fewer images than its count (``class_names``: how to name it; ``what``: the draw, in the message)."""
    p = np.asarray(prior, dtype=np.float64)
    n = np.asarray(available, dtype=np.int64)
    if p.ndim != 1 or p.shape != n.shape:
        raise LtKitError(f"a draw needs one prior weight per class and one image count per class, got {p.size} "
                         f"weights and {n.size} counts")
    if not (np.isfinite(p).all() and (p > 0).all()):
        raise LtKitError("a draw's prior must have finite weights > 0")
    top = p == p.max()
    n_max = int(n[top].min())
    counts = np.maximum(np.floor(n_max * p / p.max() + 0.5).astype(np.int64), 1)
    short = np.flatnonzero(counts > n)
    if len(short):
        c = int(short[0])
        name = class_names[c] if class_names is not None else c
        need, have = int(counts[c]), int(n[c])
        raise LtKitError(f"{what} needs {need} test image{'s' * (need != 1)} of class {name}, which has {have}: "
                         "sub-sampling keeps only images the test set holds")
    return counts


def draw_indices(labels, counts, seed: int) -> np.ndarray:
    """Sorted indices into ``labels`` ((N,) class of each test image): ``counts[c]`` images of each class c,
    drawn without replacement by ``numpy.random.default_rng(seed)``. The same seed gives the same draw."""
    y = np.asarray(labels)
    k = np.asarray(counts, dtype=np.int64)
    if seed < 0:
        raise LtKitError(f"a draw's seed must be >= 0, got {seed}")
    rng = np.random.default_rng(seed)
    parts = []
    for c, n_c in enumerate(k):
        idx = np.flatnonzero(y == c)
        if n_c > len(idx):
            raise LtKitError(f"the draw needs {n_c} test images of class {c}, which has {len(idx)}")
        parts.append(rng.choice(idx, size=int(n_c), replace=False))
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def draw_test_sets(labels, prior, num_classes: int, *, draws: int = DEFAULT_DRAWS, seed: int = 0,
                   class_names: Sequence[str] | None = None, what: str = "the draw") -> tuple[np.ndarray, list]:
    """``draws`` test sets for ``prior`` from the test images' ``labels``: the class counts (:func:`draw_counts`)
    and one sorted index array per draw, draw k seeded ``seed + k``."""
    if draws < 1:
        raise LtKitError(f"the number of draws must be >= 1, got {draws}")
    if seed < 0:
        raise LtKitError(f"a draw's seed must be >= 0, got {seed}")
    y = np.asarray(labels)
    counts = draw_counts(prior, np.bincount(y, minlength=num_classes)[:num_classes], class_names=class_names,
                         what=what)
    return counts, [draw_indices(y, counts, seed + k) for k in range(draws)]
