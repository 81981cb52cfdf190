"""The explorer: a method selector, a strength slider and a test-prior control that re-score the cached test
features and redraw.

Each post-hoc method (``methods.POSTHOC``: TDE's alpha, logit adjustment's tau, tau-normalisation's tau) that
applies to the run's head is one button; its ``MethodEvaluator`` turns a strength into logits in about a
millisecond (TDE: one multiply-add). One Figure is built once and only its artists' data change on each
move, so an update is a few milliseconds of maths plus one Agg render. The figure is an ordinary PNG output
(``display_id``), so it also shows in papermill's output notebook and wherever ipywidgets has no front end;
only the selector, the slider, the prior control and the readout line are widgets.

**The test prior** (``backward50`` .. ``uniform`` .. ``forward50``, the LADE / SADE protocol, ``maths/shift.py``)
re-weights the balanced test set: accuracy under a prior is the prior-weighted mean of per-class accuracies.
Each method's per-class accuracy over its strength grid is computed once, on the test set and on the validation
split, so a prior change is a product of that (S, C) matrix with the (C,) prior: the accuracy-versus-strength
curve, the strength chosen on the validation split re-weighted to the prior, and the best on test (for reading).

**"estimated"**, the control's last entry when the run has a validation split, is the case where nobody knows
the prior: one test set is drawn to ``estimate_from`` (``forward50`` by default, SADE's sub-sampling), and its
prior is estimated from those images' logits alone by EM or BBSE (``evaluation/adaptation.py``). Accuracies are
those expected of a test set with the drawn set's class frequencies (per-class accuracy on the whole test set,
weighted by them; ``lt_kit adapt`` scores the drawn images themselves); the validation split is re-weighted to the
*estimate* to choose the strength (the oracle's choice, knowing the prior, is shown beside it); the estimate is
drawn over the prior.
"""
from __future__ import annotations

import math
import statistics
import struct
import time
import zlib
from pathlib import Path

import numpy as np

from lt_kit.errors import LtKitError
from lt_kit.evaluation.features import FeatureCache
from lt_kit.evaluation.summary import AlphaEvaluator, MethodEvaluator, choose_on_val, one_thread
from lt_kit.maths.metrics import median_groups, per_class_accuracy, shot_groups
from lt_kit.maths.shift import choose_for_prior, named_prior, prior_weighted_accuracy
from lt_kit.maths.tde import rule_of_thumb_alpha
from lt_kit.methods import methods_for
from lt_kit.views.plots import (
    BASE_COLOR,
    PALETTE,
    SPLIT_COLORS,
    TDE_COLOR,
    _class_ticks,
    _pct,
    best_alpha,
    head_to_tail,
    new_figure,
    protocol_priors,
    split_rules,
    sweep_figure,
)

SPLITS = ("many", "medium", "few", "overall", "head", "tail")
UNIFORM = "uniform"
ESTIMATED = "estimated"


def check_test_prior(name: str, *, has_val: bool = True) -> str:
    """``name`` if it is one of the protocol's priors (:func:`plots.protocol_priors`) or ``estimated`` (which
    needs a validation split), else one line naming them."""
    valid = protocol_priors()
    if name == ESTIMATED and not has_val:
        raise LtKitError("test prior 'estimated' needs a validation split (the estimators' calibration and the "
                         "strength's choice are measured on it); this run has none (train with --set "
                         "val_per_class=N, or val_per_class in train.ipynb)")
    if name not in (*valid, ESTIMATED):
        raise LtKitError(f"test prior must be one of {', '.join(valid)} (the LADE / SADE test priors) or "
                         f"{ESTIMATED} (estimated from a drawn test set), got {name!r}")
    return name


