"""Every method's metrics from a feature cache (``features.py``), the run's ``metrics.json`` and its tables.

``MethodEvaluator`` turns any post-hoc method at any strength into logits in milliseconds (``AlphaEvaluator``:
TDE, one multiply-add).
Strengths are chosen on the validation split (:func:`choose_on_val`); the test-chosen optimum is kept
only "for reading".
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import Tensor

from lt_kit.evaluation.features import FeatureCache
from lt_kit.maths.metrics import head_tail_accuracy, per_class_accuracy, shot_accuracy
from lt_kit.maths.strength import check_alpha


def prediction_metrics(cache: FeatureCache, preds: np.ndarray) -> dict:
    """many/medium/few/overall, head/tail (median rule), per-class accuracy and prediction counts of ``preds``
    (one class per cached image). The splits are counted on ``cache.shot_counts``: a list data set's training
    list as published, before its validation hold-out (``FeatureCache.group_counts``)."""
    labels, c = cache.labels.numpy(), cache
    num_classes = cache.weight.shape[0]
    out = shot_accuracy(preds, labels, c.shot_counts, c.many_threshold, c.few_threshold)
    out["head_tail"] = head_tail_accuracy(preds, labels, c.shot_counts)
    out["per_class"] = per_class_accuracy(preds, labels, num_classes).tolist()
    out["pred_counts"] = np.bincount(preds, minlength=num_classes).tolist()
    return out


@contextlib.contextmanager
def one_thread():
    """Per-alpha work is a few small ops: one thread avoids waiting for a second one to be scheduled
    (20 ms -> 3 ms per alpha on a busy 2-core machine, bench/results/alpha.md)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class MethodEvaluator:
    """Scores a feature cache under one post-hoc method (``methods.POSTHOC``) at any strength; ``None``: the
    head's own logits. The method's ``prepare`` precomputes everything strength-free once."""

    def __init__(self, cache: FeatureCache, method: str | None = None):
        from lt_kit.methods import get_method, head_logits
        self.cache = cache
        self.num_classes = cache.weight.shape[0]
        self.method = get_method(method, cache.head) if method else None
        if self.method is None:
            base = head_logits(cache)
            self._logits = lambda _s: base
        else:
            self._logits = self.method.prepare(cache)
        self.labels_np = cache.labels.numpy()

    def logits(self, strength: float) -> Tensor:
        return self._logits(self.method.check(strength) if self.method else 0.0)

    def predict(self, strength: float) -> np.ndarray:
        with one_thread():
            return self.logits(strength).argmax(1).numpy()

    def metrics(self, strength: float) -> dict:
        """many/medium/few/overall, head/tail (median rule) and per-class accuracy at ``strength``."""
        return prediction_metrics(self.cache, self.predict(strength))

    def overall(self, strength: float) -> float:
        """Micro accuracy only (the quick path for choosing a strength)."""
        return float((self.predict(strength) == self.labels_np).mean())

    def sweep(self, strengths) -> list[dict]:
        key = self.method.strength if self.method else "strength"
        return [{key: float(a), **self.metrics(a)} for a in strengths]


class AlphaEvaluator(MethodEvaluator):
    """TDE's evaluator: ``logits(alpha)`` is ``base - alpha * effect`` (Eq. 8) on the causal-norm head; any alpha
    (also negative, for reading) is accepted. On another head alpha has no effect."""

    def __init__(self, cache: FeatureCache):
        from lt_kit.methods import applies
        super().__init__(cache, "tde" if applies("tde", cache.head) else None)

    def logits(self, alpha: float) -> Tensor:
        return self._logits(check_alpha(alpha))

    def sweep(self, alphas) -> list[dict]:
        return [{"alpha": float(a), **self.metrics(a)} for a in alphas]


TEST_CHOSEN_NOTE = "for reading, chosen on test"


def choose_on_val(val_cache: FeatureCache, method: str) -> dict:
    """The strength on the method's grid with the best overall accuracy on the (balanced) validation split;
    ties go to the smallest strength. Never looks at the test set."""
    ev = MethodEvaluator(val_cache, method)
    accs = [(ev.overall(s), -s) for s in ev.method.grid()]
    acc, neg = max(accs)
    return {"strength": float(-neg), "val_overall": acc}


