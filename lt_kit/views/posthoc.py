"""Every post-hoc method on one run, side by side: accuracy against strength, the strength each method's
paper rule gives, the strength chosen on the validation split, and one table (many runs: ``compare.py``).

The static part of the explorer notebook (what papermill and CI see). The numbers come from
``evaluate.summary`` and ``MethodEvaluator`` (one implementation); the test-chosen optimum appears only
labelled "for reading, chosen on test".
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from lt_kit.evaluation.features import FeatureCache
from lt_kit.evaluation.summary import (
    TEST_CHOSEN_NOTE,
    MethodEvaluator,
    format_rows,
    row_name,
    summary,
    table_rows,
    two_stage_note,
)
from lt_kit.methods import DECOUPLED, methods_for
from lt_kit.views.plots import METHOD_COLORS, PALETTE, _pct, new_figure


def method_curves(cache: FeatureCache, val_cache: FeatureCache | None, preset_alpha: float,
                  info: dict | None = None) -> list[dict]:
    """Per method: its strength grid, overall and tail accuracy (%) on it, its paper-rule strength and the
    strength chosen on the validation split (None without one). ``info``: ``evaluate.summary`` of the same
    caches, if already computed (the notebook passes one to this and to :func:`comparison_table`)."""
    info = (info or summary(cache, preset_alpha, val_cache))["methods"]
    out = []
    for name, e in info.items():            # two-stage methods (cRT, LWS): no strength, fixed points
        if e.get("kind") == "two-stage":
            m = DECOUPLED[name]
            out.append({"method": name, "label": e["label"], "strength_name": None, "fixed": True,
                        "rule_label": m.rule_label, "val_label": m.val_label,
                        "overall": _pct(e["rule"]["metrics"]["overall"]),
                        "tail": _pct(e["rule"]["metrics"]["head_tail"]["tail"]),
                        "rule": e["rule"]["strength"], "val": e["val"]["strength"] if e["val"] else None,
                        "val_overall": _pct(e["val"]["metrics"]["overall"]) if e["val"] else None,
                        "val_tail": _pct(e["val"]["metrics"]["head_tail"]["tail"]) if e["val"] else None})
    for m in methods_for(cache.head):
        if "rule" not in info[m.name]:          # unavailable on this run (the table says why)
            continue
        sweep = MethodEvaluator(cache, m.name).sweep(m.grid())
        e = info[m.name]
        out.append({"method": m.name, "label": m.label, "strength_name": m.strength,
                    "strengths": np.array([s[m.strength] for s in sweep]),
                    "overall": np.array([_pct(s["overall"]) for s in sweep]),
                    "tail": np.array([_pct(s["head_tail"]["tail"]) for s in sweep]),
                    "rule": e["rule"]["strength"], "val": e["val"]["strength"] if e["val"] else None})
    return out


def comparison_figure(curves: list[dict], head_label: str) -> Figure:
    """Overall and tail test accuracy against strength for every method on shared axes; each method's paper
    rule (open diamond) and validation-chosen strength (filled circle) are marked on its curve. A two-stage
    method (cRT, LWS) has no strength: a dashed level line at its last epoch (lt_kit's rule), a square at its
    val-chosen epoch (the authors' procedure)."""
    fig, axes = new_figure(2, width=4.6, height=3.4)
    for ax, key, title in zip(axes, ("overall", "tail"), ("overall", "tail (classes below the median count)")):
        for c in curves:
            color = METHOD_COLORS.get(c["method"], PALETTE[4])
            if c.get("fixed"):          # no strength: a level line at its rule, a marker for its val-chosen epoch
                ax.axhline(c[key], color=color, lw=1.4, ls="--",
                           label=f"{c['label']} (no strength) {c['rule_label']}: epoch {c['rule']:g}")
                if c["val"] is not None:
                    ax.plot([0], [c["val_" + key]], "s", ms=7, color=color, mec="black", clip_on=False,
                            label=f"{c['label']} {c['val_label']}: epoch {c['val']:g}")
                continue
            x, y = c["strengths"], c[key]
            ax.plot(x, y, color=color, lw=1.8, label=f"{c['label']} ({c['strength_name']})")
            at = lambda s, x=x, y=y: float(np.interp(s, x, y))  # noqa: E731 - the curve's value at a strength
            ax.plot([c["rule"]], [at(c["rule"])], "D", ms=7, mfc="white", mec=color, mew=1.8,
                    label=f"{c['label']} paper rule {c['strength_name']}={c['rule']:g}")
            if c["val"] is not None:
                ax.plot([c["val"]], [at(c["val"])], "o", ms=7, color=color, mec="black",
                        label=f"{c['label']} val-chosen {c['strength_name']}={c['val']:g}")
        ax.set(xlabel="strength (alpha for TDE, tau otherwise)", ylabel="test accuracy %",
               title=f"{head_label} head: {title}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def comparison_table(cache: FeatureCache, val_cache: FeatureCache | None, preset_alpha: float,
                     info: dict | None = None) -> str:
    """One table: the head's own row, then every method at its paper rule and its val-chosen strength, and
    last, each method's test-chosen optimum, labelled as such (for reading, never a result)."""
    m = info or summary(cache, preset_alpha, val_cache)
    rows = table_rows(m)
    for name, e in m["methods"].items():
        if "test_chosen" not in e:             # two-stage methods have no strength to choose on test
            continue
        s = e["test_chosen"]["strength"]
        rows.append((row_name(cache.head, name, s, TEST_CHOSEN_NOTE), MethodEvaluator(cache, name).metrics(s)))
    how = ("val = chosen on the validation split" if val_cache is not None else
           "this run has no validation split (train with val_per_class, or val_root), so no strength was chosen")
    notes = (f"rule = the paper's fixed strength; {how}; rows marked '{TEST_CHOSEN_NOTE}' picked their strength on "
             "the test set itself and are not results", *two_stage_note(m["methods"]))
    return format_rows(rows, m["thresholds"], notes)
