"""The explorer: a method selector and a strength slider that re-score the cached test features and redraw.

Each post-hoc method (``methods.POSTHOC``: TDE's alpha, logit adjustment's tau, tau-normalisation's tau) that
applies to the run's head is one button; its ``MethodEvaluator`` turns a strength into logits in about a
millisecond (TDE: one multiply-add). One Figure is built once and only its artists' data change on each
move, so an update is a few milliseconds of maths plus one Agg render. The figure is an ordinary PNG output
(``display_id``), so it also shows in papermill's output notebook and wherever ipywidgets has no front end;
only the selector, the slider and the readout line are widgets.
"""
from __future__ import annotations

import io
import math
import statistics
import time
from pathlib import Path

import numpy as np

from lt_kit.evaluation.features import FeatureCache
from lt_kit.evaluation.summary import AlphaEvaluator, MethodEvaluator, choose_on_val
from lt_kit.maths.tde import rule_of_thumb_alpha
from lt_kit.methods import methods_for
from lt_kit.views.plots import (
    BASE_COLOR,
    SPLIT_COLORS,
    TDE_COLOR,
    _class_ticks,
    _pct,
    best_alpha,
    head_to_tail,
    new_figure,
    split_rules,
    sweep_figure,
)

SPLITS = ("many", "medium", "few", "overall", "head", "tail")