def method_summary(cache: FeatureCache, method: str, preset_alpha: float, val_cache: FeatureCache | None) -> dict:
    """One post-hoc method on one run: its paper rule, the validation-chosen strength (None without a
    validation split) with test metrics at each, and the test-chosen optimum (labelled, never a result)."""
    ev = MethodEvaluator(cache, method)
    m = ev.method
    rule = float(m.rule(preset_alpha))
    out = {"label": m.label, "strength_name": m.strength,
           "rule": {"strength": rule, "how": m.rule_text, "metrics": ev.metrics(rule)}, "val": None}
    if val_cache is not None:
        chosen = choose_on_val(val_cache, method)
        out["val"] = {**chosen, "how": f"best overall accuracy on the validation split over {m.strength} in "
                                       f"0..{m.grid_max:g} step {m.grid_step:g}",
                      "metrics": ev.metrics(chosen["strength"])}
    best = max((ev.overall(s), -s) for s in m.grid())
    out["test_chosen"] = {"strength": float(-best[1]), "overall": best[0], "note": TEST_CHOSEN_NOTE}
    return out


def _method_or_reason(cache: FeatureCache, method, alpha: float, val_cache: FeatureCache | None) -> dict:
    """``method_summary``, or why the method cannot score this run (e.g. logit adjustment with a class that
    has no training image: its log prior is -inf)."""
    try:
        return method_summary(cache, method.name, alpha, val_cache)
    except ValueError as e:
        return {"label": method.label, "strength_name": method.strength, "unavailable": str(e)}


def summary(cache: FeatureCache, alpha: float, val_cache: FeatureCache | None = None,
            train_cache: FeatureCache | None = None, params: dict | None = None) -> dict:
    """The run's ``metrics.json``: the alpha used, ``softmax`` (the head's own logits; De-confound for the
    causal head), ``tde`` (None for other heads), each with many/medium/few/overall and per-class accuracy,
    and ``methods``: every post-hoc method that applies to the head (see :func:`method_summary`), then, given
    the training-feature cache and the run's ``params``, every two-stage method (cRT, LWS:
    ``decoupled.decoupled_summary``). Each evaluation is written once: TDE's rule entry names the ``tde`` entry
    (``same_as``) instead of copying it (:func:`rule_metrics` reads either)."""
    from lt_kit.evaluation.decoupled import decoupled_summary
    from lt_kit.methods import applies, decoupled_for, methods_for
    ev = AlphaEvaluator(cache)
    tde = ev.metrics(alpha) if applies("tde", cache.head) else None
    methods = {m.name: _method_or_reason(cache, m, alpha, val_cache) for m in methods_for(cache.head)}
    if train_cache is not None and params is not None:
        methods.update({m.name: decoupled_summary(m.name, train_cache, cache, params, val_cache)
                        for m in decoupled_for(cache.head)})
    if tde is not None and "rule" in methods.get("tde", {}):   # TDE's rule is the run's alpha: the tde entry
        rule = methods["tde"]["rule"]
        del rule["metrics"]
        rule["same_as"] = "tde"
    return {"alpha": float(alpha), "head": cache.head, "softmax": ev.metrics(0.0), "tde": tde,
            "methods": methods,
            "val_images": None if val_cache is None else len(val_cache.labels),
            "train_counts": cache.train_counts, "class_names": cache.class_names,
            **({"group_counts": cache.group_counts} if cache.group_counts is not None else {}),
            "thresholds": cache.thresholds()}


def rule_metrics(metrics: dict, method: str) -> dict:
    """A method's metrics at its paper rule from a run's metrics: its own, or (``same_as``) the top-level entry
    that is the same evaluation (TDE's rule is the run's alpha, the ``tde`` entry), written once."""
    rule = metrics["methods"][method]["rule"]
    return metrics[rule["same_as"]] if "same_as" in rule else rule["metrics"]


def row_name(head: str, method: str | None, strength: float | None = None, how: str = "", loss: str = "ce") -> str:
    """``De-confound``, ``De-confound-TDE (a=1)``, ``Softmax + logit adj. (tau=0.85, val)``, ``LDAM-DRW`` ...
    (a run trained with a loss other than cross-entropy is named by its loss)."""
    from lt_kit.methods import DECOUPLED, HEADS, LOSSES, POSTHOC
    label = LOSSES[loss].label if loss != "ce" and loss in LOSSES else HEADS[head].label if head in HEADS else head
    if method is None:
        return label
    if method in DECOUPLED:             # "Softmax + cRT (epoch=10)": the epoch whose classifier is scored
        return f"{label} + {DECOUPLED[method].label} (epoch={strength:g}{', ' + how if how else ''})"
    m = POSTHOC[method]
    name = f"{label}-TDE" if method == "tde" else f"{label} + {m.label}"
    short = "a" if m.strength == "alpha" else m.strength
    return f"{name} ({short}={strength:g}{', ' + how if how else ''})"


