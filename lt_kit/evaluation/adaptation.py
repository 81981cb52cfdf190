"""When the test prior is unknown: estimate it from the unlabelled test images, adapt every method to it, and
measure how close that comes to knowing it. For one run, from its ``Analysis`` (``evaluation/analysis.py``;
``training.score.run_analysis``); the maths are ``maths/draws.py`` and ``maths/prior_estimation.py``.

For each test prior (``maths/shift.py``'s names), ``draws`` test sets are sub-sampled from the balanced test set
(SADE's construction, ``maths.draws``). On each drawn set, read without its labels:

- **EM** (Saerens et al. 2002) reads calibrated posteriors. The head's logits z lean toward the training prior
  by an amount no one knows (logit adjustment and the shift table's oracle assume exactly ``log(train prior)``),
  so the calibration is fitted on the balanced validation split, which knows its prior:
  ``softmax((z - beta * log(train prior)) / T)`` with (beta, T) minimising the validation NLL
  (``maths.prior_estimation.fit_balanced_calibration``: beta on 0 .. 2 by 0.25, T by
  ``maths.calibration.fit_temperature``). That model's posteriors are calibrated under the validation split's
  prior, which EM is given as its reference; EM starts from the training prior, as in Saerens et al.
- **BBSE** (Lipton et al. 2018) reads the hard predictions of the same model (T changes none) and its confusion
  matrix measured on the validation split (see ``maths/prior_estimation.py`` for why the validation prior, not
  the training prior, is the source prior of BBSE's weights).
- **oracle**: the drawn set's true class frequencies (the draw's class counts, normalised).

Each adapted method is scored with each prior estimate on the same drawn images:

- ``logit_adjust/shift``: Menon et al.'s correction with the estimate, ``logits - log(train prior) + log q^``
  (``maths.shift.known_prior_shift``), on the head's logits; unadapted: ``logit_adjust/rule`` (q^ uniform);
- ``METHOD/prior`` for every post-hoc method of the head (TDE's alpha, logit adjustment's and tau-norm's tau): the
  strength chosen on the validation split re-weighted to q^ (``Analysis.prior_choice``, the shift table's
  prior-aware choice, over the method's validation grid); unadapted: ``METHOD/val``.
  cRT and LWS have no such row: their epochs' classifiers are not kept, and a drawn set needs per-image
  predictions (the shift table's ``crt/prior`` rows score per-class accuracy on the whole test set instead).

Every fixed evaluation (``softmax``, ``tde``, ``METHOD/rule``, ``METHOD/val``, cRT's and LWS's) is scored on the
same draws as a baseline. Accuracy is the drawn set's plain accuracy; mean and sample sd over the draws.

A run without a validation split is refused: the temperature, the confusion matrix and the prior-aware strengths
are all measured on it (an EM on uncalibrated posteriors would be a different estimator, so it is not offered).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lt_kit.errors import LtKitError
from lt_kit.evaluation.analysis import Analysis, resolve_priors, single_threaded
from lt_kit.evaluation.summary import MethodEvaluator
from lt_kit.maths.calibration import at_bound
from lt_kit.maths.draws import DEFAULT_DRAWS, draw_test_sets
from lt_kit.maths.prior_estimation import (
    Calibration,
    bbse_prior,
    confusion_matrix,
    em_prior,
    fit_balanced_calibration,
    tv_distance,
)
from lt_kit.maths.shift import known_prior_shift

NEEDS_VAL = ("adapt needs a validation split, and this run has none: EM's temperature, BBSE's confusion matrix and "
             "the prior-aware strengths are all measured on it (train with --set val_per_class=N)")
ESTIMATORS = ("em", "bbse")
COLUMNS = ("unadapted", "em", "bbse", "oracle")
_SHOWN = {"unadapted": "unadapted", "em": "EM", "bbse": "BBSE", "oracle": "oracle"}
UNINFORMATIVE = 0.9         # a validation NLL above this share of log C (a uniform guess's) gets a warning line


@dataclass
class PriorEstimators:
    """What EM and BBSE read from a run: nothing of the test set but its logits (no test label)."""
    train_prior: np.ndarray             # (C,) training class frequencies: EM's start
    val_prior: np.ndarray               # (C,) the validation split's class frequencies: the model's reference prior
    calibration: Calibration            # (beta, T) fitted on the validation split
    probs: np.ndarray                   # (N, C) calibrated test posteriors under the validation prior
    predictions: np.ndarray             # (N,) the calibrated model's hard predictions on the test images
    confusion: np.ndarray               # (C, C) its joint confusion on the validation split
    val_images: int

    def estimate(self, idx: np.ndarray) -> dict:
        """The test prior of the images ``idx`` by each estimator: ``{"em": (C,), "bbse": (C,),
        "em_iterations": int, "em_converged": bool}``."""
        em = em_prior(self.probs[idx], self.val_prior, init=self.train_prior)
        return {"em": em.prior, "bbse": bbse_prior(self.predictions[idx], self.confusion),
                "em_iterations": em.iterations, "em_converged": em.converged}


def prior_estimators(a: Analysis) -> PriorEstimators:
    """The estimators' inputs for run ``a`` (see the module text); ``LtKitError`` without a validation split."""
    if a.val is None:
        raise LtKitError(NEEDS_VAL)
    head = a.evaluations["softmax"]
    return estimators_from_logits(head.test, head.val, a.val.labels, a.test.train_counts, a.test.class_names)


