"""The notebooks' figures, and the numbers behind the momentum-direction view, as pure functions.

No pyplot: every figure is a ``matplotlib.figure.Figure`` rendered by Agg, so nothing needs a display,
nothing lands in pyplot's global figure list (the explorer redraws hundreds of times), and the notebooks
show figures as PNG images (``notebook.show``). Classes are always drawn head -> tail (most training images
first), whatever their label order.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from lt_kit.maths.metrics import median_groups, shot_groups
from lt_kit.maths.tde import cos_to_direction, split_heads, unit_norm

# seaborn's "colorblind" palette, fixed here so figures look the same with or without seaborn's styles.
PALETTE = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133",
           "#56b4e9"]
SPLIT_COLORS = {"many": PALETTE[0], "medium": PALETTE[2], "few": PALETTE[3], "overall": "#333333",
                "head": PALETTE[4], "tail": PALETTE[1]}
BASE_COLOR, TDE_COLOR = "#9a9a9a", PALETTE[0]
METHOD_COLORS = {"tde": PALETTE[0], "logit_adjust": PALETTE[1], "tau_norm": PALETTE[2], "crt": PALETTE[3],
                 "lws": PALETTE[5]}


# --------------------------------------------------------------------------- helpers
def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list]:
    """A constrained-layout Figure with a flat list of axes."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, list(np.ravel(fig.subplots(nrows, ncols, squeeze=False)))


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def head_to_tail(train_counts) -> np.ndarray:
    """Class indices by training count, largest first (ties keep label order)."""
    return np.argsort(-np.asarray(train_counts), kind="stable")


def split_rules(train_counts, many: int, few: int) -> dict[str, str]:
    """A one-line rule per split, with its class count: what the figures' labels say."""
    g, m = shot_groups(train_counts, many, few), median_groups(train_counts)
    med = float(np.median(train_counts))
    return {"many": f"> {many} imgs ({len(g['many'])} cls)", "medium": f"{few}-{many} ({len(g['medium'])} cls)",
            "few": f"< {few} ({len(g['few'])} cls)", "overall": "all test images",
            "head": f"> median {med:g} ({len(m['head'])} cls)", "tail": f"<= median {med:g} ({len(m['tail'])} cls)"}


def _pct(v: float) -> float:
    return float("nan") if v is None or v != v else 100.0 * v


def _class_ticks(ax, names: list[str]) -> None:
    if len(names) <= 20:
        ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("class, head -> tail")


# --------------------------------------------------------------------------- train.ipynb
def training_curves(history: list[dict]) -> Figure:
    """Loss, learning rate and accuracy per epoch (``history.json`` of a run)."""
    ep = [h["epoch"] for h in history]
    fig, (a, b, c) = new_figure(3, width=3.6, height=2.9)
    a.plot(ep, [h["loss"] for h in history], color=PALETTE[0], marker="o", ms=3)
    a.set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    b.plot(ep, [h["lr"] for h in history], color=PALETTE[1], marker="o", ms=3, drawstyle="steps-post")
    b.set(title="learning rate", xlabel="epoch", yscale="log")
    c.plot(ep, [100 * h["train_acc"] for h in history], color=PALETTE[2], marker="o", ms=3, label="train (Eq. 7)")
    if any("val_acc" in h for h in history):
        pts = [(h["epoch"], 100 * h["val_acc"]) for h in history if "val_acc" in h]
        c.plot(*zip(*pts), color=PALETTE[3], marker="s", ms=3, label="val")
    c.set(title="accuracy", xlabel="epoch", ylabel="%")
    c.legend(fontsize=8)
    for ax in (a, b, c):
        ax.grid(alpha=0.3)
    return fig