def table_rows(metrics: dict) -> list[tuple[str, dict]]:
    """(row name, metrics) for every result a run's metrics hold: the head's own, then each post-hoc method at
    its paper rule and at its validation-chosen strength. The test-chosen optimum is not a row."""
    from lt_kit.methods import applies
    head, loss = metrics["head"], metrics.get("loss", "ce")
    plain = row_name(head, None, loss=loss)
    if loss == "ce":                       # the reference's wording: "De-confound (alpha=0)"
        plain += " (alpha=0)" if applies("tde", head) else f" ({head} head)"
    rows = [(plain, metrics["softmax"])]
    methods = metrics.get("methods")
    if methods is None:                                     # an older run: TDE at its alpha only
        if metrics.get("tde"):
            rows.append((row_name(head, "tde", metrics["alpha"]), metrics["tde"]))
        return rows
    for name, e in methods.items():
        if "rule" not in e:                 # unavailable on this run (format_table says why)
            continue
        rows.append((row_name(head, name, e["rule"]["strength"], loss=loss), rule_metrics(metrics, name)))
        if e.get("val"):
            rows.append((row_name(head, name, e["val"]["strength"], "val", loss=loss), e["val"]["metrics"]))
    return rows


def format_rows(rows: list[tuple[str, dict]], thresholds: dict, notes: tuple[str, ...] = ()) -> str:
    """Rows of (name, metrics) as a table in percent: many, medium, few, overall as the reference prints them,
    then head / tail (classes above / at or below the median training count)."""
    def pct(v):
        return "   -  " if v != v else f"{100 * v:6.2f}"
    width = max(30, max(len(n) for n, _ in rows) + 2)
    cols = ("many", "medium", "few", "overall", "head", "tail")
    lines = [f"{'':<{width}}" + "".join(f"{c:>9}" for c in cols)]
    for name, m in rows:
        vals = [m[k] for k in cols[:4]] + [m.get("head_tail", {}).get(k, float("nan")) for k in cols[4:]]
        lines.append(f"{name:<{width}}" + "".join(f"{pct(v):>9}" for v in vals))
    lines.append(f"(many: >{thresholds['many']} training images, few: <{thresholds['few']}; head/tail: above / at "
                 "or below the median training count; '-' = no class in that split)")
    if "held_out" in thresholds:          # a list data set's validation split drawn from its training list
        k = thresholds["held_out"]
        lines.append(f"(groups from the training list's counts as published; {k} images per class held out of it "
                     f"for validation, none from a class with {k} or fewer)")
    return "\n".join([*lines, *notes])


def two_stage_note(methods: dict) -> list[str]:
    """The note that names a two-stage method's two rows (none when the run has no such method): the
    ``epoch=N`` row is lt_kit's fixed rule, the ``epoch=N, val`` row the authors' procedure."""
    from lt_kit.methods import DECOUPLED
    present = [DECOUPLED[k] for k in methods if k in DECOUPLED and "rule" in methods[k]]
    if not present:
        return []
    m, val = present[0], any(methods[p.name].get("val") for p in present)
    return [f"{', '.join(p.label for p in present)}: (epoch=N) = {m.rule_label}, the last epoch's classifier"
            + (f"; (epoch=N, val) = {m.val_label}, the epoch best on the validation split, as Kang et al.'s code "
               "keeps it" if val else "")]


def format_table(metrics: dict) -> str:
    """A run's results table; rows: see :func:`table_rows`. Notes say how strengths were chosen and give the
    test-chosen optimum, labelled as such."""
    notes = []
    methods = metrics.get("methods") or {}
    if methods:
        val = metrics.get("val_images")
        notes.append("rule = the paper's fixed strength; " + (f"val = chosen on the {val}-image validation split"
                     if val else "no validation split in this run, so no strength was chosen on one"))
        notes += two_stage_note(methods)
        notes.append(f"{TEST_CHOSEN_NOTE}: " + ", ".join(
            f"{e['label']} {e['strength_name']}={e['test_chosen']['strength']:g} "
            f"({100 * e['test_chosen']['overall']:.2f}%)" for e in methods.values() if "test_chosen" in e))
        notes += [f"{e['label']} not scored: {e['unavailable']}" for e in methods.values() if "unavailable" in e]
    return format_rows(table_rows(metrics), metrics["thresholds"], tuple(notes))