class AlphaExplorer:
    """Live per-class / per-split accuracy and prediction counts at any strength of any post-hoc method that
    applies to the run's head, from its feature cache (TDE's alpha first on a causal-norm run), under any of the
    protocol's test priors (``test_prior``; ``uniform``: the balanced test set as it is)."""

    def __init__(self, cache: FeatureCache, *, preset_alpha: float, alpha_max: float = 3.0, step: float = 0.01,
                 run_dir: Path | None = None, val_cache: FeatureCache | None = None, method: str = "",
                 train_cache: FeatureCache | None = None, params: dict | None = None, test_prior: str = UNIFORM,
                 estimate_from: str = "forward50", estimator: str = "em"):
        self.cache, self.run_dir, self.val_cache = cache, run_dir, val_cache
        self.train_cache, self.params = train_cache, params      # for the two-stage methods (cRT, LWS)
        self.preset_alpha, self.alpha_max, self.step = float(preset_alpha), float(alpha_max), float(step)
        self.order = head_to_tail(cache.train_counts)
        self.rules = split_rules(cache.shot_counts, cache.many_threshold, cache.few_threshold)
        # the rule of thumb reads features: the validation split's when there is one, else (labelled) the test's
        src = val_cache if val_cache is not None else cache
        self.rule_source = "validation" if val_cache is not None else "test"
        self.rule_alpha = rule_of_thumb_alpha(src.features, src.direction, src.num_heads)
        self.methods = {m.name: m for m in methods_for(cache.head)}
        self.base = MethodEvaluator(cache).metrics(0.0)          # the head's own logits: strength 0 of every method
        self.update_seconds: list[float] = []       # each update's wall time; its CPU time (a busy machine
        self.update_cpu_seconds: list[float] = []   # stretches the first, not the second)
        self._fig = None
        self.slider = self.label = self.selector = self.prior_control = None
        # the priors, and the class groups the splits weight over (the same counts the metrics split on)
        self.priors = protocol_priors()
        self.prior_weights = {n: named_prior(n, cache.train_counts) for n in self.priors}
        from lt_kit.evaluation.adaptation import check_estimator
        from lt_kit.maths.shift import check_prior_name
        check_estimator(estimator)                 # refused whether or not "estimated" is in view
        check_prior_name(estimate_from)
        self.estimated = None                      # DrawnEstimate: the "estimated" entry (needs a val split)
        self.no_estimate = "no validation split" if val_cache is None else None
        if val_cache is not None:
            try:
                self.estimated = _drawn_estimate(cache, val_cache, estimate_from, estimator)
            except LtKitError as e:               # a test set too small for the draw, a class missing from val
                self.no_estimate = f"test prior 'estimated' is not available: {e}"
                if test_prior == ESTIMATED:
                    raise LtKitError(self.no_estimate) from None
            else:
                self.priors.append(ESTIMATED)
                self.prior_weights[ESTIMATED] = self.estimated.true  # accuracies: the drawn set's own prior
        self._groups = {"overall": np.arange(len(cache.train_counts)),
                        **shot_groups(cache.shot_counts, cache.many_threshold, cache.few_threshold),
                        **median_groups(cache.shot_counts)}
        self._grids: dict[str, dict] = {}          # method -> per-class accuracy over its strengths (test, val)
        self._metrics_at: tuple | None = None      # (method, strength) of self._m: a prior change re-uses it
        self._shift_table: dict | None = None
        self._analysis = None
        self.set_prior(test_prior)
        self.set_method(method or next(iter(self.methods)))

    def set_method(self, name: str) -> None:
        """Switch the slider to post-hoc method ``name``: its evaluator, strength name, paper rule (the
        slider's start), range and validation-chosen strength (None without a validation split)."""
        if name not in self.methods:
            from lt_kit.methods import get_method
            get_method(name, self.cache.head)                   # raises with the reason and the valid pairs
        m = self.methods[name]
        self.method, self.strength_name = name, m.strength
        self.ev = AlphaEvaluator(self.cache) if name == "tde" else MethodEvaluator(self.cache, name)
        self.preset = float(m.rule(self.preset_alpha))
        self.alpha = self.preset                # the strength shown (render's default)
        self.max = self.alpha_max if name == "tde" else m.grid_max
        self.val_strength = choose_on_val(self.val_cache, name)["strength"] if self.val_cache is not None else None

    def set_prior(self, name: str) -> None:
        """Score under test prior ``name`` (one of :attr:`priors`); ``LtKitError`` naming them otherwise."""
        check_test_prior(name, has_val=self.val_cache is not None)
        if name not in self.prior_weights:        # "estimated" when its draw or estimate failed: say why
            raise LtKitError(self.no_estimate)
        self.prior_name, self.prior = name, self.prior_weights[name]

    # ------------------------------------------------------------------ the test prior
    def at_prior(self, m: dict) -> dict:
        """``m`` (``MethodEvaluator.metrics``) under the current test prior: overall, many / medium / few and
        head / tail are each the prior-weighted mean of their classes' accuracies (the prior renormalised
        within the split: that split's accuracy on a test set drawn with the prior), so overall is the splits'
        prior-mass-weighted sum. ``uniform`` gives ``m`` as it is (the balanced test set's own numbers)."""
        if self.prior_name == UNIFORM:
            return m
        acc, p = np.asarray(m["per_class"], dtype=np.float64), self.prior
        w = {k: float(prior_weighted_accuracy(acc[idx], p[idx])) for k, idx in self._groups.items()}
        return {**m, **{k: w[k] for k in ("overall", "many", "medium", "few")},
                "head_tail": {k: w[k] for k in ("head", "tail")}}

    def grid(self, name: str | None = None) -> dict:
        """Per-class accuracy of method ``name`` (default: the current one) over its strengths, computed once:
        ``strengths`` (S,) 0 .. the slider's end in the method's grid step and ``test`` (S, C) on the test set;
        ``val_strengths`` (the grid the validation split chooses from, ``PostHoc.grid``) and ``val`` (S', C)
        on the validation split (None without one)."""
        name = name or self.method
        if name not in self._grids:
            m = self.methods[name]
            top = self.alpha_max if name == "tde" else m.grid_max
            n = int(round(top / m.grid_step))
            strengths = np.round(np.linspace(0.0, n * m.grid_step, n + 1), 6)
            ev = AlphaEvaluator(self.cache) if name == "tde" else MethodEvaluator(self.cache, name)
            out = {"strengths": strengths, "test": _per_class_grid(ev, strengths), "val_strengths": m.grid(),
                   "val": None}
            if self.val_cache is not None:
                out["val"] = _per_class_grid(MethodEvaluator(self.val_cache, name), out["val_strengths"])
            self._grids[name] = out
        return self._grids[name]

    def curve(self, name: str | None = None, prior: str | None = None) -> np.ndarray:
        """(S,) overall test accuracy (%) of method ``name`` over :meth:`grid`'s strengths under ``prior``
        (default: the current one): the (S, C) per-class matrix times the prior."""
        g = self.grid(name)
        w = self.prior if prior is None else self.prior_weights[prior]
        return 100 * prior_weighted_accuracy(g["test"], w)

    def val_choice(self) -> float | None:
        """The current method's strength chosen on the validation split re-weighted to the current prior
        (``maths.shift.choose_for_prior`` over its grid; never the test set); at ``uniform`` the balanced
        choice (:attr:`val_strength`, as metrics.json records it). None without a validation split."""
        if self.val_cache is None:
            return None
        if self.prior_name == UNIFORM:
            return self.val_strength
        g = self.grid()
        chosen_for = self.estimated.estimate if self.prior_name == ESTIMATED else self.prior
        return float(g["val_strengths"][choose_for_prior(g["val"], chosen_for)])

    def oracle_choice(self) -> float | None:
        """Under ``estimated``: the strength the validation split re-weighted to the drawn set's *true* prior
        would choose (knowing the prior), beside :meth:`val_choice`'s from the estimate; None otherwise."""
        if self.prior_name != ESTIMATED:
            return None
        g = self.grid()
        return float(g["val_strengths"][choose_for_prior(g["val"], self.prior)])

    def prior_text(self) -> str:
        """The current prior's name, and under ``estimated`` what was estimated from what."""
        return self.prior_name if self.prior_name != ESTIMATED else f"estimated ({self.estimated.describe()})"

    def test_best(self) -> tuple[float, float]:
        """(strength, accuracy %) of the current method's best overall test accuracy under the current prior,
        the smallest strength of ties: for reading, chosen on test, never a result."""
        y = self.curve()
        i = int(np.argmax(np.where(np.isnan(y), -1.0, y)))
        return float(self.grid()["strengths"][i]), float(y[i])

    def shift_table(self) -> dict:
        """Every evaluation of the run under every protocol prior (``evaluation.analysis.shift_table``: each
        method at its rule, val and prior-aware choice, logit adjustment's known-prior oracle), computed once.
        The two-stage methods are fitted again from the training-feature cache when the run has one."""
        if self._shift_table is None:
            from lt_kit.evaluation.analysis import shift_table
            self._shift_table = shift_table(self.analysis(), protocol_priors())
        return self._shift_table

    def analysis(self):
        """Every evaluation of the run (``evaluation.analysis.analyse``), built once: what the shift and
        adaptation tables read. The two-stage methods are fitted from the training-feature cache when the run
        has one."""
        if self._analysis is None:
            from lt_kit.evaluation.analysis import analyse
            params = {**(self.params or {}), "alpha": self.preset_alpha}
            caches = {"test": self.cache, "val": self.val_cache,
                      "train": self.train_cache if self.params is not None else None}
            self._analysis = analyse(params, caches)
        return self._analysis

    def adaptation_table(self, draws: int, seed: int = 0) -> dict:
        """Every method adapted to the prior EM and BBSE estimate, on ``draws`` sub-sampled test sets per
        protocol prior (``evaluation.adaptation.adaptation_table``); ``LtKitError`` without a validation split."""
        from lt_kit.evaluation.adaptation import adaptation_table
        return adaptation_table(self.analysis(), protocol_priors(), draws=draws, seed=seed)

    def figure_name(self, what: str) -> str:
        """A figure's file name: ``tde_sweep``, or ``tde_sweep_forward50`` under another prior than uniform
        (``tde_sweep_estimated_em_forward50``: the estimator and the drawn set's prior)."""
        if self.prior_name == ESTIMATED:
            return f"{self.method}_{what}_{ESTIMATED}_{self.estimated.estimator}_{self.estimated.source}"
        return f"{self.method}_{what}" + ("" if self.prior_name == UNIFORM else f"_{self.prior_name}")

    @classmethod
    def from_run(cls, run_dir: str | Path, **kw) -> "AlphaExplorer":
        """Load ``run_dir/features.pt`` (and ``val_features.pt`` when the run has a validation split,
        ``train_features.pt`` when it has a training cache); the preset alpha is the run's own ``alpha``."""
        from lt_kit.views.notebook import load_run
        run = load_run(run_dir)
        val, train = run.path / "val_features.pt", run.path / "train_features.pt"
        return cls(run.cache, preset_alpha=run.alpha, run_dir=run.path,
                   val_cache=FeatureCache.load(val) if val.is_file() else None,
                   train_cache=FeatureCache.load(train) if train.is_file() else None, params=run.params, **kw)

    def summary(self) -> dict:
        """Every method on this run (``evaluation.summary.summary``): the post-hoc ones at their rule and
        validation choice, and, when the run has its training-feature cache, cRT and LWS."""
        from lt_kit.evaluation.summary import summary
        return summary(self.cache, self.preset_alpha, self.val_cache, self.train_cache, self.params)

    # ------------------------------------------------------------------ numbers
    def sweep(self, step: float = 0.05) -> list[dict]:
        """The current method over 0 .. its slider's end, ``step`` apart (dicts keyed by the strength's name),
        under the current test prior (:meth:`at_prior`)."""
        n = int(round(self.max / step))
        return [self.at_prior(s) for s in self.ev.sweep(np.linspace(0.0, n * step, n + 1))]

    def split_values(self, m: dict) -> list[float]:
        return [_pct(m["head_tail"][k] if k in ("head", "tail") else m[k]) for k in SPLITS]

    def readout(self, alpha: float, m: dict | None = None) -> str:
        """One line: the accuracies at strength ``alpha`` of the current method (and at 0) under the current
        test prior (``m``: the metrics :meth:`render` returned), and the strength chosen on the validation split
        re-weighted to it, as the label shows."""
        m = m or self.at_prior(self.ev.metrics(alpha))
        def fmt(v):
            return "n/a" if v != v else f"{v:.1f}"
        now, base = self.split_values(m), self.split_values(self.at_prior(self.base))
        parts = [f"{k} {fmt(now[i])}" for i, k in enumerate(SPLITS) if k != "overall"]
        ms = f" | redraw {1000 * self.update_seconds[-1]:.0f} ms" if self.update_seconds else ""
        n, v, o = self.strength_name, self.val_choice(), self.oracle_choice()
        val = "" if v is None else f", val-chosen {n} {v:.2f}"
        if o is not None:
            e = self.estimated
            val = (f" ({e.estimator.upper()} from a {e.source} draw, error TV {e.error:.3f}){val} "
                   f"(knowing the prior: {o:.2f})")
        return (f"{n} {alpha:.2f}: overall {fmt(now[3])}% ({n} 0: {fmt(base[3])}%) | test prior {self.prior_name}"
                f"{val} | " + ", ".join(parts[:3]) + " | median split: " + ", ".join(parts[3:]) + ms)

    def describe(self) -> str:
        c = self.cache
        med = float(np.median(c.shot_counts))
        val = (f"validation split: {len(self.val_cache.labels)} images (strengths are chosen on it)"
               if self.val_cache is not None else "no validation split: no strength is chosen on data "
               "(train with val_per_class to have one)")
        lines = [f"{len(c.labels)} cached test features, {len(c.train_counts)} classes, {c.head} head; "
                 f"preset alpha {self.preset_alpha:g}; methods: {', '.join(self.methods)}", val,
                 f"rule of thumb (alpha where mean alpha*cos(x, d_hat) is 1, on the {self.rule_source} features): "
                 f"alpha {self.rule_alpha:.3f}",
                 "splits: " + "; ".join(f"{k} {v}" for k, v in self.rules.items() if k != "overall"),
                 f"head/tail: classes with more training images than the median ({med:g}) vs the rest; "
                 "used because the reference thresholds can leave a split empty (CIFAR-10-LT has no few-shot class)",
                 f"test prior: {self.prior_text()}" + (" (the balanced test set as it is)"
                                                       if self.prior_name == UNIFORM else " (accuracies: the "
                 "prior-weighted mean of per-class test accuracy; splits weighted within)")]
        if self.estimated is not None:
            lines.append(f"the control's last entry, estimated: {self.estimated.describe()}; strengths chosen on "
                         "the validation split re-weighted to the estimate")
        else:
            lines.append(f"no 'estimated' test prior: {self.no_estimate}")
        if "tde" not in self.methods:
            lines.append(f"{c.head} head: TDE does not apply (it needs the causal-norm head)")
        return "\n".join(lines)

    def sweep_summary(self, sweep: list[dict]) -> str:
        n = self.strength_name
        best = best_alpha(sweep, name=n)
        def acc(s):
            return 100 * self.at_prior(self.ev.metrics(s))["overall"]
        out = [] if self.prior_name == UNIFORM else [f"test prior {self.prior_name}: accuracies are prior-weighted "
                                                      "per-class test accuracies"]
        out += [f"{n} 0 (the head's own logits): {100 * self.at_prior(self.base)['overall']:.2f}%",
                f"preset {n} {self.preset:g} (paper rule): {acc(self.preset):.2f}%"]
        v, o = self.val_choice(), self.oracle_choice()
        if v is not None:
            how = "" if self.prior_name == UNIFORM else f" (validation split re-weighted to {self.prior_name})"
            if o is not None:
                how = f" (validation split re-weighted to the estimate: {self.estimated.describe()})"
            out.append(f"val-chosen {n} {v:g}{how}: {acc(v):.2f}%")
        if o is not None:
            out.append(f"knowing the drawn set's prior, the validation split chooses {n} {o:g}: {acc(o):.2f}%")
        out.append(f"best overall accuracy: {100 * max(s['overall'] for s in sweep):.2f}% at {n} {best:g} "
                   "(for reading, chosen on test: not a result)")
        if self.method == "tde" and math.isfinite(self.rule_alpha):
            how = "" if self.rule_source == "validation" else ", for reading, chosen on test: not a result"
            out.append(f"rule of thumb alpha {self.rule_alpha:.3f} (on the {self.rule_source} features{how}): "
                       f"test accuracy {acc(self.rule_alpha):.2f}%")
        return "\n".join(out)

    def sweep_figure(self, sweep: list[dict]):
        rule = self.rule_alpha if self.method == "tde" else None
        return sweep_figure(sweep, preset_alpha=self.preset, rule_alpha=rule,
                            rules=self.rules, name=self.strength_name, method=self.methods[self.method].label,
                            val_alpha=self.val_choice(), prior=None if self.prior_name == UNIFORM else self.prior_name)

    # ------------------------------------------------------------------ the live figure
    def _build(self) -> None:
        """Draw everything that depends on neither the strength nor the prior once; keep the rest aside
        ("animated") so an update redraws only them over the saved background (blitting). Every method's
        per-class grid is computed here (once), which also fixes the strength panel's accuracy range."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        c, order = self.cache, self.order
        names = [str(c.class_names[i]) if i < len(c.class_names) else str(i) for i in order]
        edges = np.arange(len(order) + 1) - 0.5
        fig, (s, a, b, d) = new_figure(4, width=3.7, height=3.4)
        fig.set_dpi(85)
        # accuracy against the strength under the prior: the curve, the balanced one, and where the choices are
        g = self.grid()
        curves = [self.curve(k, p) for k in self.methods for p in self.priors]
        lo, hi = np.nanmin([np.nanmin(y) for y in curves]), np.nanmax([np.nanmax(y) for y in curves])
        self._curve0, = s.plot(g["strengths"], self.curve(prior=UNIFORM), color=BASE_COLOR, lw=1.2, ls="--",
                               label="overall, balanced test set")
        self._curve, = s.plot(g["strengths"], self.curve(), color=TDE_COLOR, lw=2.0, label="overall under the prior")
        self._now = s.axvline(self.alpha, color="#333333", ls=":", lw=1.2, label="the slider's strength")
        self._val_mark, = s.plot([], [], "o", ms=8, color=PALETTE[2], mec="black", clip_on=False,
                                 label="val-chosen for the prior (validation split re-weighted)")
        self._best_mark, = s.plot([], [], "*", ms=13, color="gold", mec="black", clip_on=False,
                                  label="best on test for the prior, for reading, chosen on test")
        self._oracle_mark, = s.plot([], [], "D", ms=7, mfc="none", mec="black", mew=1.5, clip_on=False,
                                    label="estimated: val-chosen knowing the true prior")
        for mark in (self._val_mark, self._best_mark, self._oracle_mark):   # unclipped at the axis ends, and
            mark.set_in_layout(False)           # out of the layout (an empty unclipped line spans the figure's corner)
        s.set(ylim=(max(0.0, 5 * math.floor(lo / 5) - 5), min(105.0, 5 * math.ceil(hi / 5) + 5)),
              ylabel="test accuracy %")
        self._set_strength_axis(s)
        self._s_title = s.set_title("backward50: val 0.00, best on test 0.00 (reading)", fontsize=8)
        # per-class accuracy, with the prior's class shares on a second axis
        base_acc = 100 * np.asarray(self.base["per_class"], dtype=float)[order]
        self._acc = a.stairs(base_acc, edges, fill=True, color=TDE_COLOR, alpha=0.8, label="at the strength")
        acc0 = a.stairs(base_acc, edges, color=BASE_COLOR, lw=1.5, label="strength 0")
        a.set(ylim=(0, 105), ylabel="test accuracy %", title="per-class accuracy")
        _class_ticks(a, names)
        a2 = a.twinx()
        top = max(float(w.max()) for w in self.prior_weights.values())
        self._prior_line = a2.stairs(100 * self.prior[order], edges, color=PALETTE[3], ls="--", lw=1.4,
                                     label="test prior, % of images (right axis)")
        est = self.estimated
        self._est_line = a2.stairs(100 * (est.estimate if est is not None else self.prior)[order], edges,
                                   color="black", ls=":", lw=1.4, label="estimated: the estimate (right axis)")
        if est is not None:
            top = max(top, float(est.estimate.max()))
        a2.set_ylim(0, 100 * top * 1.15)
        a2.set_ylabel("test prior %", fontsize=8)
        a2.tick_params(labelsize=7)
        x = np.arange(len(SPLITS))
        vals0 = self.split_values(self.base)
        self._bars0 = b.bar(x - 0.2, np.nan_to_num(vals0), 0.4, color=BASE_COLOR, label="strength 0")
        self._bars = b.bar(x + 0.2, np.nan_to_num(vals0), 0.4, color=[SPLIT_COLORS[k] for k in SPLITS])
        self._bar_text = [b.text(i + 0.2, 1, "", ha="center", va="bottom", fontsize=7) for i in x]
        for i, v in enumerate(vals0):
            if v != v:
                b.text(i, 50, "no class", ha="center", rotation=90, fontsize=8, color="#777777")
        b.set_xticks(x, [f"{k}\n{self.rules[k].split(' (')[0].replace('median ', '').replace(' imgs', '')}"
                         if k != "overall" else k for k in SPLITS], fontsize=7)
        b.set(ylim=(0, 105), title="splits under the prior: strength 0 (grey) vs now")
        b.title.set_fontsize(9)
        counts0 = np.asarray(self.base["pred_counts"])[order]
        true = np.bincount(c.labels.numpy(), minlength=len(order))[order]
        evs = [AlphaEvaluator(c) if k == "tde" else MethodEvaluator(c, k) for k in self.methods]
        peak = max(max(ev.metrics(a_)["pred_counts"]) for ev, m in zip(evs, self.methods.values())
                   for a_ in np.linspace(0, self.alpha_max if m.name == "tde" else m.grid_max, 7))
        self._pred = d.stairs(counts0, edges, fill=True, color=TDE_COLOR, alpha=0.8, label="at the strength")
        pred0 = d.stairs(counts0, edges, color=BASE_COLOR, lw=1.5, label="strength 0")
        true_line = d.stairs(true, edges, color="black", ls=":", lw=1, label="true count (balanced test set)")
        d.set(ylim=(0, 1.1 * max(peak, true.max())), ylabel="test predictions", title="predictions per class")
        _class_ticks(d, names)
        # one legend for the panels, below them: in a panel's corner it covered the tallest bars (a tail
        # class's after a strong TDE). Made before the artists turn animated, so its keys are drawn.
        keys = [self._curve, self._curve0, self._now, self._val_mark, self._best_mark, self._acc, acc0,
                self._prior_line, true_line]
        if est is not None:
            keys += [self._oracle_mark, self._est_line]
        fig.legend(handles=keys, fontsize=7, loc="outside lower center", ncols=5)
        for ax in (s, a, b, d):
            ax.grid(alpha=0.3, axis="y")
        s.grid(alpha=0.3, axis="x")
        self._title = fig.suptitle("logit adj. tau = 0.00, test prior backward50   (overall 00.0%, tau 0: 00.0%)")
        # drawn in this order over the background: the strength-0 outlines stay visible on top of the fills
        self._animated = [self._curve0, self._curve, self._now, self._val_mark, self._best_mark, self._oracle_mark,
                          self._s_title, self._acc, acc0, self._prior_line, self._est_line, self._pred, pred0,
                          true_line, *self._bars0, *self._bars,
                          *self._bar_text, self._title]
        for art in self._animated:
            art.set_animated(True)
        canvas = FigureCanvasAgg(fig)
        with _fast_text():
            canvas.draw()                 # lays out (constrained) once; then the layout is frozen
        fig.set_layout_engine("none")
        self._background = canvas.copy_from_bbox(fig.bbox)
        self._fig, self._canvas, self._s_axes = fig, canvas, s

    def _set_strength_axis(self, s) -> None:
        s.set_xlim(0, self.max)
        s.set_xlabel(f"{self.strength_name} ({self.methods[self.method].label} strength)", fontsize=9)
        self._layout_method = self.method

    def _relayout(self) -> None:
        """After a method change: the strength panel's axis for it (its name and range), the background again."""
        self._set_strength_axis(self._s_axes)
        with _fast_text():
            self._canvas.draw()
        self._background = self._canvas.copy_from_bbox(self._fig.bbox)

    def _png(self) -> bytes:
        canvas = self._canvas
        canvas.restore_region(self._background)
        with _fast_text():
            for art in self._animated:
                self._fig.draw_artist(art)
        return _png_rgb(np.asarray(canvas.buffer_rgba()))

    def render(self, alpha: float | None = None, prior: str | None = None) -> tuple[dict, bytes]:
        """Metrics at strength ``alpha`` (default: the one shown) of the current method under test prior
        ``prior`` (default: the current one; :meth:`at_prior`), and the figure as PNG; times itself into
        ``update_seconds``. A prior change re-uses the metrics at the strength and the precomputed per-class
        grids: the maths is a few (S, C) x (C,) products. The first call builds the figure and a method change
        re-draws the strength axis (~0.1-0.3 s, not timed)."""
        if prior is not None and prior != self.prior_name:
            self.set_prior(prior)
        alpha = self.alpha if alpha is None else float(alpha)
        if self._fig is None:
            self._build()                 # once, not counted: ~0.3 s for the layout and the background
        elif self._layout_method != self.method:
            self._relayout()
        t0, c0 = time.perf_counter(), time.process_time()
        if self._metrics_at != (self.method, alpha):
            self._m, self._metrics_at = self.ev.metrics(alpha), (self.method, alpha)
        self.alpha = alpha
        m, base = self.at_prior(self._m), self.at_prior(self.base)
        self._acc.set_data(100 * np.asarray(m["per_class"], dtype=float)[self.order])
        self._pred.set_data(np.asarray(m["pred_counts"])[self.order])
        self._prior_line.set_data(100 * self.prior[self.order])
        self._est_line.set_visible(self.prior_name == ESTIMATED)      # the estimate over the drawn set's prior
        for bar0, bar, txt, v0, v in zip(self._bars0, self._bars, self._bar_text, self.split_values(base),
                                         self.split_values(m)):
            bar0.set_height(0 if v0 != v0 else v0)
            bar.set_height(0 if v != v else v)
            txt.set_text("" if v != v else f"{v:.0f}")
            txt.set_y((0 if v != v else v) + 1)
        g, y = self.grid(), self.curve()
        self._curve.set_data(g["strengths"], y)
        self._curve0.set_data(g["strengths"], self.curve(prior=UNIFORM))
        self._now.set_xdata([alpha, alpha])
        n, v = self.strength_name, self.val_choice()
        at = lambda s: float(np.interp(s, g["strengths"], y))  # noqa: E731 - the curve's value at a strength
        self._val_mark.set_data([] if v is None else [v], [] if v is None else [at(v)])
        best, top = self.test_best()
        self._best_mark.set_data([best], [top])
        o = self.oracle_choice()
        self._oracle_mark.set_data([] if o is None else [o], [] if o is None else [at(o)])
        val = "no val split" if v is None else f"val {v:.2f}"
        if o is None:
            self._s_title.set_text(f"{self.prior_name}: {val}, best on test {best:.2f} (reading)")
        else:
            self._s_title.set_text(f"{self.estimated.estimator.upper()} est. of {self.estimated.source}: {val}, "
                                   f"true prior {o:.2f}; test best {best:.2f}")
        self._title.set_text(f"{self.methods[self.method].label} {n} = {alpha:.2f}, test prior {self.prior_name}   "
                             f"(overall {100 * m['overall']:.1f}%, {n} 0: {100 * base['overall']:.1f}%)")
        png = self._png()
        self.update_seconds.append(time.perf_counter() - t0)
        self.update_cpu_seconds.append(time.process_time() - c0)
        return m, png

    def benchmark(self, n: int = 20) -> dict:
        """Median and worst update time (metrics + redraw + PNG) over ``n`` strengths across the slider, then
        over ``n`` test-prior changes (each to another prior, back and forth along the control) at the strength
        shown, with the median CPU time of each; the explorer is left at the strength and prior it had."""
        alpha0, prior0 = self.alpha, self.prior_name
        start = len(self.update_seconds)
        for a in np.linspace(0, self.max, n):
            self.render(float(a))
        t, cpu = self.update_seconds[start:], self.update_cpu_seconds[start:]
        self.render(alpha0)
        k = len(self.priors)
        bounce = list(range(k)) + list(range(k - 2, 0, -1))          # 0 .. k-1 .. 1: every step a change
        i0 = self.priors.index(prior0)
        start = len(self.update_seconds)
        for j in range(n):
            self.render(prior=self.priors[bounce[(i0 + 1 + j) % len(bounce)]])
        tp, cpu_p = self.update_seconds[start:], self.update_cpu_seconds[start:]
        self.render(prior=prior0)
        ms = lambda v: round(1000 * v, 1)  # noqa: E731
        return {"updates": n, "median_ms": ms(statistics.median(t)), "max_ms": ms(max(t)),
                "median_cpu_ms": ms(statistics.median(cpu)),
                "prior_changes": n, "prior_median_ms": ms(statistics.median(tp)), "prior_max_ms": ms(max(tp)),
                "prior_median_cpu_ms": ms(statistics.median(cpu_p))}

    # ------------------------------------------------------------------ display
    def show(self, alpha: float | None = None, *, widgets: bool = True, save: str | Path | None = None) -> None:
        """Display the method selector, the slider, the test-prior control and the readout (when ipywidgets
        imports) above the figure at strength ``alpha`` of the current method (default: its paper rule) under
        the current prior. Without ipywidgets the figure and readout are shown once, statically. ``save``: also
        write that first figure to this PNG file."""
        from IPython.display import Image, display
        alpha = self.preset if alpha is None else float(alpha)
        m, png = self.render(alpha)
        if save is not None:
            Path(save).parent.mkdir(parents=True, exist_ok=True)
            Path(save).write_bytes(png)
        try:
            import ipywidgets as W
        except ImportError:
            W = None
        if W is None or not widgets:
            print(self.readout(alpha, m))
            display(Image(data=png))
            return
        slider = W.FloatSlider(value=alpha, min=0.0, max=self.max, step=self.step, description=self.strength_name,
                               readout_format=".2f", continuous_update=False, layout=W.Layout(width="520px"))
        prior = W.SelectionSlider(options=self.priors, value=self.prior_name, description="test prior",
                                  continuous_update=False, layout=W.Layout(width="470px"),
                                  style={"description_width": "initial"})
        selector = W.ToggleButtons(options=[(m.label, k) for k, m in self.methods.items()], value=self.method,
                                   description="method", tooltips=[m.rule_text for m in self.methods.values()])
        label = W.Label(value=self.readout(alpha, m))
        slider.add_class("lt-kit-alpha")
        prior.add_class("lt-kit-prior")
        selector.add_class("lt-kit-method")
        label.add_class("lt-kit-readout")
        display(W.VBox([selector, W.HBox([slider, prior]), label]))
        handle = display(Image(data=png), display_id=True)

        def redraw(_change=None):           # the strength and the prior the controls show now
            try:
                m, png = self.render(slider.value, prior.value)
                handle.update(Image(data=png))
                label.value = self.readout(slider.value, m)
            except Exception as e:          # a callback's traceback only reaches the log console: say it here
                label.value = f"error: {type(e).__name__}: {e}"
                raise

        def on_method(change):              # the slider jumps to the new method's paper rule and range
            self.set_method(change["new"])
            same = abs(slider.value - self.preset) < 1e-12
            with slider.hold_trait_notifications():
                slider.max, slider.description = self.max, self.strength_name
                slider.value = self.preset  # a new value redraws through the slider's observer
            if same:
                redraw()                    # same value, other method: nothing else redraws
        slider.observe(redraw, names="value")
        prior.observe(redraw, names="value")
        selector.observe(on_method, names="value")
        self.slider, self.label, self.selector, self.prior_control = slider, label, selector, prior   # for tests


