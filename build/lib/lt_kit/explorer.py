"""The TDE alpha explorer: a slider that re-scores the cached test features at any alpha and redraws.

One ``AlphaEvaluator`` turns an alpha into logits with one multiply-add; one Figure is built once and
only its artists' data change on each move, so an update is a few milliseconds of maths plus one Agg
render. The figure is an ordinary PNG output (``display_id``), so it also shows in papermill's output
notebook and wherever ipywidgets has no front end; only the slider and the readout line are widgets.
"""
from __future__ import annotations

import io
import math
import statistics
import time
from pathlib import Path

import numpy as np

from .evaluate import AlphaEvaluator, FeatureCache
from .plots import (BASE_COLOR, SPLIT_COLORS, TDE_COLOR, _class_ticks, _pct, best_alpha, head_to_tail, new_figure,
                    split_rules, sweep_figure)
from .tde import rule_of_thumb_alpha

SPLITS = ("many", "medium", "few", "overall", "head", "tail")


class AlphaExplorer:
    """Live per-class / per-split accuracy and prediction counts at any alpha, from a run's feature cache."""

    def __init__(self, cache: FeatureCache, *, preset_alpha: float, alpha_max: float = 3.0, step: float = 0.01,
                 run_dir: Path | None = None):
        self.cache, self.run_dir = cache, run_dir
        self.ev = AlphaEvaluator(cache)
        self.preset_alpha, self.alpha_max, self.step = float(preset_alpha), float(alpha_max), float(step)
        self.order = head_to_tail(cache.train_counts)
        self.rules = split_rules(cache.train_counts, cache.many_threshold, cache.few_threshold)
        self.rule_alpha = rule_of_thumb_alpha(cache.features, cache.direction, cache.num_heads)
        self.base = self.ev.metrics(0.0)
        self.update_seconds: list[float] = []
        self._fig = None
        self.slider = self.label = None

    @classmethod
    def from_run(cls, run_dir: str | Path, **kw) -> "AlphaExplorer":
        """Load ``run_dir/features.pt``; the preset alpha is the run's own ``alpha`` parameter."""
        from .notebook import load_run
        run = load_run(run_dir)
        return cls(run.cache, preset_alpha=run.alpha, run_dir=run.path, **kw)

    # ------------------------------------------------------------------ numbers
    def sweep(self, step: float = 0.05) -> list[dict]:
        n = int(round(self.alpha_max / step))
        return self.ev.sweep(np.linspace(0.0, n * step, n + 1))

    def split_values(self, m: dict) -> list[float]:
        return [_pct(m["head_tail"][k] if k in ("head", "tail") else m[k]) for k in SPLITS]

    def readout(self, alpha: float, m: dict | None = None) -> str:
        """One line: the accuracies at ``alpha`` (and at 0), as the slider's label shows them."""
        m = m or self.ev.metrics(alpha)
        def fmt(v):
            return "n/a" if v != v else f"{v:.1f}"
        now, base = self.split_values(m), self.split_values(self.base)
        parts = [f"{k} {fmt(now[i])}" for i, k in enumerate(SPLITS) if k != "overall"]
        ms = f" | redraw {1000 * self.update_seconds[-1]:.0f} ms" if self.update_seconds else ""
        return (f"alpha {alpha:.2f}: overall {fmt(now[3])}% (alpha 0: {fmt(base[3])}%) | "
                + ", ".join(parts[:3]) + " | median split: " + ", ".join(parts[3:]) + ms)

    def describe(self) -> str:
        c = self.cache
        med = float(np.median(c.train_counts))
        lines = [f"{len(c.labels)} cached test features, {len(c.train_counts)} classes, {c.head} head; "
                 f"preset alpha {self.preset_alpha:g}",
                 f"rule of thumb (alpha where mean alpha*cos(x, d_hat) is 1): alpha {self.rule_alpha:.3f}",
                 "splits: " + "; ".join(f"{k} {v}" for k, v in self.rules.items() if k != "overall"),
                 f"head/tail: classes with more training images than the median ({med:g}) vs the rest; "
                 "used because the reference thresholds can leave a split empty (CIFAR-10-LT has no few-shot class)"]
        if c.head != "causal_norm":
            lines.append("linear head: TDE does not apply, every alpha gives the same predictions")
        return "\n".join(lines)

    def sweep_summary(self, sweep: list[dict]) -> str:
        best = best_alpha(sweep)
        at = {round(s["alpha"], 6): s for s in sweep}
        out = [f"best overall accuracy: {100 * max(s['overall'] for s in sweep):.2f}% at alpha {best:g}",
               f"alpha 0 (De-confound): {100 * self.base['overall']:.2f}%"]
        pre = at.get(round(self.preset_alpha, 6)) or {"overall": self.ev.metrics(self.preset_alpha)["overall"]}
        out.append(f"preset alpha {self.preset_alpha:g}: {100 * pre['overall']:.2f}%")
        if math.isfinite(self.rule_alpha):
            out.append(f"rule of thumb alpha {self.rule_alpha:.3f}: "
                       f"{100 * self.ev.metrics(self.rule_alpha)['overall']:.2f}%")
        return "\n".join(out)

    def sweep_figure(self, sweep: list[dict]):
        return sweep_figure(sweep, preset_alpha=self.preset_alpha, rule_alpha=self.rule_alpha, rules=self.rules)

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
        self._acc = a.stairs(base_acc, edges, fill=True, color=TDE_COLOR, alpha=0.8, label="alpha")
        acc0 = a.stairs(base_acc, edges, color=BASE_COLOR, lw=1.5, label="alpha 0")
        a.set(ylim=(0, 105), ylabel="test accuracy %", title="per-class accuracy")
        a.legend(fontsize=7, loc="upper right")
        _class_ticks(a, names)
        x = np.arange(len(SPLITS))
        vals0 = self.split_values(self.base)
        b.bar(x - 0.2, np.nan_to_num(vals0), 0.4, color=BASE_COLOR, label="alpha 0")
        self._bars = b.bar(x + 0.2, np.nan_to_num(vals0), 0.4, color=[SPLIT_COLORS[k] for k in SPLITS])
        self._bar_text = [b.text(i + 0.2, 1, "", ha="center", va="bottom", fontsize=7) for i in x]
        for i, v in enumerate(vals0):
            if v != v:
                b.text(i, 50, "no class", ha="center", rotation=90, fontsize=8, color="#777777")
        b.set_xticks(x, [f"{k}\n{self.rules[k].split(' (')[0].replace('median ', '').replace(' imgs', '')}"
                         if k != "overall" else k for k in SPLITS], fontsize=7)
        b.set(ylim=(0, 105), title="splits: alpha 0 (grey) vs alpha")
        counts0 = np.asarray(self.base["pred_counts"])[order]
        true = np.bincount(c.labels.numpy(), minlength=len(order))[order]
        peak = max(max(self.ev.metrics(a_)["pred_counts"]) for a_ in np.linspace(0, self.alpha_max, 7))
        self._pred = d.stairs(counts0, edges, fill=True, color=TDE_COLOR, alpha=0.8, label="alpha")
        pred0 = d.stairs(counts0, edges, color=BASE_COLOR, lw=1.5, label="alpha 0")
        true_line = d.stairs(true, edges, color="black", ls="--", lw=1, label="true count")
        d.set(ylim=(0, 1.1 * max(peak, true.max())), ylabel="test predictions", title="predictions per class")
        _class_ticks(d, names)
        d.legend(fontsize=7, loc="upper right")
        for ax in (a, b, d):
            ax.grid(alpha=0.3, axis="y")
        self._title = fig.suptitle("alpha = 0.00   (overall 00.0%, alpha 0: 00.0%)")   # reserves its space
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
        self._title.set_text(f"alpha = {alpha:.2f}   (overall {100 * m['overall']:.1f}%, "
                             f"alpha 0: {100 * self.base['overall']:.1f}%)")
        png = self._png()
        self.update_seconds.append(time.perf_counter() - t0)
        return m, png

    def benchmark(self, n: int = 20) -> dict:
        """Median and worst update time (metrics + redraw + PNG) over ``n`` alphas across the slider."""
        start = len(self.update_seconds)
        for a in np.linspace(0, self.alpha_max, n):
            self.render(float(a))
        t = self.update_seconds[start:]
        return {"updates": n, "median_ms": round(1000 * statistics.median(t), 1), "max_ms": round(1000 * max(t), 1)}

    # ------------------------------------------------------------------ display
    def show(self, alpha: float | None = None, *, widgets: bool = True, save: str | Path | None = None) -> None:
        """Display the slider and readout (when ipywidgets imports) above the figure at ``alpha`` (default:
        the preset). Without ipywidgets the figure and readout are shown once, statically. ``save``: also
        write that first figure to this PNG file."""
        from IPython.display import Image, display
        alpha = self.preset_alpha if alpha is None else float(alpha)
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
        slider = W.FloatSlider(value=alpha, min=0.0, max=self.alpha_max, step=self.step, description="alpha",
                               readout_format=".2f", continuous_update=False, layout=W.Layout(width="520px"))
        label = W.Label(value=self.readout(alpha, m))
        slider.add_class("lt-kit-alpha")
        label.add_class("lt-kit-readout")
        display(W.VBox([slider, label]))
        handle = display(Image(data=png), display_id=True)

        def on_change(change):
            try:
                m, png = self.render(change["new"])
                handle.update(Image(data=png))
                label.value = self.readout(change["new"], m)
            except Exception as e:          # a callback's traceback only reaches the log console: say it here
                label.value = f"error: {type(e).__name__}: {e}"
                raise
        slider.observe(on_change, names="value")
        self.slider, self.label = slider, label       # kept for tests and for scripting the app

