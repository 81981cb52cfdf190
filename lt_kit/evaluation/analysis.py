"""How far to trust a gap, for one run from its feature caches: accuracy under label shift, calibration, and
paired intervals between any two evaluations (maths: ``maths/shift.py``, ``maths/calibration.py``,
``maths/paired.py``; text: ``analysis_text.py``; from a run dir: ``training.score.run_analysis``).

An **evaluation** is one set of test logits, named as ``runs/compare.py`` names it so compare can aggregate it
over seeds: ``softmax`` (the head's own logits), ``tde`` (TDE at the run's alpha, its paper rule),
``METHOD/rule`` and ``METHOD/val`` for every other method (a post-hoc strength, or a two-stage method's epoch),
``tde/val``. Two names exist only here, both depending on the test prior:

- ``METHOD/prior``, **prior-aware**: the strength (epoch, for cRT / LWS) chosen on the validation split
  re-weighted to the test prior (per-class validation accuracies weighted by the prior; the split is balanced);
- ``logit_adjust/oracle``: Menon et al.'s known-prior correction, ``logits - log(train prior) + log(test
  prior)`` on the head's logits, a reference that reads the true test prior, not a method.

Nothing is ever chosen on the test set: strengths come from the paper rule or the validation split, and a run
without one says "no validation split" in the val and prior-aware rows.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from lt_kit.errors import LtKitError
from lt_kit.evaluation.decoupled import DecoupledFit
from lt_kit.evaluation.features import FeatureCache
from lt_kit.evaluation.summary import MethodEvaluator, choose_on_val, one_thread, row_name
from lt_kit.maths.calibration import ECE_BINS, at_bound, calibration, fit_temperature
from lt_kit.maths.metrics import per_class_accuracy, shot_groups
from lt_kit.maths.paired import mcnemar_exact, paired_bootstrap, seed_gaps
from lt_kit.maths.shift import (
    DEFAULT_PRIORS,
    choose_for_prior,
    known_prior_shift,
    named_prior,
    prior_names,
    prior_weighted_accuracy,
    weights_prior,
)

NO_VAL = "no validation split"
GIVEN = "given"                         # the name of a prior given as class weights


@dataclass
class Evaluation:
    """One evaluation at a fixed strength: its test logits and, with a validation split, the validation
    logits at the same strength (the temperature is fitted on those)."""
    name: str                           # compare's name: softmax, tde, tde/val, logit_adjust/rule, crt/val ...
    method: str | None                  # registry name; None: the head's own logits
    how: str                            # "" (head's own), "rule" or "val"
    strength: float | None
    label: str                          # the results table's row name
    test: Tensor                        # (N, C)
    val: Tensor | None                  # (N_val, C), None without a validation split


@dataclass
class Family:
    """A method's strengths (ascending ``grid``: alpha, tau, or a two-stage method's epochs), for the prior-aware
    choice: per-class validation accuracy over the grid, and per-class test accuracy at any grid strength."""
    method: str
    strength_name: str
    grid: np.ndarray
    test_per_class: Callable[[float], np.ndarray]       # strength -> (C,) on the test set
    val_grid: Callable[[], np.ndarray] | None           # () -> (S, C) on the validation split; None without one


@dataclass
class Analysis:
    """Every evaluation of one run (``evaluations``, in table order), the methods' strength families, and why
    a method or row is missing (``unavailable``: name -> reason). Build with :func:`analyse`."""
    params: dict
    test: FeatureCache
    val: FeatureCache | None
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    families: dict[str, Family] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    _per_class: dict = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return self.test.weight.shape[0]

    def per_class(self, logits: Tensor, key=None) -> np.ndarray:
        """(C,) per-class test accuracy of ``logits`` (kept under ``key`` when one is given)."""
        if key is not None and key in self._per_class:
            return self._per_class[key]
        acc = _per_class(logits, self.test)
        if key is not None:
            self._per_class[key] = acc
        return acc

    def correct(self, name: str) -> np.ndarray:
        """(N,) whether evaluation ``name`` gets each test image right."""
        return (self.evaluations[name].test.argmax(1) == self.test.labels).numpy()

    def prior_choice(self, method: str, prior: np.ndarray) -> float:
        """The strength of ``method`` whose validation accuracy weighted by ``prior`` is best (first of ties,
        the smallest strength); reads the validation split only."""
        f = self.families[method]
        if f.val_grid is None:
            raise LtKitError(f"{method}/prior needs a validation split; this run has none")
        return float(f.grid[choose_for_prior(f.val_grid(), prior)])

    def names(self) -> list[str]:
        """The evaluations at a fixed strength, in table order (``softmax``, then each method's rule and val)."""
        return list(self.evaluations)


def _per_class(logits: Tensor, cache: FeatureCache) -> np.ndarray:
    """(C,) per-class accuracy of ``logits`` on ``cache``'s images."""
    with one_thread():
        return per_class_accuracy(logits.argmax(1).numpy(), cache.labels.numpy(), cache.weight.shape[0])


def _add_posthoc(a: Analysis, m, test: FeatureCache, val: FeatureCache | None) -> None:
    """A post-hoc method's rule and val evaluations and its family (the grid the validation split chooses from)."""
    ev_t = MethodEvaluator(test, m.name)
    ev_v = MethodEvaluator(val, m.name) if val is not None else None
    head, loss = test.head, a.params.get("loss", "ce")
    rule = m.check(m.rule(a.params["alpha"]))
    try:
        rule_logits = ev_t.logits(rule)
    except ValueError as e:             # e.g. logit adjustment with a class that has no training image
        a.unavailable[m.name] = str(e)
        return
    grid = m.grid()
    val_grid = None if ev_v is None else functools.cache(lambda: np.stack([_per_class(ev_v.logits(s), val)
                                                                          for s in grid]))
    a.families[m.name] = Family(m.name, m.strength, grid, lambda s: a.per_class(ev_t.logits(s), key=(m.name, s)),
                                val_grid)
    name = "tde" if m.name == "tde" else f"{m.name}/rule"     # TDE's rule is the run's alpha: compare's "tde"
    a.evaluations[name] = Evaluation(name, m.name, "rule", rule, row_name(head, m.name, rule, loss=loss),
                                     rule_logits, ev_v.logits(rule) if ev_v else None)
    if ev_v is None:
        a.unavailable[f"{m.name}/val"] = NO_VAL
        return
    s = choose_on_val(val, m.name)["strength"]
    a.evaluations[f"{m.name}/val"] = Evaluation(f"{m.name}/val", m.name, "val", s,
                                                row_name(head, m.name, s, "val", loss=loss), ev_t.logits(s),
                                                ev_v.logits(s))


def _add_decoupled(a: Analysis, m, test: FeatureCache, val: FeatureCache | None, train: FeatureCache | None) -> None:
    """A two-stage method fitted on the training-feature cache: its last epoch (rule), the epoch best on the
    validation split (val, as metrics.json records it), and every epoch's per-class test and validation accuracy
    (the family the prior-aware row chooses from; no epoch's classifier is kept)."""
    if train is None:
        a.unavailable[m.name] = "no training-feature cache (train_feature_passes=0)"
        return
    grids: dict[str, list] = {"test": [], "val": []}

    def record(_epoch, logits_of):
        grids["test"].append(_per_class(logits_of(test), test))
        if val is not None:
            grids["val"].append(_per_class(logits_of(val), val))
    fit = DecoupledFit(m.name, train, a.params, val, on_epoch=record)
    head, loss = test.head, a.params.get("loss", "ce")
    epochs = fit.hyper["epochs"]
    test_grid, val_grid = np.stack(grids["test"]), np.stack(grids["val"]) if val is not None else None
    a.families[m.name] = Family(m.name, m.strength, np.arange(1, epochs + 1, dtype=np.float64),
                                lambda e: test_grid[int(e) - 1], None if val is None else lambda: val_grid)
    a.evaluations[f"{m.name}/rule"] = Evaluation(
        f"{m.name}/rule", m.name, "rule", epochs, row_name(head, m.name, epochs, loss=loss), fit.logits(test, "last"),
        fit.logits(val, "last") if val is not None else None)
    if val is None:
        a.unavailable[f"{m.name}/val"] = NO_VAL
        return
    best = fit.result.best_epoch
    a.evaluations[f"{m.name}/val"] = Evaluation(f"{m.name}/val", m.name, "val", best,
                                                row_name(head, m.name, best, "val", loss=loss),
                                                fit.logits(test, "best"), fit.logits(val, "best"))


def analyse(params: dict, caches: dict) -> Analysis:
    """Every evaluation of a run from its ``caches`` ({"test", "val", "train"}, as ``training.score.run_caches``
    gives them; "val" / "train" may be None) and its resolved ``params`` (alpha, seed, the two-stage settings).
    The two-stage methods are fitted here (seconds on a CPU), with the run's seed, as ``metrics.json``'s were."""
    from lt_kit.methods import decoupled_for, head_logits, methods_for
    test, val, train = caches["test"], caches.get("val"), caches.get("train")
    a = Analysis(params, test, val)
    a.evaluations["softmax"] = Evaluation("softmax", None, "", None, row_name(test.head, None,
                                          loss=params.get("loss", "ce")), head_logits(test),
                                          head_logits(val) if val is not None else None)
    for m in methods_for(test.head):
        _add_posthoc(a, m, test, val)
    for m in decoupled_for(test.head):
        _add_decoupled(a, m, test, val, train)
    return a


def single_threaded(fn):
    """Run ``fn`` on one torch thread: the tables are many small ops, each of which would otherwise wait for a
    second thread on a busy machine (``summary.one_thread``; a smoke run's calibration table: 3.6 s -> 0.04 s on
    a busy 2-core machine)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with one_thread():
            return fn(*args, **kwargs)
    return run


# --------------------------------------------------------------------------- label shift
def resolve_priors(train_counts: Sequence[float], names: Sequence[str] | None = None,
                   weights: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """The priors to score, by name: ``names`` (``"all"``: every protocol prior; default: ``DEFAULT_PRIORS``
    unless ``weights`` are given), then ``weights`` as the prior named ``given``."""
    names = list(names or ([] if weights is not None else DEFAULT_PRIORS))
    if "all" in names:
        names = [n for n in dict.fromkeys([*prior_names(), *names]) if n != "all"]
    out = {n: named_prior(n, train_counts) for n in dict.fromkeys(names)}
    if weights is not None:
        out[GIVEN] = weights_prior(weights, len(train_counts))
    return out


@single_threaded
def shift_table(a: Analysis, priors: Sequence[str] | None = None, weights: Sequence[float] | None = None) -> dict:
    """Accuracy of every evaluation under every test prior (prior-weighted per-class test accuracy, see
    ``maths/shift.py``). Returns ``{"priors": {name: [C weights]}, "rows": [row, ...]}``, a row being
    ``{"evaluation", "label", "kind" ("fixed", "prior" or "oracle"), "strength_name", "strength" (fixed rows),
    "cells": {prior: {"accuracy", "strength"}} (None when unavailable), "why" (None, or why not)}``. Row order:
    softmax, then per method its rule, val and prior-aware rows (logit adjustment's oracle after them)."""
    counts = a.test.train_counts
    ps = resolve_priors(counts, priors, weights)
    rows = [_fixed_row(a, "softmax")]
    for name in _method_order(a):
        f = a.families.get(name)
        if f is None:
            rows.append({"evaluation": name, "label": name, "kind": "fixed", "strength_name": None, "strength": None,
                         "cells": None, "why": a.unavailable[name]})
            continue
        rows += [_fixed_row(a, "tde" if name == "tde" else f"{name}/rule"), _fixed_row(a, f"{name}/val"),
                 _prior_row(a, f, ps)]
        if name == "logit_adjust":
            rows.append(_oracle_row(a, ps))
    for r in rows:
        if r["kind"] == "fixed" and r["cells"] == {}:
            acc = a.per_class(a.evaluations[r["evaluation"]].test, key=r["evaluation"])
            r["cells"] = {p: {"accuracy": float(prior_weighted_accuracy(acc, w)), "strength": r["strength"]}
                          for p, w in ps.items()}
    return {"priors": {k: v.tolist() for k, v in ps.items()}, "rows": rows}


def _method_order(a: Analysis) -> list[str]:
    from lt_kit.methods import all_method_names
    return [m for m in all_method_names() if m in a.families or m in a.unavailable]


def _fixed_row(a: Analysis, name: str) -> dict:
    e = a.evaluations.get(name)
    f = a.families.get(name.split("/")[0])
    if e is None:
        return {"evaluation": name, "label": name, "kind": "fixed", "strength_name": f.strength_name if f else None,
                "strength": None, "cells": None, "why": a.unavailable.get(name, "not in this run")}
    return {"evaluation": name, "label": e.label, "kind": "fixed", "strength_name": f.strength_name if f else None,
            "strength": e.strength, "cells": {}, "why": None}


def _prior_row(a: Analysis, f: Family, ps: dict) -> dict:
    label = f"{f.method} ({f.strength_name} chosen on the validation split weighted to the prior)"
    row = {"evaluation": f"{f.method}/prior", "label": label, "kind": "prior", "strength_name": f.strength_name,
           "strength": None, "cells": None, "why": NO_VAL if f.val_grid is None else None}
    if f.val_grid is not None:
        row["cells"] = {}
        for p, w in ps.items():
            s = a.prior_choice(f.method, w)
            row["cells"][p] = {"accuracy": float(prior_weighted_accuracy(f.test_per_class(s), w)), "strength": s}
    return row


def _oracle_row(a: Analysis, ps: dict) -> dict:
    """Menon et al.'s known-prior correction on the head's logits (tau = 1): a reference that reads the prior."""
    base = a.evaluations["softmax"].test
    cells = {}
    for p, w in ps.items():
        shift = torch.as_tensor(known_prior_shift(a.test.train_counts, w), dtype=base.dtype)
        cells[p] = {"accuracy": float(prior_weighted_accuracy(a.per_class(base + shift), w)), "strength": 1.0}
    return {"evaluation": "logit_adjust/oracle", "label": "logit adj. with the known test prior (oracle)",
            "kind": "oracle", "strength_name": "tau", "strength": 1.0, "cells": cells, "why": None}


# --------------------------------------------------------------------------- calibration
@single_threaded
def calibration_table(a: Analysis, bins: int = ECE_BINS) -> dict:
    """ECE (``bins`` equal-width bins), NLL and reliability data of every fixed-strength evaluation's softmax
    probabilities, overall and per many / medium / few (the images whose true class is in the split), as they
    are (``raw``) and after a temperature fitted on the validation split for that evaluation (``scaled``; one T
    per method and strength, since TDE's and logit adjustment's logits have their own scale). Returns
    ``{"bins", "thresholds", "rows": [{"evaluation", "label", "strength", "temperature", "temperature_at_bound",
    "raw", "scaled", "why"}]}``; ``raw`` / ``scaled``: ``{"overall", "many", "medium", "few"}`` of
    ``maths.calibration.calibration`` dicts; ``scaled`` and ``temperature`` are None without a validation split
    (``why`` says so)."""
    c = a.test
    groups = shot_groups(c.shot_counts, c.many_threshold, c.few_threshold)
    y = c.labels
    masks = {g: torch.as_tensor(np.isin(y.numpy(), idx)) for g, idx in groups.items()}

    def split(logits, t):
        out = {"overall": calibration(logits, y, t, bins)}
        out.update({g: calibration(logits[m], y[m], t, bins) for g, m in masks.items()})
        return out

    rows = []
    for name in _calibration_names(a):
        e = a.evaluations.get(name)
        if e is None:
            rows.append({"evaluation": name, "label": name, "strength": None, "temperature": None, "raw": None,
                         "scaled": None, "why": a.unavailable.get(name, "not in this run")})
            continue
        t = fit_temperature(e.val, a.val.labels) if e.val is not None else None
        rows.append({"evaluation": name, "label": e.label, "strength": e.strength, "temperature": t,
                     "temperature_at_bound": t is not None and at_bound(t),
                     "raw": split(e.test, 1.0), "scaled": split(e.test, t) if t is not None else None,
                     "why": None if t is not None else f"{NO_VAL}: no temperature fitted"})
    return {"bins": bins, "thresholds": c.thresholds(), "rows": rows}


def _calibration_names(a: Analysis) -> list[str]:
    """softmax, then each method's rule and val rows (those missing too, to say why)."""
    out = ["softmax"]
    for m in _method_order(a):
        out += [m] if m not in a.families else ["tde" if m == "tde" else f"{m}/rule", f"{m}/val"]
    return out


# --------------------------------------------------------------------------- paired gaps
@single_threaded
def paired_gaps(a: Analysis, reference: str = "tde", *, other: Analysis | None = None, seed: int = 0,
                n_resamples: int = 10000, confidence: float = 0.95) -> dict:
    """Every other fixed-strength evaluation against ``reference`` on the same test images: the accuracy gap
    (evaluation minus reference) with its paired-bootstrap ``confidence`` interval (seeded) and McNemar's exact
    p. With ``other`` (another run scored on the same test set: same images, same order), the evaluations are
    that run's, every one of them, against ``reference`` of ``a``: two models compared image by image, as one
    seed of each. Returns ``{"reference", "reference_accuracy", "n_images", "seed", "confidence", "n_resamples",
    "across_runs", "rows": [{"evaluation", "label", "accuracy", "gap", "low", "high", "b", "c", "p", "why"}]}``
    (rows missing from the run carry only ``why``)."""
    if reference not in a.evaluations:
        why = f" ({a.unavailable[reference]})" if reference in a.unavailable else ""
        raise LtKitError(f"evaluation {reference!r} is not in this run{why}; valid: {', '.join(a.names())}")
    if other is not None:
        check_same_test_set(a, other)
    src = a if other is None else other
    ref = a.correct(reference)
    rows = []
    for name in _calibration_names(src):
        if name == reference and other is None:
            continue
        if name not in src.evaluations:
            rows.append({"evaluation": name, "label": name, "why": src.unavailable.get(name, "not in this run")})
            continue
        ok = src.correct(name)
        boot = paired_bootstrap(ok, ref, confidence=confidence, n_resamples=n_resamples, seed=seed)
        rows.append({"evaluation": name, "label": src.evaluations[name].label, "accuracy": float(ok.mean()),
                     **{k: boot[k] for k in ("gap", "low", "high")}, **mcnemar_exact(ok, ref), "why": None})
    return {"reference": reference, "reference_accuracy": float(ref.mean()), "n_images": int(ref.size),
            "seed": seed, "confidence": confidence, "n_resamples": n_resamples, "across_runs": other is not None,
            "rows": rows}


def check_same_test_set(a: Analysis, b: Analysis) -> None:
    """Refuse a paired comparison of two runs that did not score the same test images in the same order (the
    data set, its classes, and every test label position by position)."""
    what = ["dataset"] if a.params.get("dataset") != b.params.get("dataset") else []
    if a.test.class_names != b.test.class_names:
        what.append("classes")
    if a.test.labels.shape != b.test.labels.shape or not torch.equal(a.test.labels, b.test.labels):
        what.append(f"test labels ({a.test.labels.numel()} against {b.test.labels.numel()} images, or another order)")
    if what:
        raise LtKitError(f"a paired gap between two runs needs the same test images in the same order; these "
                         f"differ in {', '.join(what)}. Compare runs of one data set, scored by one lt_kit version")


def seed_gap_table(runs: Sequence[dict]) -> list[dict]:
    """Gaps over a seed group from each run's :func:`paired_gaps` (one reference): per evaluation,
    ``maths.paired.seed_gaps`` of the runs that hold it (``{"evaluation", "n", "mean", "sd", "gaps", "sign",
    "sign_holds", "why"}``; ``why``: the first run's reason when no run holds it)."""
    if len({r["reference"] for r in runs}) > 1:
        raise LtKitError("gaps over seeds need one reference evaluation for every run")
    rows = [row for r in runs for row in r["rows"]]
    out = []
    for name in dict.fromkeys(row["evaluation"] for row in rows):
        mine = [row for row in rows if row["evaluation"] == name]
        gaps = [row["gap"] for row in mine if row["why"] is None]
        out.append({"evaluation": name, **seed_gaps(gaps), "why": None if gaps else mine[0]["why"]})
    return out


# --------------------------------------------------------------------------- over a seed group (compare)
def group_gaps(results: Sequence[tuple[int, dict]], order: Sequence[str] = ()) -> list[dict]:
    """Each evaluation's gap to the reference over a seed group, from each run's :func:`paired_gaps` (one
    reference) paired with the run's seed. A row: ``{"evaluation", "reference" (True for the reference's own row,
    gap 0 in every seed), "per_seed": [{"seed", "gap", "low", "high", "why"}] (one per run, in the order given),
    **maths.paired.seed_gaps`` over the seeds that hold it``, "why"}`` (``why``: the first run's reason when no
    run holds it). Rows follow ``order`` (compare's), then any other evaluation in the runs' own order."""
    if not results:
        return []
    if len({r["reference"] for _, r in results}) > 1:
        raise LtKitError("gaps over seeds need one reference evaluation for every run")
    reference = results[0][1]["reference"]
    by_name: dict[str, list[dict]] = {reference: [{"seed": s, "gap": 0.0, "low": 0.0, "high": 0.0, "why": None}
                                                  for s, _ in results]}
    for seed, result in results:
        for row in result["rows"]:
            by_name.setdefault(row["evaluation"], []).append(
                {"seed": seed, "why": row["why"], **{k: row.get(k) for k in ("gap", "low", "high")}})
    names = [n for n in order if n in by_name] + [n for n in by_name if n not in order]
    out = []
    for name in names:
        per_seed = by_name[name]
        gaps = [s["gap"] for s in per_seed if s["why"] is None]
        why = None if gaps else next((s["why"] for s in per_seed if s["why"]), "no run holds it")
        out.append({"evaluation": name, "reference": name == reference, "per_seed": per_seed, **seed_gaps(gaps),
                    "why": why})
    return out


def group_shift(tables: Sequence[tuple[int, dict]]) -> dict:
    """Label shift over a seed group, from each run's :func:`shift_table` (the same priors) paired with the run's
    seed: ``{"priors": [names], "seeds": [...], "rows": [{"evaluation", "kind", "strength_name", "strengths"
    (each seed's fixed strength, None where it has none), "cells": {prior: {"n", "mean", "sd", "values",
    "strengths"}} (None when no run holds the row), "why"}]}``; mean and sample sd over the runs that hold the
    row (``runs.compare.mean_std``), ``values`` / ``strengths``: each such run's accuracy and chosen strength."""
    from lt_kit.runs.compare import mean_std
    if not tables:
        return {"priors": [], "seeds": [], "rows": []}
    priors = list(tables[0][1]["priors"])
    if any(list(t["priors"]) != priors for _, t in tables):
        raise LtKitError("label shift over seeds needs the same priors for every run")
    rows: dict[str, list[dict]] = {}
    for _, table in tables:
        for row in table["rows"]:
            rows.setdefault(row["evaluation"], []).append(row)
    out = []
    for name, mine in rows.items():
        held = [r for r in mine if r["cells"] is not None]
        cells = None
        if held:
            cells = {}
            for p in priors:
                values = [r["cells"][p]["accuracy"] for r in held]
                n, mean, sd = mean_std(values)
                cells[p] = {"n": n, "mean": mean, "sd": sd, "values": values,
                            "strengths": [r["cells"][p]["strength"] for r in held]}
        out.append({"evaluation": name, "kind": mine[0]["kind"], "strength_name": mine[0]["strength_name"],
                    "strengths": [r["strength"] for r in mine], "cells": cells,
                    "why": None if held else mine[0]["why"]})
    return {"priors": priors, "seeds": [s for s, _ in tables], "rows": out}
