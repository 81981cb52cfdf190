"""Two-stage methods (``methods.DECOUPLED``: cRT, LWS) on feature caches: fit on the training-feature cache,
score any cache, and the run's ``metrics.json`` entry for each.

The fit is a pure function of the cached training features, the run's seed and the method's settings
(``maths/decoupled.py``), so the trainer, ``python -m lt_kit test --method crt`` and the notebooks get the same
classifier; it takes seconds on a CPU because the backbone never runs.

Where this departs from Kang et al.'s code (``maths/decoupled.py`` lists each): the second stage trains on cached
features, un-augmented by default (``train_feature_passes=1``; K > 1 caches K augmented passes), where theirs
re-extracts a freshly augmented image at every draw; and two rows are scored, lt_kit's fixed rule (the last
epoch's classifier) beside the authors' procedure (the epoch best on the validation split, when the run has one).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from lt_kit.evaluation.features import FeatureCache
from lt_kit.maths.decoupled import (
    MOMENTUM,
    SAMPLES_PER_CLASS_VISIT,
    init_linear,
    linear_logits,
    retrain,
    scaled_logits,
)
from lt_kit.maths.posthoc import log_prior
from lt_kit.maths.seeds import stream_seed

PRIOR_GRID = np.round(np.arange(-1.0, 2.0001, 0.05), 6)   # logit-adjustment tau tried on top of a two-stage method


class DecoupledFit:
    """cRT or LWS fitted on ``train_cache`` with the run's ``params`` (seed and the method's settings); the epoch
    is chosen on ``val_cache`` when given. ``logits(cache, which)``: ``"last"`` (lt_kit's fixed rule) or ``"best"``
    (the epoch best on the validation split, the authors' procedure). ``on_epoch(epoch, logits_of)``: called
    after each epoch (1-based) with ``logits_of(cache)``, that epoch's classifier's logits on any cache (to choose
    the epoch by another rule; nothing of it is kept)."""

    def __init__(self, method: str, train_cache: FeatureCache, params: dict, val_cache: FeatureCache | None = None,
                 on_epoch: Callable[[int, Callable[[FeatureCache], Tensor]], None] | None = None):
        from lt_kit.methods import get_decoupled, head_logits
        self.method = get_decoupled(method, train_cache.head)
        self.hyper = self.method.hyper(params)
        self.num_classes = train_cache.weight.shape[0]
        seed = stream_seed(int(params["seed"]), 0, method)
        if method == "crt":
            theta, self._fn = init_linear(train_cache.features.shape[1], self.num_classes, seed), linear_logits
            self._inputs = lambda c: c.features
        else:
            theta, self._fn = {"scales": torch.ones(self.num_classes)}, scaled_logits
            self._inputs = head_logits
        val = None if val_cache is None else (self._inputs(val_cache), val_cache.labels)
        self.result = retrain(theta, self._fn, self._inputs(train_cache), train_cache.labels,
                              epochs=self.hyper["epochs"], lr=self.hyper["lr"], batch_size=self.hyper["batch"],
                              seed=seed, epoch_images=len(train_cache.labels) // max(1, train_cache.passes),
                              weight_decay=self.hyper["weight_decay"], val=val,
                              on_epoch=None if on_epoch is None else
                              lambda e, theta: on_epoch(e, lambda c: self._fn(theta, self._inputs(c))))
        self.train_images, self.passes = len(train_cache.labels), train_cache.passes

    @torch.no_grad()
    def logits(self, cache: FeatureCache, which: str = "last") -> Tensor:
        theta = self.result.last if which == "last" else self.result.best
        return self._fn(theta, self._inputs(cache))


def _prior_check(fit: DecoupledFit, val_cache: FeatureCache) -> dict:
    """Post-hoc logit adjustment on top of the method, its tau chosen on the validation split over -1..2: a tau
    near 0 says the class-balanced second stage already removed the training prior."""
    base, prior, y = fit.logits(val_cache), log_prior(list(val_cache.train_counts)), val_cache.labels
    accs = [float(((base - float(t) * prior).argmax(1) == y).float().mean()) for t in PRIOR_GRID]
    i = int(np.argmax(accs))
    zero = int(np.argmin(np.abs(PRIOR_GRID)))
    return {"la_tau_chosen_on_val": float(PRIOR_GRID[i]), "val_overall_at_chosen": accs[i],
            "val_overall_at_0": accs[zero], "grid": f"{PRIOR_GRID[0]:g}..{PRIOR_GRID[-1]:g} step 0.05"}


def decoupled_summary(method: str, train_cache: FeatureCache, cache: FeatureCache, params: dict,
                      val_cache: FeatureCache | None) -> dict:
    """A two-stage method's entry in ``metrics.json["methods"]``: ``rule``, lt_kit's fixed rule (the last epoch's
    classifier) and, with a validation split, ``val``, the epoch best on it (the authors' procedure: Kang et al.'s
    code keeps that epoch's classifier), each with test metrics and a ``how`` built from the settings that ran;
    its settings, the seconds the fit took, and the logit-adjustment check on the validation split."""
    from lt_kit.evaluation.summary import prediction_metrics
    fit = DecoupledFit(method, train_cache, params, val_cache)
    m, r = fit.method, fit.result
    def test_metrics(which):
        return prediction_metrics(cache, fit.logits(cache, which).argmax(1).numpy())
    out = {"label": m.label, "strength_name": m.strength, "kind": "two-stage",
           "settings": {**fit.hyper, "momentum": MOMENTUM, "schedule": "cosine",
                        "sampling": f"class-aware, {SAMPLES_PER_CLASS_VISIT} images per class visit"},
           "train_images": fit.train_images, "passes": fit.passes, "seconds": round(r.seconds, 3),
           "rule": {"strength": fit.hyper["epochs"], "how": m.how(fit.hyper, "rule"), "metrics": test_metrics("last")},
           "val": None}
    if val_cache is not None:
        out["val"] = {"strength": r.best_epoch, "val_overall": r.val_curve[r.best_epoch - 1],
                      "how": m.how(fit.hyper, "val"),
                      "val_curve": r.val_curve, "metrics": test_metrics("best")}
        if min(val_cache.train_counts) > 0:     # a class with no training image has no log prior (-inf)
            out["prior_check"] = _prior_check(fit, val_cache)
    return out