def _drawn_estimate(cache: FeatureCache, val_cache: FeatureCache, source: str, estimator: str):
    """The "estimated" entry's prior: one test set drawn to ``source``, its prior estimated by ``estimator``
    from its images' head logits alone (``evaluation.adaptation``), calibrated on the validation split."""
    from lt_kit.evaluation.adaptation import estimate_from_draw, estimators_from_logits
    from lt_kit.methods import head_logits
    est = estimators_from_logits(head_logits(cache), head_logits(val_cache), val_cache.labels.numpy(),
                                 cache.train_counts, cache.class_names)
    return estimate_from_draw(est, cache.labels.numpy(), source, estimator=estimator,
                              class_names=cache.class_names)


def _png_rgb(rgba: np.ndarray) -> bytes:
    """An (H, W, 4) uint8 buffer's RGB as PNG: every row unfiltered, zlib level 1. Half the time of PIL's
    encoder at compress_level=1, whose per-row adaptive filter choice is most of its cost (speed over size)."""
    h, w = rgba.shape[:2]
    raw = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    raw[:, 0] = 0                                            # filter type 0 (none) for each row
    raw[:, 1:] = rgba[..., :3].reshape(h, 3 * w)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)) + chunk(b"IEND", b""))


def _fast_text():
    """Text drawn without font hinting: the live figure's changing titles and labels are most of a redraw's
    rendering, and unhinted glyphs are ~20 % cheaper to rasterise (a prior change: ~25 -> ~20 ms of CPU)."""
    import matplotlib
    return matplotlib.rc_context({"text.hinting": "no_hinting"})


def _per_class_grid(ev: MethodEvaluator, strengths) -> np.ndarray:
    """(S, C) per-class accuracy of ``ev``'s cache at each strength."""
    labels, c = ev.labels_np, ev.num_classes
    with one_thread():
        return np.stack([per_class_accuracy(ev.logits(float(s)).argmax(1).numpy(), labels, c) for s in strengths])