def per_class_vs_count(metrics: dict) -> Figure:
    """Per-class test accuracy against training images per class, without and with TDE (``metrics.json``)."""
    counts = np.asarray(metrics.get("group_counts") or metrics["train_counts"])     # what the splits count
    order = head_to_tail(counts)
    fig, (ax,) = new_figure(width=6.4, height=3.6)
    from lt_kit.evaluation.summary import row_name
    plain = row_name(metrics["head"], None, loss=metrics.get("loss", "ce"))
    series = [(plain + (" (alpha 0)" if metrics.get("tde") else ""), metrics["softmax"], BASE_COLOR, "o")]
    if metrics.get("tde"):
        series.append((f"De-confound-TDE (alpha {metrics['alpha']:g})", metrics["tde"], TDE_COLOR, "s"))
    for label, m, color, marker in series:
        acc = 100 * np.asarray(m["per_class"], dtype=float)
        ax.plot(counts[order], acc[order], marker=marker, color=color, label=label, lw=1.2, ms=5)
    t = metrics["thresholds"]
    for x, txt in ((t["many"], f"many > {t['many']}"), (t["few"], f"few < {t['few']}")):
        if counts.min() <= x <= counts.max():
            ax.axvline(x, color="#bbbbbb", ls=":", lw=1)
            ax.text(x, 2, txt, rotation=90, fontsize=7, color="#777777", va="bottom", ha="right")
    if len(counts) <= 20:
        names = metrics.get("class_names") or [str(i) for i in range(len(counts))]
        tde = metrics.get("tde") or metrics["softmax"]
        for i in order:
            ax.annotate(names[i], (counts[i], 100 * tde["per_class"][i]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set(xscale="log", ylim=(0, 105), xlabel="training images of the class (log)", ylabel="test accuracy %",
           title="per-class accuracy vs training count")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


# --------------------------------------------------------------------------- tde_explorer.ipynb
def best_alpha(sweep: list[dict], key: str = "overall", name: str = "alpha") -> float:
    """The alpha (``name``: the strength's key) of a sweep with the highest ``key`` accuracy (the smallest on
    ties). Chosen on whatever split the sweep scored: on the test set it is for reading only."""
    vals = [s[key] if s[key] == s[key] else -1.0 for s in sweep]
    return float(sweep[int(np.argmax(vals))][name])


def sweep_figure(sweep: list[dict], *, preset_alpha: float, rule_alpha: float | None = None,
                 rules: dict[str, str] | None = None, name: str = "alpha", method: str = "TDE",
                 val_alpha: float | None = None, prior: str | None = None) -> Figure:
    """Overall/many/medium/few (and head/tail by the median rule) accuracy against a method's strength
    (``name``; TDE's alpha by default), from ``MethodEvaluator.sweep``; marked: the preset (paper rule), the
    strength chosen on the validation split, the rule of thumb (TDE), and the best on test, for reading.
    ``prior``: the sweep's accuracies are prior-weighted to this test prior (``AlphaExplorer.at_prior``), and
    ``val_alpha`` was chosen on the validation split re-weighted to it; the labels say so."""
    alphas = np.array([s[name] for s in sweep])
    fig, (ax,) = new_figure(width=7.0, height=3.8)
    for key, ls, lw in (("overall", "-", 2.4), ("many", "-", 1.4), ("medium", "-", 1.4), ("few", "-", 1.4),
                        ("head", "--", 1.0), ("tail", "--", 1.0)):
        vals = np.array([_pct(s["head_tail"][key] if key in ("head", "tail") else s[key]) for s in sweep])
        if np.all(np.isnan(vals)):
            continue                                     # e.g. no few-shot class on CIFAR-10-LT
        label = key + (f" ({rules[key]})" if rules and key in rules else "")
        ax.plot(alphas, vals, ls=ls, lw=lw, color=SPLIT_COLORS[key], label=label)
    best = best_alpha(sweep, name=name)
    top = _pct(max(s["overall"] for s in sweep))
    ax.axvline(best, color=SPLIT_COLORS["overall"], ls=":", lw=1.2)
    ax.plot([best], [top], marker="*", ms=14, color="gold", mec="black", zorder=5,
            label=f"best overall: {name} {best:g} ({top:.1f}%), for reading, chosen on test")
    ax.axvline(preset_alpha, color=PALETTE[3], ls="-.", lw=1.2, label=f"preset {name} {preset_alpha:g} (paper rule)")
    if val_alpha is not None:
        ax.axvline(val_alpha, color=PALETTE[2], ls="-", lw=1.5, label=f"val-chosen {name} {val_alpha:g}"
                   + (f" (validation split re-weighted to {prior})" if prior else ""))
    if rule_alpha is not None and math.isfinite(rule_alpha) and alphas.min() <= rule_alpha <= alphas.max():
        ax.axvline(rule_alpha, color=PALETTE[4], ls="--", lw=1.2, label=f"rule of thumb alpha {rule_alpha:.2f}")
    ax.set(xlabel=f"{name} ({method} strength)",
           ylabel="test accuracy %" + (f" under {prior}" if prior else ""),
           title=f"{method}: accuracy vs {name}" + (f", test prior {prior}" if prior else ""),
           xlim=(alphas.min(), alphas.max()))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def protocol_priors() -> list[str]:
    """The LADE / SADE test priors in the order of an x axis: backward50 .. backward2, uniform, forward2 ..
    forward50 (tail-heavy to head-heavy; ``maths.shift.prior_names`` without ``train``, reversed)."""
    from lt_kit.maths.shift import prior_names
    return [n for n in reversed(prior_names()) if n != "train"]


def _row_method(evaluation: str) -> str:
    """``tde`` of ``tde``, ``logit_adjust`` of ``logit_adjust/prior``, ``softmax`` of ``softmax``."""
    return evaluation.split("/")[0]


def prior_figure(table: dict, *, mark: str | None = None) -> Figure:
    """Accuracy against the test prior, backward50 .. uniform .. forward50 (the SADE-style plot), from a shift
    table (``evaluation.analysis.shift_table``: rows of ``{"evaluation", "label", "kind", "cells": {prior:
    {"accuracy"}}}``). One line per row: the head's own logits (grey), each method at its rule (solid, circles)
    and at its prior-aware validation choice (dash-dot, squares, "on val re-weighted": the strength chosen on the
    validation split re-weighted to each prior), and logit adjustment with the known test prior (black, dashed:
    an oracle that reads the prior, a reference). Rows chosen on the balanced validation split (``METHOD/val``: the
    prior-aware row at ``uniform``) and rows the run lacks (``cells`` None) are not drawn; priors that are not
    the protocol's (``train``, given weights) neither. ``mark``: a prior shaded as the one in view."""
    from lt_kit.methods import DECOUPLED, POSTHOC
    order = [p for p in protocol_priors() if p in table["priors"]]
    x = np.arange(len(order))
    fig, (ax,) = new_figure(width=10.0, height=4.2)
    if mark in order:
        i = order.index(mark)
        ax.axvspan(i - 0.4, i + 0.4, color="#e6e6e6", zorder=0, label=f"test prior in view: {mark}")
    for r in table["rows"]:
        if r["cells"] is None or r["evaluation"].endswith("/val"):
            continue
        method = _row_method(r["evaluation"])
        y = np.array([_pct(r["cells"][p]["accuracy"]) for p in order])
        if r["kind"] == "oracle":
            style = dict(color="black", ls="--", lw=1.4, marker="", label=r["label"])
        elif method == "softmax":
            style = dict(color=BASE_COLOR, ls="-", lw=1.6, marker="o", ms=4, label=f"{r['label']} (no method)")
        else:
            color = METHOD_COLORS.get(method, PALETTE[4])
            reg = POSTHOC.get(method) or DECOUPLED.get(method)
            name = reg.label if reg else method
            if r["kind"] == "prior":
                style = dict(color=color, ls="-.", lw=1.6, marker="s", ms=4, mfc="white",
                             label=f"{name} prior-aware ({r['strength_name']} on val re-weighted)")
            else:
                style = dict(color=color, ls="-", lw=1.8, marker="o", ms=4, label=r["label"])
        ax.plot(x, y, **style)
    ax.set_xticks(x, order, rotation=40, ha="right", fontsize=8)
    ax.set(xlim=(-0.5, len(order) - 0.5), ylabel="accuracy % under the test prior",
           xlabel="test label distribution: tail-heavy (backward) .. balanced .. head-heavy (forward)",
           title="accuracy under label shift (LADE / SADE test priors)")
    ax.grid(alpha=0.3)
    fig.legend(fontsize=7, loc="outside right upper")
    return fig


def reliability_figure(table: dict, evaluations: list[str] | None = None) -> Figure:
    """Reliability diagrams from a calibration table (``evaluation.analysis.calibration_table``): one panel per
    evaluation (default: every one the run holds), accuracy in each of the table's equal-width confidence bins
    as it is (filled bars) and after the validation-fitted temperature (outlined bars), against the diagonal of a
    calibrated model; the title gives ECE before -> after and T. Empty bins are not drawn. An evaluation named in
    ``evaluations`` that the table lacks is refused in one line naming the ones it has."""
    from lt_kit.errors import LtKitError
    have = [r["evaluation"] for r in table["rows"] if r["raw"] is not None]
    unknown = [e for e in evaluations or () if e not in have]
    if unknown or not have:
        raise LtKitError(f"no calibration data for {', '.join(unknown) or 'any evaluation'}; the table has: "
                         f"{', '.join(have) or 'none'}")
    rows = [r for r in table["rows"] if r["evaluation"] in (evaluations or have)]
    ncols = min(4, len(rows))
    fig, axes = new_figure(ncols, math.ceil(len(rows) / ncols), width=2.9, height=2.9)
    for ax, r in zip(axes, rows):
        raw = r["raw"]["overall"]["reliability"]
        lo, hi = np.asarray(raw["lo"]), np.asarray(raw["hi"])
        acc = 100 * np.asarray(raw["accuracy"], dtype=float)
        seen = ~np.isnan(acc)                                    # an empty bin has no accuracy: not drawn
        ax.bar(lo[seen], acc[seen], width=(hi - lo)[seen], align="edge", color=TDE_COLOR, alpha=0.55,
               edgecolor="white", label="as it is")
        title = f"ECE {100 * r['raw']['overall']['ece']:.1f}"
        if r["scaled"] is not None:
            acc_t = 100 * np.asarray(r["scaled"]["overall"]["reliability"]["accuracy"], dtype=float)
            seen = ~np.isnan(acc_t)
            ax.bar(lo[seen], acc_t[seen], width=(hi - lo)[seen], align="edge", fill=False, edgecolor="black",
                   lw=1.2, label="after T (fitted on val)")
            title += f" -> {100 * r['scaled']['overall']['ece']:.1f} (T {r['temperature']:.2g})"
        ax.plot([0, 1], [0, 100], ls="--", color=BASE_COLOR, lw=1, label="calibrated")
        ax.set(xlim=(0, 1), ylim=(0, 100), xlabel="confidence (max probability)")
        ax.set_title(f"{r['evaluation']}\n{title}", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(rows):]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("accuracy % in the bin")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncols=3)
    fig.suptitle(f"reliability on the test set ({table['bins']} equal-width confidence bins; ECE in points)",
                 fontsize=10)
    return fig


# --------------------------------------------------------------------------- momentum_direction.ipynb
def _head_units(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Per-head unit vectors, concatenated and scaled by 1/sqrt(H): a unit vector whose dot product with
    another such vector is the mean over heads of the per-head cosines (what TDE uses, head by head)."""
    return (unit_norm(split_heads(t.float(), num_heads)) / math.sqrt(num_heads)).flatten(-2)


def class_alignment(cache) -> np.ndarray:
    """(C,) cos(d_hat, w_c): the direction against each class's classifier weight, per head, mean over heads."""
    w = _head_units(cache.weight, cache.num_heads)
    d = _head_units(cache.direction, cache.num_heads)
    return (w @ d).numpy()


def sample_cos(cache) -> np.ndarray:
    """(N,) cos(x, d_hat) of every test feature (per head, mean over heads): the factor TDE scales by alpha."""
    return cos_to_direction(cache.features.float(), cache.direction, cache.num_heads).mean(1).numpy()


def cos_by_split(cache) -> dict[str, np.ndarray]:
    """cos(x, d_hat) of the test images grouped by their class's split (many/medium/few; empty splits left out)."""
    cos, labels = sample_cos(cache), cache.labels.numpy()
    groups = shot_groups(cache.shot_counts, cache.many_threshold, cache.few_threshold)
    return {k: cos[np.isin(labels, idx)] for k, idx in groups.items() if len(idx)}


def direction_projection(cache, max_points: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """Test features in 2-D: x = cos(x, d_hat) (the projection on the direction), y = the projection on the
    first principal component of what is left (orthogonal to d_hat). Features are per-head unit vectors,
    so every point lies in the unit disc and d_hat itself is the point (1, 0)."""
    n = len(cache.labels)
    idx = np.sort(np.random.RandomState(seed).permutation(n)[:max_points]) if n > max_points else np.arange(n)
    x = _head_units(cache.features[idx], cache.num_heads)
    d = _head_units(cache.direction, cache.num_heads)
    along = x @ d
    rest = x - along[:, None] * d
    centred = rest - rest.mean(0)
    pc = torch.linalg.svd(centred, full_matrices=False).Vh[0] if len(idx) > 1 else torch.zeros_like(d)
    across = rest @ pc
    share = float((across - across.mean()).var() / centred.pow(2).sum(1).mean()) if len(idx) > 1 else 0.0
    return {"x": along.numpy(), "y": across.numpy(), "labels": cache.labels[idx].numpy(), "pc_share": share}


def logit_shift(cache, alpha: float) -> dict[str, np.ndarray]:
    """Each class's mean logit over all test images at alpha 0 and at ``alpha``; TDE subtracts
    alpha * cos(x, d_hat) * <d_hat, w_c> (zero for the linear head, which TDE does not apply to)."""
    from lt_kit.evaluation.summary import AlphaEvaluator
    ev = AlphaEvaluator(cache)
    return {"alpha0": ev.logits(0.0).mean(0).numpy(), "alpha": ev.logits(alpha).mean(0).numpy()}


def alignment_figure(alignment: np.ndarray, train_counts, class_names: list[str] | None = None) -> Figure:
    counts = np.asarray(train_counts)
    fig, (ax,) = new_figure(width=5.6, height=3.4)
    ax.scatter(counts, alignment, c=PALETTE[0], s=28, zorder=3)
    if len(counts) <= 20:
        for i, name in enumerate(class_names or range(len(counts))):
            ax.annotate(str(name), (counts[i], alignment[i]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    r = np.corrcoef(np.log(counts), alignment)[0, 1] if len(counts) > 2 and np.ptp(counts) > 0 else float("nan")
    ax.axhline(0, color="#aaaaaa", lw=0.8)
    ax.set(xscale="log", xlabel="training images of the class (log)", ylabel="cos(d_hat, w_c)",
           title=f"direction vs class weights (corr. with log count {r:+.2f})")
    ax.grid(alpha=0.3)
    return fig


def cos_split_figure(by_split: dict[str, np.ndarray]) -> Figure:
    import seaborn as sns
    fig, (ax,) = new_figure(width=5.0, height=3.4)
    names = list(by_split)
    x = np.concatenate([[f"{k}\n(n={len(v)})"] * len(v) for k, v in by_split.items()])
    y = np.concatenate(list(by_split.values()))
    sns.violinplot(x=x, y=y, ax=ax, hue=x, palette=[SPLIT_COLORS[k] for k in names], cut=0, inner="quart",
                   legend=False)
    ax.set(xlabel="test images of the split's classes", ylabel="cos(x, d_hat)",
           title="how far each test feature points along d_hat")
    ax.grid(alpha=0.3, axis="y")
    return fig


def projection_figure(proj: dict, train_counts, class_names: list[str] | None = None) -> Figure:
    counts = np.asarray(train_counts)
    rank = np.empty(len(counts), dtype=int)
    rank[head_to_tail(counts)] = np.arange(len(counts))
    fig, (ax,) = new_figure(width=5.6, height=4.6)
    if len(counts) <= 10:
        colors = [PALETTE[rank[c]] for c in proj["labels"]]
    else:
        import matplotlib
        colors = matplotlib.colormaps["viridis"](rank[proj["labels"]] / max(len(counts) - 1, 1))
    ax.scatter(proj["x"], proj["y"], c=colors, s=7, alpha=0.6, linewidths=0)
    # The data sit in a small part of the unit disc (features after ReLU all point roughly along d_hat), so
    # zoom to them and draw d_hat as the direction of the x axis rather than as a unit arrow from 0.
    x0, x1 = np.percentile(proj["x"], [0.5, 99.5]) if len(proj["x"]) else (0.0, 1.0)
    y0, y1 = np.percentile(proj["y"], [0.5, 99.5]) if len(proj["y"]) else (-1.0, 1.0)
    pad_x, pad_y = 0.08 * max(x1 - x0, 1e-3), 0.08 * max(y1 - y0, 1e-3)
    ax.set(xlim=(x0 - pad_x, x1 + pad_x), ylim=(y0 - pad_y, y1 + 3 * pad_y))
    ax.annotate("d_hat", xy=(0.97, 0.95), xytext=(0.62, 0.95), xycoords="axes fraction", va="center",
                fontsize=10, weight="bold", arrowprops=dict(arrowstyle="-|>", color="black", lw=1.6))
    if len(counts) <= 10:
        for c in head_to_tail(counts):
            ax.scatter([], [], color=PALETTE[rank[c]], s=20,
                       label=f"{(class_names or range(len(counts)))[c]} ({counts[c]} imgs)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), title="class (head -> tail)",
                  title_fontsize=7)
    ax.set(xlabel="cos(x, d_hat): along the direction",
           ylabel=f"first PC orthogonal to d_hat ({100 * proj['pc_share']:.0f}% of the rest)",
           title="test features, projected")
    ax.grid(alpha=0.3)
    return fig


def logit_shift_figure(shift: dict[str, np.ndarray], train_counts, alpha: float,
                       class_names: list[str] | None = None) -> Figure:
    order = head_to_tail(train_counts)
    names = [str((class_names or range(len(order)))[i]) for i in order]
    fig, (a, b) = new_figure(2, width=4.4, height=3.3)
    x = np.arange(len(order))
    a.plot(x, shift["alpha0"][order], marker="o", ms=4, color=BASE_COLOR, label="alpha 0")
    a.plot(x, shift["alpha"][order], marker="s", ms=4, color=TDE_COLOR, label=f"alpha {alpha:g}")
    a.set(ylabel="mean logit over the test images", title="each class's mean logit")
    a.legend(fontsize=8)
    delta = shift["alpha"][order] - shift["alpha0"][order]
    b.bar(x, delta, color=[PALETTE[3] if v < 0 else PALETTE[2] for v in delta])
    b.axhline(0, color="#777777", lw=0.8)
    b.set(ylabel="change of the mean logit", title=f"TDE's shift at alpha {alpha:g}")
    for ax in (a, b):
        _class_ticks(ax, names)
        ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------- compare.ipynb
def sd_band(mean, sd, lo: float = 0.0, hi: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """The band mean ± sd cut to what an accuracy can be, [lo, hi] percent: a class at 98 % ± 5 over seeds
    is drawn up to 100, not 103 (the sd describes the spread, not values beyond the scale). NaN stays NaN."""
    mean, sd = np.asarray(mean, float), np.asarray(sd, float)
    return np.clip(mean - sd, lo, hi), np.clip(mean + sd, lo, hi)


def per_class_band_figure(curves: list[tuple], *, title: str = "per-class accuracy") -> Figure:
    """Per-class accuracy against training count, one line per group of runs with a band of ± one sd.

    ``curves``: (label, train_counts, mean, sd) per group, accuracies as fractions (sd NaN: no band)."""
    fig, (ax,) = new_figure(width=7.0, height=3.4 + 0.2 * len(curves))
    for i, (label, counts, mean, sd) in enumerate(curves):
        counts, mean, sd = np.asarray(counts), 100 * np.asarray(mean, float), 100 * np.asarray(sd, float)
        order = head_to_tail(counts)
        x, m, s = counts[order], mean[order], sd[order]
        color = PALETTE[i % len(PALETTE)]
        ax.plot(x, m, color=color, marker="o" if len(x) <= 30 else None, ms=3.5, lw=1.4, label=label)
        band = np.isfinite(s)
        if band.any():
            ax.fill_between(x, *sd_band(m, s), where=band, color=color, alpha=0.18, lw=0)
    ax.set(xscale="log", ylim=(0, 105), xlabel="training images of the class (log)", ylabel="test accuracy %",
           title=title)
    ax.grid(alpha=0.3)
    fig.legend(fontsize=7, loc="outside lower center")       # below the axes: long group labels hide no data
    return fig


def split_bars_figure(bars: list[tuple], *, title: str = "accuracy per split") -> Figure:
    """Grouped bars per split (many, medium, few, overall): one colour per group of runs, error bars of
    ± one sd, and each run's own value as a dot.

    ``bars``: (label, {split: (n, mean, sd)}, {split: [each run's value]}) per group, fractions."""
    splits = list(bars[0][1]) if bars else []
    fig, (ax,) = new_figure(width=7.0, height=3.4 + 0.2 * len(bars))
    width = 0.8 / max(len(bars), 1)
    for i, (label, stats, values) in enumerate(bars):
        x = np.arange(len(splits)) - 0.4 + width * (i + 0.5)
        mean = np.array([100 * stats[k][1] for k in splits])
        sd = np.array([100 * stats[k][2] for k in splits])
        color = PALETTE[i % len(PALETTE)]
        ax.bar(x, mean, width * 0.92, color=color, alpha=0.85, label=label)
        ok = np.isfinite(sd) & np.isfinite(mean)
        low, high = sd_band(mean[ok], sd[ok])           # error bars cut to [0, 100] % as the band is
        ax.errorbar(x[ok], mean[ok], yerr=[mean[ok] - low, high - mean[ok]], fmt="none", ecolor="#222222",
                    elinewidth=1.2, capsize=3)
        for j, k in enumerate(splits):
            v = 100 * np.asarray([u for u in values[k] if u == u], float)
            ax.scatter(x[j] + np.linspace(-0.25, 0.25, len(v)) * width if len(v) > 1 else [x[j]] * len(v), v,
                       s=9, color="#222222", zorder=3, linewidths=0)
            if not np.isfinite(mean[j]):
                ax.text(x[j], 2, "-", ha="center", fontsize=8, color="#777777")
    ax.set_xticks(range(len(splits)), splits)
    ax.set(ylim=(0, 105), ylabel="test accuracy %", title=title)
    ax.grid(alpha=0.3, axis="y")
    fig.legend(fontsize=7, loc="outside lower center")
    return fig