def estimators_from_logits(test_logits, val_logits, val_labels, train_counts, class_names) -> PriorEstimators:
    """The estimators' inputs from the head's own logits on the test images and on the labelled validation split
    (``methods.head_logits`` of each cache): the calibration fitted on the validation split, the test images'
    calibrated posteriors and hard predictions, the validation confusion matrix. No test label is read."""
    counts = np.asarray(train_counts, dtype=np.float64)
    c = len(counts)
    if (counts <= 0).any():
        raise LtKitError(f"adapt needs every class in the training split (class "
                         f"{class_names[int(np.argmin(counts))]} has no training image)")
    y_val = np.asarray(val_labels)
    val_counts = np.bincount(y_val, minlength=c)[:c]
    if (val_counts == 0).any():
        raise LtKitError(f"adapt needs every class in the validation split (class "
                         f"{class_names[int(np.argmin(val_counts))]} has no validation image)")
    train_prior = counts / counts.sum()
    log_prior = torch.as_tensor(np.log(train_prior))
    cal = fit_balanced_calibration(val_logits, torch.as_tensor(y_val), log_prior.numpy())
    test = test_logits.double() - cal.beta * log_prior
    val = val_logits.double() - cal.beta * log_prior
    return PriorEstimators(train_prior, val_counts / val_counts.sum(), cal,
                           torch.softmax(test / cal.temperature, dim=1).numpy(), test.argmax(1).numpy(),
                           confusion_matrix(val.argmax(1).numpy(), y_val, c), len(y_val))


def check_estimator(name: str) -> str:
    """``name`` if it is one of :data:`ESTIMATORS`, else one line naming them."""
    if name not in ESTIMATORS:
        raise LtKitError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {name!r}")
    return name


@dataclass
class DrawnEstimate:
    """One test set drawn to the prior ``source`` and that prior as an estimator reads it from the drawn images
    (the explorer's "estimated" test prior)."""
    source: str                 # the prior the drawn set has (a maths.shift name)
    estimator: str              # em or bbse
    seed: int
    size: int                   # images in the drawn set
    estimate: np.ndarray        # (C,) q^, read from the drawn images' logits alone
    true: np.ndarray            # (C,) the drawn set's class frequencies

    @property
    def error(self) -> float:
        """Total variation distance between the estimate and the drawn set's class frequencies."""
        return tv_distance(self.estimate, self.true)

    def describe(self) -> str:
        return (f"{_SHOWN[self.estimator]} from {self.size} unlabelled test images drawn to {self.source} (seed "
                f"{self.seed}), error TV {self.error:.3f}")


def estimate_from_draw(est: PriorEstimators, test_labels, source: str, *, estimator: str = "em", seed: int = 0,
                       class_names=None) -> DrawnEstimate:
    """Draw one test set to the prior ``source`` (``maths.draws``; the labels pick the images, as SADE's
    sub-sampling does) and estimate its prior with ``estimator`` from those images' logits only."""
    from lt_kit.maths.shift import named_prior
    check_estimator(estimator)
    y = np.asarray(test_labels)
    c = len(est.train_prior)
    counts, (idx,) = draw_test_sets(y, named_prior(source, est.train_prior), c, draws=1, seed=seed,
                                    class_names=class_names, what=f"a {source} draw")
    return DrawnEstimate(source, estimator, seed, int(counts.sum()), est.estimate(idx)[estimator],
                         counts / counts.sum())


@dataclass
class _Adapted:
    name: str
    label: str
    strength_name: str | None
    unadapted: str                                          # the evaluation its unadapted column scores
    strength: Callable[[np.ndarray], float | None]          # prior -> strength (None: no strength chosen)
    correct: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (prior, idx) -> (len(idx),) bool