class AlphaExplorer:
    """Live per-class / per-split accuracy and prediction counts at any strength of any post-hoc method that
    applies to the run's head, from its feature cache (TDE's alpha first on a causal-norm run)."""

    def __init__(self, cache: FeatureCache, *, preset_alpha: float, alpha_max: float = 3.0, step: float = 0.01,
                 run_dir: Path | None = None, val_cache: FeatureCache | None = None, method: str = "",
                 train_cache: FeatureCache | None = None, params: dict | None = None):
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
        self.update_seconds: list[float] = []
        self._fig = None
        self.slider = self.label = self.selector = None
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
        self.max = self.alpha_max if name == "tde" else m.grid_max
        self.val_strength = choose_on_val(self.val_cache, name)["strength"] if self.val_cache is not None else None

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
        """The current method over 0 .. its slider's end, ``step`` apart (dicts keyed by the strength's name)."""
        n = int(round(self.max / step))
        return self.ev.sweep(np.linspace(0.0, n * step, n + 1))

    def split_values(self, m: dict) -> list[float]:
        return [_pct(m["head_tail"][k] if k in ("head", "tail") else m[k]) for k in SPLITS]

    def readout(self, alpha: float, m: dict | None = None) -> str:
        """One line: the accuracies at strength ``alpha`` of the current method (and at 0), as the label shows."""
        m = m or self.ev.metrics(alpha)
        def fmt(v):
            return "n/a" if v != v else f"{v:.1f}"
        now, base = self.split_values(m), self.split_values(self.base)
        parts = [f"{k} {fmt(now[i])}" for i, k in enumerate(SPLITS) if k != "overall"]
        ms = f" | redraw {1000 * self.update_seconds[-1]:.0f} ms" if self.update_seconds else ""
        n = self.strength_name
        return (f"{n} {alpha:.2f}: overall {fmt(now[3])}% ({n} 0: {fmt(base[3])}%) | "
                + ", ".join(parts[:3]) + " | median split: " + ", ".join(parts[3:]) + ms)

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
                 "used because the reference thresholds can leave a split empty (CIFAR-10-LT has no few-shot class)"]
        if "tde" not in self.methods:
            lines.append(f"{c.head} head: TDE does not apply (it needs the causal-norm head)")
        return "\n".join(lines)

    def sweep_summary(self, sweep: list[dict]) -> str:
        n = self.strength_name
        best = best_alpha(sweep, name=n)
        out = [f"{n} 0 (the head's own logits): {100 * self.base['overall']:.2f}%",
               f"preset {n} {self.preset:g} (paper rule): {100 * self.ev.metrics(self.preset)['overall']:.2f}%"]
        if self.val_strength is not None:
            acc = 100 * self.ev.metrics(self.val_strength)["overall"]
            out.append(f"val-chosen {n} {self.val_strength:g}: {acc:.2f}%")
        out.append(f"best overall accuracy: {100 * max(s['overall'] for s in sweep):.2f}% at {n} {best:g} "
                   "(for reading, chosen on test: not a result)")
        if self.method == "tde" and math.isfinite(self.rule_alpha):
            how = "" if self.rule_source == "validation" else ", for reading, chosen on test: not a result"
            out.append(f"rule of thumb alpha {self.rule_alpha:.3f} (on the {self.rule_source} features{how}): "
                       f"test accuracy {100 * self.ev.metrics(self.rule_alpha)['overall']:.2f}%")
        return "\n".join(out)

    def sweep_figure(self, sweep: list[dict]):
        rule = self.rule_alpha if self.method == "tde" else None
        return sweep_figure(sweep, preset_alpha=self.preset, rule_alpha=rule,
                            rules=self.rules, name=self.strength_name, method=self.methods[self.method].label,
                            val_alpha=self.val_strength)

    # ------------------------------------------------------------------ the live figure
    def _build(self) -> None:
        """Draw everything that does not depend on alpha once; keep the alpha-dependent artists aside
        ("animated") so an update redraws only them over the saved background (blitting)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        c, order = self.cache, self.order
        names = [str(c.class_names[i]) if i < len(c.class_names) else str(i) for i in order]
        edges = np.arange(len(order) + 1) - 0.5
        fig, (a, b, d) = new_figure(3, width=4.3, height=3.3)
        fig.set_dpi(90)
        base_acc = 100 * np.asarray(self.base["per_class"], dtype=float)[order]
        self._acc = a.stairs(base_acc, edges, fill=True, color=TDE_COLOR, alpha=0.8, label="at the strength")
        acc0 = a.stairs(base_acc, edges, color=BASE_COLOR, lw=1.5, label="strength 0")
        a.set(ylim=(0, 105), ylabel="test accuracy %", title="per-class accuracy")
        _class_ticks(a, names)
        x = np.arange(len(SPLITS))
        vals0 = self.split_values(self.base)
        b.bar(x - 0.2, np.nan_to_num(vals0), 0.4, color=BASE_COLOR, label="strength 0")
        self._bars = b.bar(x + 0.2, np.nan_to_num(vals0), 0.4, color=[SPLIT_COLORS[k] for k in SPLITS])
        self._bar_text = [b.text(i + 0.2, 1, "", ha="center", va="bottom", fontsize=7) for i in x]
        for i, v in enumerate(vals0):
            if v != v:
                b.text(i, 50, "no class", ha="center", rotation=90, fontsize=8, color="#777777")
        b.set_xticks(x, [f"{k}\n{self.rules[k].split(' (')[0].replace('median ', '').replace(' imgs', '')}"
                         if k != "overall" else k for k in SPLITS], fontsize=7)
        b.set(ylim=(0, 105), title="splits: strength 0 (grey) vs now")
        counts0 = np.asarray(self.base["pred_counts"])[order]
        true = np.bincount(c.labels.numpy(), minlength=len(order))[order]
        evs = [AlphaEvaluator(c) if k == "tde" else MethodEvaluator(c, k) for k in self.methods]
        peak = max(max(ev.metrics(a_)["pred_counts"]) for ev, m in zip(evs, self.methods.values())
                   for a_ in np.linspace(0, self.alpha_max if m.name == "tde" else m.grid_max, 7))
        self._pred = d.stairs(counts0, edges, fill=True, color=TDE_COLOR, alpha=0.8, label="at the strength")
        pred0 = d.stairs(counts0, edges, color=BASE_COLOR, lw=1.5, label="strength 0")
        true_line = d.stairs(true, edges, color="black", ls="--", lw=1, label="true count")
        d.set(ylim=(0, 1.1 * max(peak, true.max())), ylabel="test predictions", title="predictions per class")
        _class_ticks(d, names)
        # one legend for the three panels, below them: in a panel's corner it covered the tallest bars (a
        # tail class's after a strong TDE). Made before the artists turn animated, so its keys are drawn.
        fig.legend(handles=[self._acc, acc0, true_line], fontsize=7, loc="outside lower center", ncols=3)
        for ax in (a, b, d):
            ax.grid(alpha=0.3, axis="y")
        self._title = fig.suptitle("logit adj. tau = 0.00   (overall 00.0%, tau 0: 00.0%)")   # reserves its space
        # drawn in this order over the background: the alpha-0 outlines stay visible on top of the fills
        self._animated = [self._acc, acc0, self._pred, pred0, true_line, *self._bars, *self._bar_text, self._title]
        for art in self._animated:
            art.set_animated(True)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()                     # lays out (constrained) once; then the layout is frozen
        fig.set_layout_engine("none")
        self._background = canvas.copy_from_bbox(fig.bbox)
        self._fig, self._canvas = fig, canvas

    def _png(self) -> bytes:
        from PIL import Image as PILImage
        canvas = self._canvas
        canvas.restore_region(self._background)
        for art in self._animated:
            self._fig.draw_artist(art)
        buf = io.BytesIO()
        rgba = np.asarray(canvas.buffer_rgba())
        PILImage.fromarray(rgba[..., :3]).save(buf, format="png", compress_level=1)   # speed over size
        return buf.getvalue()

    def render(self, alpha: float) -> tuple[dict, bytes]:
        """Metrics at ``alpha`` and the figure as PNG; times itself into ``update_seconds``."""
        if self._fig is None:
            self._build()                 # once, not counted: ~0.3 s for the layout and the background
        t0 = time.perf_counter()
        m = self.ev.metrics(alpha)
        self._acc.set_data(100 * np.asarray(m["per_class"], dtype=float)[self.order])
        self._pred.set_data(np.asarray(m["pred_counts"])[self.order])
        for bar, txt, v in zip(self._bars, self._bar_text, self.split_values(m)):
            bar.set_height(0 if v != v else v)
            txt.set_text("" if v != v else f"{v:.0f}")
            txt.set_y((0 if v != v else v) + 1)
        n = self.strength_name
        self._title.set_text(f"{self.methods[self.method].label} {n} = {alpha:.2f}   (overall "
                             f"{100 * m['overall']:.1f}%, {n} 0: {100 * self.base['overall']:.1f}%)")
        png = self._png()
        self.update_seconds.append(time.perf_counter() - t0)
        return m, png

    def benchmark(self, n: int = 20) -> dict:
        """Median and worst update time (metrics + redraw + PNG) over ``n`` alphas across the slider."""
        start = len(self.update_seconds)
        for a in np.linspace(0, self.max, n):
            self.render(float(a))
        t = self.update_seconds[start:]
        return {"updates": n, "median_ms": round(1000 * statistics.median(t), 1), "max_ms": round(1000 * max(t), 1)}

    # ------------------------------------------------------------------ display
    def show(self, alpha: float | None = None, *, widgets: bool = True, save: str | Path | None = None) -> None:
        """Display the method selector, the slider and the readout (when ipywidgets imports) above the figure
        at strength ``alpha`` of the current method (default: its paper rule). Without ipywidgets the figure
        and readout are shown once, statically. ``save``: also write that first figure to this PNG file."""
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
        selector = W.ToggleButtons(options=[(m.label, k) for k, m in self.methods.items()], value=self.method,
                                   description="method", tooltips=[m.rule_text for m in self.methods.values()])
        label = W.Label(value=self.readout(alpha, m))
        slider.add_class("lt-kit-alpha")
        selector.add_class("lt-kit-method")
        label.add_class("lt-kit-readout")
        display(W.VBox([selector, slider, label]))
        handle = display(Image(data=png), display_id=True)

        def redraw(value):
            try:
                m, png = self.render(value)
                handle.update(Image(data=png))
                label.value = self.readout(value, m)
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
                redraw(self.preset)         # same value, other method: nothing else redraws
        slider.observe(lambda ch: redraw(ch["new"]), names="value")
        selector.observe(on_method, names="value")
        self.slider, self.label, self.selector = slider, label, selector   # kept for tests and for scripting