def _adapted_methods(a: Analysis) -> list[_Adapted]:
    from lt_kit.methods import POSTHOC
    y = a.test.labels
    out = []
    if "logit_adjust/rule" in a.evaluations:
        base = a.evaluations["softmax"].test

        def shifted(q, idx):
            with np.errstate(divide="ignore"):          # a class BBSE clipped to 0: -inf, never predicted
                shift = torch.as_tensor(known_prior_shift(a.test.train_counts, q), dtype=base.dtype)
            return ((base[idx] + shift).argmax(1) == y[idx]).numpy()
        out.append(_Adapted("logit_adjust/shift", "logit adj. with the prior: logits - log train prior + log q",
                            None, "logit_adjust/rule", lambda q: None, shifted))
    for m in POSTHOC:
        f = a.families.get(m)
        if f is None or f.val_grid is None or f"{m}/val" not in a.evaluations:
            continue
        ev = MethodEvaluator(a.test, m)
        cache: dict[float, np.ndarray] = {}

        def correct_at(q, idx, m=m, ev=ev, cache=cache):
            s = a.prior_choice(m, q)
            if s not in cache:
                cache[s] = (ev.logits(s).argmax(1) == y).numpy()
            return cache[s][idx]
        out.append(_Adapted(f"{m}/prior", f"{m} ({f.strength_name} chosen on the validation split weighted to q)",
                            f.strength_name, f"{m}/val", lambda q, m=m: a.prior_choice(m, q), correct_at))
    return out


def _stats(values: list) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
            "values": v.tolist()}


@single_threaded
def adaptation_table(a: Analysis, priors: Sequence[str] | None = None, *, draws: int = DEFAULT_DRAWS,
                     seed: int = 0) -> dict:
    """Every method adapted to each prior estimate, on ``draws`` sub-sampled test sets per prior (``priors``:
    names as ``shift_table`` takes them, default ``maths.shift.DEFAULT_PRIORS``; draw k seeded ``seed + k``).

    Returns ``{"draws", "seed", "test_images", "val_images", "beta", "temperature", "temperature_at_bound",
    "val_nll", "uniform_nll" (the calibration EM and BBSE read, fitted on the validation split; log C),
    "priors": {name: {"prior": [C], "counts": [C], "size", "true": [C]}},
    "errors": {prior: {"none": TV of the uniform guess, "em": stats, "bbse": stats, "em_iterations": [..],
    "em_converged": bool, "em_mean": [C], "bbse_mean": [C]}},
    "rows": [{"name", "label", "kind" ("adapted" / "fixed"), "strength_name", "unadapted",
    "cells": {prior: {column: stats}}, "strengths": {prior: {column: [per draw]}}}], "unavailable": {name: why}}``;
    stats: ``{"mean", "sd", "values"}`` (accuracy, or TV error, per draw; sd NaN for one draw). Adapted rows
    have the columns ``unadapted``, ``em``, ``bbse``, ``oracle``; fixed rows ``unadapted`` only."""
    if draws < 1:
        raise LtKitError(f"--draws must be >= 1, got {draws}")
    if seed < 0:
        raise LtKitError(f"--seed must be >= 0, got {seed}")
    est = prior_estimators(a)
    c = a.num_classes
    y = a.test.labels.numpy()
    ps = resolve_priors(a.test.train_counts, priors)
    sets = {p: draw_test_sets(y, w, c, draws=draws, seed=seed, class_names=a.test.class_names,
                              what=f"a {p} draw") for p, w in ps.items()}    # refused before any work
    adapted = _adapted_methods(a)
    fixed = {name: a.correct(name) for name in a.names()}
    rows = [{"name": m.name, "label": m.label, "kind": "adapted", "strength_name": m.strength_name,
             "unadapted": m.unadapted, "cells": {}, "strengths": {}} for m in adapted]
    rows += [{"name": n, "label": a.evaluations[n].label, "kind": "fixed", "strength_name": None,
              "unadapted": n, "cells": {}, "strengths": {}} for n in fixed]
    out_priors, errors = {}, {}
    for p, w in ps.items():
        counts, idxs = sets[p]
        true = counts / counts.sum()
        out_priors[p] = {"prior": w.tolist(), "counts": counts.tolist(), "size": int(counts.sum()),
                         "true": true.tolist()}
        estimates = [est.estimate(idx) for idx in idxs]
        errors[p] = {"none": tv_distance(np.full(c, 1.0 / c), true),
                     **{k: _stats([tv_distance(e[k], true) for e in estimates]) for k in ESTIMATORS},
                     "em_iterations": [e["em_iterations"] for e in estimates],
                     "em_converged": all(e["em_converged"] for e in estimates),
                     **{f"{k}_mean": np.mean([e[k] for e in estimates], 0).tolist() for k in ESTIMATORS}}
        for m, row in zip(adapted, rows):
            acc = {col: [] for col in COLUMNS}
            chosen = {col: [] for col in COLUMNS}
            for idx, e in zip(idxs, estimates):
                acc["unadapted"].append(float(fixed[m.unadapted][idx].mean()))
                chosen["unadapted"].append(a.evaluations[m.unadapted].strength if m.strength_name else None)
                for col, q in (("em", e["em"]), ("bbse", e["bbse"]), ("oracle", true)):
                    acc[col].append(float(m.correct(q, idx).mean()))
                    chosen[col].append(m.strength(q))
            row["cells"][p] = {col: _stats(v) for col, v in acc.items()}
            row["strengths"][p] = chosen
        for row in rows[len(adapted):]:
            row["cells"][p] = {"unadapted": _stats([float(fixed[row["name"]][idx].mean()) for idx in idxs])}
    cal = est.calibration
    return {"draws": draws, "seed": seed, "test_images": len(y), "val_images": est.val_images,
            "beta": cal.beta, "temperature": cal.temperature, "temperature_at_bound": at_bound(cal.temperature),
            "val_nll": cal.nll, "uniform_nll": math.log(c),
            "priors": out_priors, "errors": errors, "rows": rows,
            "unavailable": dict(a.unavailable)}


# --------------------------------------------------------------------------- text
def _pm(s: dict | None, scale: float = 100.0, digits: int = 2) -> str:
    if s is None:
        return "-"
    sd = "-" if s["sd"] != s["sd"] else f"{scale * s['sd']:.{digits}f}"
    return f"{scale * s['mean']:.{digits}f} ± {sd}"


def _span(values: list) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    lo, hi = min(v), max(v)
    return f"{lo:g}" if lo == hi else f"{lo:g}..{hi:g}"


def format_adaptation(table: dict) -> str:
    """Per prior: the draws' size, each estimator's TV error, then methods (rows) x unadapted / EM / BBSE /
    oracle (accuracy in percent, mean ± sd over the draws) and the strengths the prior-aware rows chose."""
    d, s = table["draws"], table["seed"]
    t = f"{table['temperature']:.3g}" + (" (at the search bound)" if table["temperature_at_bound"] else "")
    lines = [f"{d} draw{'s' * (d != 1)} per prior from the {table['test_images']} test images (SADE's sub-sampling; "
             f"draw k seeded {s} + k)",
             f"EM and BBSE read softmax((logits - beta log train prior) / T), beta = {table['beta']:g}, T = {t} "
             f"(validation NLL {table['val_nll']:.3f}, {table['val_images']} images); BBSE's confusion matrix is "
             "measured on the validation split"]
    if table["val_nll"] > UNINFORMATIVE * table["uniform_nll"]:
        lines.append(f"warning: that validation NLL is near a uniform guess's ({table['uniform_nll']:.3f}): the "
                     "calibrated model tells the classes little apart, so EM's likelihood is flat and its estimate "
                     "drifts (a better-trained run gives EM something to read)")
    rows = table["rows"]
    width = max(24, *(len(r["name"]) + 2 for r in rows))
    col = 17
    for p, info in table["priors"].items():
        err = table["errors"][p]
        counts = info["counts"]
        lines += ["", f"{p}: {d} draw{'s' * (d != 1)} of {info['size']} images each (class counts "
                  f"{max(counts)} .. {min(counts)})",
                  f"  {'prior error (TV)':<{width - 2}}{'none ' + format(err['none'], '.3f'):>{col}}"
                  f"{'EM ' + _pm(err['em'], 1, 3):>{col + 4}}{'BBSE ' + _pm(err['bbse'], 1, 3):>{col + 4}}"
                  + ("" if err["em_converged"] else "  (EM stopped at its iteration limit)"),
                  f"  {'accuracy (%)':<{width - 2}}" + "".join(f"{_SHOWN[c]:>{col}}" for c in COLUMNS)]
        for r in rows:
            cells = r["cells"][p]
            lines.append(f"  {r['name']:<{width - 2}}" + "".join(f"{_pm(cells.get(c)):>{col}}" for c in COLUMNS))
        for r in rows:
            if r["kind"] == "adapted" and r["strength_name"]:
                ch = r["strengths"][p]
                lines.append(f"  {r['name']} {r['strength_name']} chosen: "
                             + ", ".join(f"{_SHOWN[c]} {_span(ch[c])}" for c in COLUMNS))
    lines += ["", "accuracy (%) of each drawn set, mean ± sd over the draws; unadapted = as the method is (its rule, "
              "or its validation choice for a balanced test set); EM / BBSE = adapted to that estimate of the "
              "drawn set's prior, read from its unlabelled images; oracle = adapted to its true class frequencies",
              "logit_adjust/shift = logits - log train prior + log q (Menon et al.); METHOD/prior = strength chosen "
              "on the validation split weighted to q; other rows are not adapted (baselines)",
              "prior error = total variation distance to the drawn set's class frequencies; none = assuming a "
              "balanced test set"]
    for name, why in table["unavailable"].items():
        lines.append(f"not in this table: {name} ({why})")
    return "\n".join(lines)
