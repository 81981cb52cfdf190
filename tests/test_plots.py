"""The notebooks' compute and figure functions (lt_kit.plots, lt_kit.explorer) and their parameter checks
(lt_kit.notebook), on small caches built here. No kernel, no training: seconds in total."""
from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

import lt_kit.views.plots as plots
from lt_kit.errors import LtKitError
from lt_kit.evaluation.features import FeatureCache
from lt_kit.evaluation.summary import AlphaEvaluator, MethodEvaluator, choose_on_val
from lt_kit.maths.tde import cos_to_direction, tde_logits
from lt_kit.views.explorer import AlphaExplorer
from lt_kit.views.notebook import (
    DIRECTION_PARAMS,
    EXPLORER_PARAMS,
    base_dir,
    check_parameters,
    injected_names,
    resolve_path,
)

PNG = b"\x89PNG"


def make_cache(n_per_class: int = 20, counts=(120, 70, 40, 20, 10, 5), dim: int = 8, heads: int = 2,
               head: str = "causal_norm", seed: int = 0) -> FeatureCache:
    """Features = a shared positive 'head bias' + a class signal, like post-ReLU features; the direction is
    their mean, so TDE has something to remove."""
    g = torch.Generator().manual_seed(seed)
    c = len(counts)
    labels = torch.arange(c).repeat_interleave(n_per_class)
    centres = torch.randn(c, dim, generator=g)
    feats = (torch.rand(len(labels), dim, generator=g) + 1.0 + 0.8 * centres[labels]).clamp_min(0)
    weight = centres + 0.5 * feats.mean(0) * torch.linspace(1, 0, c)[:, None]   # head classes lean on d
    return FeatureCache(feats, labels, weight, feats.mean(0) * 7, head, heads, 16.0, 1 / 32, list(counts),
                        [f"c{i}" for i in range(c)], many_threshold=60, few_threshold=15)


@pytest.fixture(scope="module")
def cache() -> FeatureCache:
    return make_cache()


# --------------------------------------------------------------------------- direction maths
def test_class_alignment_is_the_per_head_cosine_of_weight_and_direction():
    d = torch.tensor([1.0, 0.0, 0.0, 2.0])                     # head 0: e0, head 1: e1 (after normalising)
    w = torch.tensor([[3.0, 0.0, 0.0, 1.0],                     # cos 1 in both heads
                      [-1.0, 0.0, 0.0, -5.0],                   # cos -1 in both
                      [0.0, 1.0, 0.0, 1.0],                     # head 0: 0, head 1: 1 -> mean 0.5
                      [0.0, 2.0, 1.0, 0.0]])                    # orthogonal in both
    c = FeatureCache(torch.zeros(1, 4), torch.zeros(1, dtype=torch.long), w, d, "causal_norm", 2, 16.0, 1 / 32,
                     [5, 4, 3, 2], list("abcd"))
    assert np.allclose(plots.class_alignment(c), [1.0, -1.0, 0.5, 0.0], atol=1e-6)


def test_sample_cos_and_split_groups(cache):
    cos = plots.sample_cos(cache)
    assert np.allclose(cos, cos_to_direction(cache.features, cache.direction, 2).mean(1).numpy())
    groups = plots.cos_by_split(cache)            # counts (120, 70, 40, 20, 10, 5), many > 60, few < 15
    assert {k: len(v) for k, v in groups.items()} == {"many": 40, "medium": 40, "few": 40}
    labels = cache.labels.numpy()
    assert np.allclose(np.sort(groups["few"]), np.sort(cos[labels >= 4]))


def test_cos_by_split_leaves_out_an_empty_split():
    c = make_cache(counts=(500, 300, 50, 20))    # no class under 15 images: no few-shot split
    assert set(plots.cos_by_split(c)) == {"many", "medium"}


def test_projection_x_is_cos_to_direction_and_points_lie_in_the_unit_disc(cache):
    p = plots.direction_projection(cache)
    assert np.allclose(p["x"], plots.sample_cos(cache), atol=1e-5)
    assert np.all(p["x"] ** 2 + p["y"] ** 2 <= 1 + 1e-5)
    assert 0 < p["pc_share"] <= 1 and p["y"].std() > 0
    sub = plots.direction_projection(cache, max_points=25, seed=3)
    again = plots.direction_projection(cache, max_points=25, seed=3)
    assert len(sub["x"]) == 25 and np.array_equal(sub["labels"], again["labels"])


def test_logit_shift_matches_eq8(cache):
    s = plots.logit_shift(cache, 1.5)
    kw = dict(cn_tau=cache.cn_tau, gamma=cache.gamma, num_heads=cache.num_heads)
    ref0 = tde_logits(cache.features, cache.weight, cache.direction, 0.0, **kw).mean(0).numpy()
    ref = tde_logits(cache.features, cache.weight, cache.direction, 1.5, **kw).mean(0).numpy()
    assert np.allclose(s["alpha0"], ref0, atol=1e-5) and np.allclose(s["alpha"], ref, atol=1e-5)
    shift = s["alpha"] - s["alpha0"]
    assert shift[0] < shift[-1]               # the head class leans most on d, so it loses most
    lin = plots.logit_shift(make_cache(head="linear"), 1.5)
    assert np.allclose(lin["alpha"], lin["alpha0"])        # TDE does not apply to the linear head


def test_head_to_tail_best_alpha_and_split_rules():
    assert plots.head_to_tail([5, 50, 5, 20]).tolist() == [1, 3, 0, 2]
    sweep = [{"alpha": 0.0, "overall": 0.5}, {"alpha": 0.5, "overall": 0.7}, {"alpha": 1.0, "overall": 0.7},
             {"alpha": 1.5, "overall": float("nan")}]
    assert plots.best_alpha(sweep) == 0.5
    r = plots.split_rules([120, 70, 40, 20, 10, 5], 60, 15)
    assert r["many"] == "> 60 imgs (2 cls)" and r["few"] == "< 15 (2 cls)" and r["head"].startswith("> median 30")


# --------------------------------------------------------------------------- figures
def _history(val: bool):
    return [{"epoch": e, "lr": 0.1 / e, "loss": 2.0 / e, "train_acc": 0.1 * e, **({"val_acc": 0.05 * e} if val else {})}
            for e in range(1, 5)]


def test_figures_render(cache, tmp_path):
    ev = AlphaEvaluator(cache)
    m = {"alpha": 1.0, "head": "causal_norm", "softmax": ev.metrics(0.0), "tde": ev.metrics(1.0),
         "train_counts": cache.train_counts, "class_names": cache.class_names, "thresholds": {"many": 60, "few": 15}}
    curves = plots.training_curves(_history(val=True))
    assert len(curves.axes) == 3 and len(curves.axes[2].lines) == 2       # train and val accuracy
    assert len(plots.training_curves(_history(val=False)).axes[2].lines) == 1
    per_class = plots.per_class_vs_count(m)
    assert [ln.get_label() for ln in per_class.axes[0].lines[:2]] == ["De-confound (alpha 0)",
                                                                        "De-confound-TDE (alpha 1)"]
    assert np.allclose(per_class.axes[0].lines[1].get_ydata(), 100 * np.asarray(m["tde"]["per_class"]))
    figs = [curves, per_class,
            plots.alignment_figure(plots.class_alignment(cache), cache.train_counts, cache.class_names),
            plots.cos_split_figure(plots.cos_by_split(cache)),
            plots.projection_figure(plots.direction_projection(cache), cache.train_counts, cache.class_names),
            plots.logit_shift_figure(plots.logit_shift(cache, 1.0), cache.train_counts, 1.0, cache.class_names)]
    for fig in figs:
        assert isinstance(fig, Figure)
        assert plots.to_png(fig).startswith(PNG)
    path = plots.save_figure(figs[0], tmp_path / "sub" / "curves.png")
    assert path.read_bytes().startswith(PNG)


def test_sweep_figure_marks_alphas_and_skips_an_empty_split():
    c = make_cache(counts=(500, 300, 50, 20))               # no few-shot class, as on CIFAR-10-LT
    ex = AlphaExplorer(c, preset_alpha=1.0, alpha_max=2.0)
    sweep = ex.sweep(0.25)
    assert [s["alpha"] for s in sweep] == pytest.approx(np.arange(0, 2.01, 0.25))
    labels = [ln.get_label() for ln in ex.sweep_figure(sweep).axes[0].lines]
    assert not any(lbl.startswith("few") for lbl in labels)
    assert any(lbl.startswith("head (> median") for lbl in labels)
    assert any(lbl.startswith(f"best overall: alpha {plots.best_alpha(sweep):g}") and
               lbl.endswith("for reading, chosen on test") for lbl in labels)
    assert "preset alpha 1 (paper rule)" in labels


# --------------------------------------------------------------------------- label shift: the prior figure
def _hand_table(val: bool = True) -> tuple[dict, dict]:
    """A shift table (``evaluation.analysis.shift_table``'s shape) made by hand from per-class accuracies of 4
    classes, and those accuracies: head-good, tail-good, in between."""
    from lt_kit.maths.shift import named_prior, prior_names, prior_weighted_accuracy
    counts = [400, 100, 20, 5]
    acc = {"softmax": [0.9, 0.7, 0.3, 0.1], "tde": [0.8, 0.7, 0.5, 0.4], "tde/val": [0.8, 0.7, 0.5, 0.4],
           "tde/prior": [0.85, 0.72, 0.5, 0.45], "logit_adjust/rule": [0.6, 0.6, 0.6, 0.6],
           "logit_adjust/prior": [0.7, 0.65, 0.55, 0.5], "logit_adjust/oracle": [0.95, 0.8, 0.7, 0.65]}
    kinds = {"tde/prior": "prior", "logit_adjust/prior": "prior", "logit_adjust/oracle": "oracle"}
    priors = {p: named_prior(p, counts) for p in prior_names()}          # forward50 first, train last
    rows = []
    for name, a in acc.items():
        unavailable = not val and name.endswith(("/val", "/prior"))
        cells = None if unavailable else {p: {"accuracy": float(prior_weighted_accuracy(np.array(a), w)),
                                              "strength": 1.0} for p, w in priors.items()}
        rows.append({"evaluation": name, "label": f"row {name}", "kind": kinds.get(name, "fixed"),
                     "strength_name": "alpha" if name.startswith("tde") else "tau", "strength": 1.0, "cells": cells,
                     "why": "no validation split" if unavailable else None})
    return {"priors": {k: v.tolist() for k, v in priors.items()}, "rows": rows}, acc


def test_prior_figure_draws_one_line_per_method_over_the_priors_in_protocol_order():
    from lt_kit.maths.shift import named_prior, prior_weighted_accuracy
    table, acc = _hand_table()
    order = ["backward50", "backward25", "backward10", "backward5", "backward2", "uniform", "forward2", "forward5",
             "forward10", "forward25", "forward50"]
    assert plots.protocol_priors() == order
    fig = plots.prior_figure(table, mark="forward10")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == order          # backward50 .. uniform .. forward50
    lines = {ln.get_label(): ln for ln in ax.lines}
    drawn = [n for n in acc if not n.endswith("/val")]                     # the balanced val choice: not a line
    assert len(ax.lines) == len(drawn)
    labels = list(lines)
    assert labels[0] == "row softmax (no method)" and "row tde" in labels and "row logit_adjust/rule" in labels
    assert "row logit_adjust/oracle" in labels and lines["row logit_adjust/oracle"].get_linestyle() == "--"
    prior_aware = [lbl for lbl in labels if "prior-aware" in lbl]
    assert prior_aware == ["TDE prior-aware (alpha on val re-weighted)", "logit adj. prior-aware (tau on val re-weighted)"]
    counts = [400, 100, 20, 5]
    for ln, name in zip(ax.lines, drawn):
        want = [100 * prior_weighted_accuracy(np.array(acc[name]), named_prior(p, counts)) for p in order]
        assert np.allclose(ln.get_xdata(), np.arange(11)) and np.allclose(ln.get_ydata(), want), name
    # by hand: a flat per-class accuracy is flat over every prior; head-good falls from forward to backward
    assert np.allclose(lines["row logit_adjust/rule"].get_ydata(), 60.0)
    y = lines["row softmax (no method)"].get_ydata()
    assert y[order.index("uniform")] == pytest.approx(50.0) and np.all(np.diff(y) > 0)
    (shade,) = ax.patches                                                  # the prior in view, shaded
    assert shade.get_label() == "test prior in view: forward10"
    assert plots.to_png(fig).startswith(PNG)


def test_prior_figure_without_a_validation_split_draws_no_prior_aware_line():
    table, acc = _hand_table(val=False)
    fig = plots.prior_figure(table)
    labels = [ln.get_label() for ln in fig.axes[0].lines]
    assert not any("prior-aware" in lbl for lbl in labels) and len(labels) == 4 and not fig.axes[0].patches


# --------------------------------------------------------------------------- the explorer
def test_explorer_test_prior_reweights_the_readout_and_moves_the_val_choice(cache):
    """A prior change: the readout's overall is the prior-weighted mean of per-class accuracy at the strength
    (the splits weighted within their classes), the curve is the per-class grid times the prior, the marked
    val-chosen strength is the one the re-weighted validation split prefers (tail-heavy priors want more TDE
    on this cache), the best on test is marked apart, and uniform gives the numbers back as they were."""
    from lt_kit.maths.metrics import per_class_accuracy, shot_groups
    from lt_kit.maths.shift import named_prior, prior_weighted_accuracy
    val = make_cache(seed=5)
    ex = AlphaExplorer(cache, preset_alpha=1.0, val_cache=val)
    m0, png0 = ex.render(1.0)
    text0 = ex.readout(1.0, m0)
    assert ex.prior_name == "uniform" and "| test prior uniform, val-chosen alpha " in text0
    assert ex.val_choice() == ex.val_strength                    # uniform: the balanced choice, as recorded
    per_class = np.asarray(AlphaEvaluator(cache).metrics(1.0)["per_class"])
    labels = val.labels.numpy()
    ev_val = AlphaEvaluator(val)
    val_grid = np.stack([per_class_accuracy(ev_val.predict(s), labels, 6) for s in ex.grid()["val_strengths"]])
    chosen = {}
    for name in ("forward50", "backward50"):
        w = named_prior(name, cache.train_counts)
        m, png = ex.render(prior=name)
        want = 100 * prior_weighted_accuracy(per_class, w)
        assert m["overall"] * 100 == pytest.approx(want) and png != png0
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(ex._canvas.buffer_rgba())[..., :3])
        many = shot_groups(cache.shot_counts, 60, 15)["many"]
        assert m["many"] == pytest.approx(prior_weighted_accuracy(per_class[many], w[many]))
        text = ex.readout(1.0, m)
        assert text.startswith(f"alpha 1.00: overall {want:.1f}% (alpha 0: ") and f"| test prior {name}," in text
        assert f"{ex.at_prior(ex.base)['overall'] * 100:.1f}%)" in text
        assert np.allclose(ex.curve(), 100 * ex.grid()["test"] @ w)           # a matrix-vector product
        chosen[name] = ex.val_choice()
        expected = ex.grid()["val_strengths"][int(np.argmax(val_grid @ w))]  # by hand, on the validation split
        assert chosen[name] == pytest.approx(expected)
        assert f"val-chosen alpha {chosen[name]:.2f}" in text
        assert ex._val_mark.get_xdata()[0] == pytest.approx(chosen[name])
        best, top = ex.test_best()
        assert ex._best_mark.get_xdata()[0] == best and top == pytest.approx(ex.curve().max())
    assert chosen["forward50"] < chosen["backward50"]                # the val-chosen strength moves with the prior
    m, png = ex.render(prior="uniform")
    assert ex.readout(1.0, m).split(" | redraw")[0] == text0.split(" | redraw")[0] and m == m0
    # the same choice as the shift table's prior-aware row (evaluation.analysis), for every prior
    rows = {r["evaluation"]: r for r in ex.shift_table()["rows"]}
    for name in ex.priors[:-1]:                                      # the last is "estimated" (its own test)
        ex.set_prior(name)
        if name != "uniform":
            assert rows["tde/prior"]["cells"][name]["strength"] == pytest.approx(ex.val_choice()), name
    with pytest.raises(LtKitError, match="test prior must be one of backward50, .*, forward50 .*got 'sideways'"):
        ex.set_prior("sideways")
    b = ex.benchmark(4)
    assert b["prior_changes"] == 4 and b["prior_median_ms"] < 1000 and ex.prior_name == "forward50"


def test_explorer_estimated_prior_chooses_on_the_estimate_and_scores_on_the_drawn_truth(cache):
    """The control's last entry, "estimated": one test set drawn to ``estimate_from``, its prior read by EM (or
    BBSE) from the drawn images' head logits (the same estimate ``evaluation.adaptation`` makes for that draw);
    accuracies weight the drawn set's true class frequencies; the strength is chosen on the validation split
    re-weighted to the estimate, the oracle's (re-weighted to the truth) beside it; the readout, the titles and
    the estimate's line say so. Without a validation split there is no such entry and asking for it is refused."""
    from lt_kit.evaluation.adaptation import estimators_from_logits
    from lt_kit.maths.draws import draw_test_sets
    from lt_kit.maths.prior_estimation import tv_distance
    from lt_kit.maths.shift import choose_for_prior, named_prior, prior_weighted_accuracy
    from lt_kit.methods import head_logits
    val = make_cache(seed=5)
    est = estimators_from_logits(head_logits(cache), head_logits(val), val.labels.numpy(), cache.train_counts,
                                 cache.class_names)
    for estimator, source in (("em", "forward50"), ("bbse", "backward10")):
        ex = AlphaExplorer(cache, preset_alpha=1.0, val_cache=val, estimator=estimator, estimate_from=source)
        assert ex.priors[-1] == "estimated" and ex.priors[:-1] == plots.protocol_priors()
        counts, (idx,) = draw_test_sets(cache.labels.numpy(), named_prior(source, cache.train_counts), 6, draws=1)
        e = ex.estimated
        assert np.array_equal(e.true, counts / counts.sum()) and e.size == counts.sum() == len(idx)
        assert np.allclose(e.estimate, est.estimate(idx)[estimator]) and e.error == tv_distance(e.estimate, e.true)
        m, _ = ex.render(1.0, prior="estimated")
        per_class = np.asarray(AlphaEvaluator(cache).metrics(1.0)["per_class"])
        assert m["overall"] == pytest.approx(prior_weighted_accuracy(per_class, e.true))
        g = ex.grid()
        assert ex.val_choice() == g["val_strengths"][choose_for_prior(g["val"], e.estimate)]
        assert ex.oracle_choice() == g["val_strengths"][choose_for_prior(g["val"], e.true)]
        text = ex.readout(1.0, m)
        assert (f"| test prior estimated ({estimator.upper()} from a {source} draw, error TV {e.error:.3f}), "
                f"val-chosen alpha {ex.val_choice():.2f} (knowing the prior: {ex.oracle_choice():.2f}) |") in text
        assert ex._est_line.get_visible() and ex._oracle_mark.get_xdata()[0] == ex.oracle_choice()
        assert ex._s_title.get_text().startswith(f"{estimator.upper()} est. of {source}: val ")
        assert f"{estimator.upper()} from {e.size} unlabelled test images drawn to {source}" in ex.describe()
        assert "knowing the drawn set's prior, the validation split chooses alpha" in ex.sweep_summary(ex.sweep(0.5))
        ex.render(prior="forward50")                                 # a named prior: no estimate drawn, no oracle
        assert not ex._est_line.get_visible() and ex.oracle_choice() is None and len(ex._oracle_mark.get_xdata()) == 0
    assert ex.figure_name("sweep") == "tde_sweep_forward50"
    ex.set_prior("estimated")
    assert ex.figure_name("sweep") == "tde_sweep_estimated_bbse_backward10"
    # a validation split without one class: no estimate (BBSE's confusion matrix, EM's calibration need every
    # class); the entry is left out, asking for it says why, and the explorer stays where it was
    keep = val.labels != 5
    short = FeatureCache(val.features[keep], val.labels[keep], val.weight, val.direction, val.head, val.num_heads,
                         val.cn_tau, val.gamma, val.train_counts, val.class_names, many_threshold=60, few_threshold=15)
    ex = AlphaExplorer(cache, preset_alpha=1.0, val_cache=short, test_prior="forward10")
    assert "estimated" not in ex.priors and "test prior 'estimated' is not available: " in ex.describe()
    with pytest.raises(LtKitError, match="test prior 'estimated' is not available: .*class c5 has no validation"):
        ex.set_prior("estimated")
    assert ex.prior_name == "forward10" and ex.val_choice() is not None
    with pytest.raises(LtKitError, match="test prior 'estimated' is not available"):
        AlphaExplorer(cache, preset_alpha=1.0, val_cache=short, test_prior="estimated")
    plain = AlphaExplorer(cache, preset_alpha=1.0)
    assert "estimated" not in plain.priors and "no 'estimated' test prior: no validation split" in plain.describe()
    with pytest.raises(LtKitError, match="test prior 'estimated' needs a validation split"):
        AlphaExplorer(cache, preset_alpha=1.0, test_prior="estimated")
    with pytest.raises(LtKitError, match="estimator must be one of em, bbse, got 'mle'"):
        AlphaExplorer(cache, preset_alpha=1.0, val_cache=val, estimator="mle")       # bad even if not in view


def test_sweep_under_a_prior_is_reweighted_and_says_so(cache):
    val = make_cache(seed=5)
    ex = AlphaExplorer(cache, preset_alpha=1.0, val_cache=val, test_prior="backward10")
    sweep = ex.sweep(0.5)
    ev = AlphaEvaluator(cache)
    from lt_kit.maths.shift import named_prior, prior_weighted_accuracy
    w = named_prior("backward10", cache.train_counts)
    for s in sweep:
        assert s["overall"] == pytest.approx(prior_weighted_accuracy(np.asarray(ev.metrics(s["alpha"])["per_class"]), w))
    text = ex.sweep_summary(sweep)
    assert text.startswith("test prior backward10") and "(validation split re-weighted to backward10)" in text
    fig = ex.sweep_figure(sweep)
    assert fig.axes[0].get_title() == "TDE: accuracy vs alpha, test prior backward10"
    assert f"val-chosen alpha {ex.val_choice():g} (validation split re-weighted to backward10)" in \
        [ln.get_label() for ln in fig.axes[0].lines]
    assert ex.figure_name("sweep") == "tde_sweep_backward10"
    ex.set_prior("uniform")
    assert ex.figure_name("sweep") == "tde_sweep"


def test_explorer_render_tracks_the_evaluator_and_is_fast(cache):
    ex = AlphaExplorer(cache, preset_alpha=1.0)
    m0, png0 = ex.render(0.0)
    m3, png3 = ex.render(3.0)
    ev = AlphaEvaluator(cache)
    assert m3["overall"] == ev.metrics(3.0)["overall"] and m3["pred_counts"] == ev.metrics(3.0)["pred_counts"]
    assert m0["pred_counts"] != m3["pred_counts"]             # TDE moves predictions on this cache...
    assert png0.startswith(PNG) and png0 != png3              # ...and the figure shows it
    assert np.allclose(ex._pred.get_data().values, np.asarray(m3["pred_counts"])[ex.order])
    text = ex.readout(3.0, m3)
    assert text.startswith("alpha 3.00: overall") and "median split: head" in text and "redraw" in text
    b = ex.benchmark(5)
    assert b["updates"] == 5 and b["median_ms"] < 1000     # "well under a second"; ~20-50 ms on a 2-core CPU
    assert math.isfinite(ex.rule_alpha) and "rule of thumb" in ex.describe()


def test_rule_of_thumb_alpha_comes_from_the_validation_split_or_says_test(cache, tmp_path):
    """The explorer and bench/alpha_sweep.py compute the rule of thumb on the validation features when the
    run has them; without them it is computed on the test features, and its accuracy is labelled so."""
    from lt_kit.maths.tde import rule_of_thumb_alpha
    val = make_cache(n_per_class=8, seed=9)
    on_val = rule_of_thumb_alpha(val.features, val.direction, val.num_heads)
    on_test = rule_of_thumb_alpha(cache.features, cache.direction, cache.num_heads)
    assert on_val != pytest.approx(on_test)
    ex, no_val = AlphaExplorer(cache, preset_alpha=1.0, val_cache=val), AlphaExplorer(cache, preset_alpha=1.0)
    assert (ex.rule_alpha, no_val.rule_alpha) == (on_val, on_test)
    for e, where in ((ex, "validation"), (no_val, "test")):
        line = next(ln for ln in e.sweep_summary(e.sweep(0.25)).splitlines() if ln.startswith("rule of thumb"))
        assert f"on the {where} features" in line and "test accuracy" in line, line
        assert f"on the {where} features" in e.describe()
    assert "for reading, chosen on test" in line

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import yaml
    from alpha_sweep import sweep_markdown

    from lt_kit.config import resolve
    run = tmp_path / "run"
    run.mkdir()
    (run / "params.yaml").write_text(yaml.safe_dump(resolve({})))
    cache.save(run / "features.pt")
    assert f"on the test features, for reading: {on_test:.2f}" in sweep_markdown(run)
    val.save(run / "val_features.pt")
    assert f"on the validation features: {on_val:.2f}" in sweep_markdown(run)


def test_explorer_slider_updates_label_and_figure(cache, monkeypatch):
    pytest.importorskip("ipywidgets")
    shown, updates = [], []

    class Handle:
        def update(self, obj):
            updates.append(obj.data)

    def fake_display(obj, display_id=None, **kw):
        shown.append(obj)
        return Handle() if display_id else None
    monkeypatch.setattr("IPython.display.display", fake_display)
    ex = AlphaExplorer(cache, preset_alpha=1.0)
    ex.show()
    assert ex.slider is not None and ex.slider.value == 1.0 and ex.slider.step == 0.01 and ex.slider.max == 3.0
    first = ex.label.value
    ex.slider.value = 2.5                                      # what a key press does through the front end
    assert ex.label.value != first and ex.label.value.startswith("alpha 2.50:")
    assert len(updates) == 1 and updates[0].startswith(PNG)
    assert ex.selector.options == (("TDE", "tde"), ("logit adj.", "logit_adjust"))
    ex.selector.value = "logit_adjust"                         # a click on the other button
    assert ex.method == "logit_adjust" and ex.slider.description == "tau" and ex.slider.value == 1.0
    assert ex.label.value.startswith("tau 1.00: overall") and len(updates) == 2 and updates[1] != updates[0]
    la = MethodEvaluator(cache, "logit_adjust").metrics(1.0)
    assert f"overall {100 * la['overall']:.1f}%" in ex.label.value
    ex.slider.value = 0.5
    assert ex.label.value.startswith("tau 0.50:") and len(updates) == 3
    assert ex.prior_control.options == tuple(plots.protocol_priors()) and ex.prior_control.value == "uniform"
    ex.prior_control.value = "forward25"                       # the test-prior control
    assert ex.label.value.startswith("tau 0.50: overall") and "| test prior forward25" in ex.label.value
    assert len(updates) == 4 and updates[3] != updates[2] and ex.prior_name == "forward25"
    ex.selector.value = "tde"                                  # a method change keeps the prior
    assert ex.label.value.startswith("alpha 1.00:") and "| test prior forward25" in ex.label.value


def test_explorer_on_a_linear_run_starts_on_logit_adjustment_and_marks_the_val_choice():
    lin = make_cache(head="linear")
    ex = AlphaExplorer(lin, preset_alpha=1.0, val_cache=make_cache(head="linear", seed=7))
    assert list(ex.methods) == ["logit_adjust", "tau_norm"] and ex.method == "logit_adjust"
    assert ex.val_strength == choose_on_val(ex.val_cache, "logit_adjust")["strength"]
    assert "TDE does not apply" in ex.describe()
    labels = [ln.get_label() for ln in ex.sweep_figure(ex.sweep(0.25)).axes[0].lines]
    assert f"val-chosen tau {ex.val_strength:g}" in labels and "preset tau 1 (paper rule)" in labels
    with pytest.raises(LtKitError, match="'tde' does not apply to the linear head"):
        ex.set_method("tde")


def test_comparison_marks_rule_and_val_on_every_method_and_labels_test_choices(cache):
    from lt_kit.views.posthoc import comparison_figure, comparison_table, method_curves
    val = make_cache(seed=5)
    curves = method_curves(cache, val, 1.0)
    assert [c["method"] for c in curves] == ["tde", "logit_adjust"]
    fig = comparison_figure(curves, "causal_norm")
    labels = [ln.get_label() for ln in fig.axes[1].lines]
    for c in curves:
        assert f"{c['label']} paper rule {c['strength_name']}={c['rule']:g}" in labels
        assert f"{c['label']} val-chosen {c['strength_name']}={c['val']:g}" in labels
    text = comparison_table(cache, val, 1.0)
    assert "De-confound-TDE (a=1)" in text and "val)" in text
    assert text.count("for reading, chosen on test") == 3            # two rows and the note
    assert "no validation split" in comparison_table(cache, None, 1.0)


def test_explorer_degrades_to_a_static_figure_without_ipywidgets(cache, monkeypatch, capsys, tmp_path):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append(obj))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)      # import ipywidgets -> ImportError
    ex = AlphaExplorer(cache, preset_alpha=1.0)
    ex.show(save=tmp_path / "figures" / "panel.png")
    assert ex.slider is None
    assert capsys.readouterr().out.startswith("alpha 1.00: overall")
    assert len(shown) == 1 and shown[0].data.startswith(PNG)
    assert (tmp_path / "figures" / "panel.png").read_bytes() == shown[0].data


def test_explorer_legend_covers_no_bar_and_is_not_cut_off(cache):
    """The legend sits outside every panel, so no bar, at any strength, can be behind it; and inside the
    figure, so the saved PNG shows all of it."""
    ex = AlphaExplorer(cache, preset_alpha=1.0)
    ex.render(3.0)                                   # tall tail bars: the case a legend in a corner covered
    fig = ex._fig
    renderer = ex._canvas.get_renderer()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    assert legends and "at the strength" in [t.get_text() for lg in legends for t in lg.get_texts()]
    bars = [patch for ax in fig.axes for patch in ax.patches]          # bar rectangles and the filled stairs
    for lg in legends:
        box = lg.get_window_extent(renderer)
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1), "legend cut off"
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), f"legend inside the panel {ax.get_title()!r}"
        for patch in bars:
            assert not box.overlaps(patch.get_window_extent(renderer)), "legend covers a bar"


def test_explorer_from_run_needs_a_feature_cache(tmp_path):
    with pytest.raises(LtKitError, match="not an lt_kit run"):
        AlphaExplorer.from_run(tmp_path)
    (tmp_path / "params.yaml").write_text("alpha: 1.0\n")
    with pytest.raises(LtKitError, match="stopped before its first complete epoch; train it again"):
        AlphaExplorer.from_run(tmp_path)
    for name in ("checkpoint.pt", "metrics.json"):              # a finished run that lost its cache
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(LtKitError, match="python -m lt_kit test --run-dir"):
        AlphaExplorer.from_run(tmp_path)


# --------------------------------------------------------------------------- notebook parameter checks
def test_injected_names_reads_papermills_cell():
    ns = {"In": ["", "run_dir: str = 'x'  # help", "# Parameters\nrun_dir = \"/r\"\nalpa = 2.0\n", "print(1)"]}
    assert injected_names(ns) == ["run_dir", "alpa"]
    assert injected_names({"In": ["", "x = 1"]}) is None and injected_names({}) is None


def test_check_parameters_rejects_unknown_and_ill_typed():
    base = {"run_dir": "/r", "method": "", "alpha_max": 3.0, "sweep_step": 0.05, "test_prior": "uniform",
            "estimate_from": "forward50", "estimator": "em", "draws": 10}
    ns = {**base, "alpa_max": 2.0, "In": ["", "# Parameters\nalpa_max = 2.0\n"]}
    with pytest.raises(LtKitError, match=r"unknown notebook parameter 'alpa_max' \(did you mean 'alpha_max'\?\)"):
        check_parameters(ns, EXPLORER_PARAMS)
    with pytest.raises(LtKitError, match="'alpha_max' must be float, got 'lots'"):
        check_parameters({**base, "alpha_max": "lots"}, EXPLORER_PARAMS)
    with pytest.raises(LtKitError, match="must be float"):
        check_parameters({**base, "alpha_max": float("inf")}, EXPLORER_PARAMS)
    out = check_parameters({**base, "alpha_max": 2, "sweep_step": "0.1"}, EXPLORER_PARAMS)   # -r gives strings
    assert out == {**base, "alpha_max": 2.0, "sweep_step": 0.1}
    assert check_parameters({**base, "test_prior": "estimated"}, EXPLORER_PARAMS)["test_prior"] == "estimated"
    with pytest.raises(LtKitError, match="'estimator' must be one of em, bbse, got 'mle'"):
        check_parameters({**base, "estimator": "mle"}, EXPLORER_PARAMS)
    with pytest.raises(LtKitError, match="'estimate_from' must be one of backward50, .*, forward50, got 'estimated'"):
        check_parameters({**base, "estimate_from": "estimated"}, EXPLORER_PARAMS)
    with pytest.raises(LtKitError, match="notebook parameter 'draws' must be >= 0, got -1"):
        check_parameters({**base, "draws": -1}, EXPLORER_PARAMS)
    assert check_parameters({**base, "test_prior": "backward25"}, EXPLORER_PARAMS)["test_prior"] == "backward25"
    for bad in ("forwad50", "train", "forward3", ""):       # one line naming the control's priors, in its order
        with pytest.raises(LtKitError) as e:
            check_parameters({**base, "test_prior": bad}, EXPLORER_PARAMS)
        assert str(e.value) == ("notebook parameter 'test_prior' must be one of backward50, backward25, backward10, "
                                "backward5, backward2, uniform, forward2, forward5, forward10, forward25, forward50, "
                                f"estimated, got {bad!r}")
    d = check_parameters({"run_dir": "/r", "alpha": None, "max_points": 10}, DIRECTION_PARAMS)
    assert d["alpha"] is None
    with pytest.raises(LtKitError, match="'max_points' must be int"):
        check_parameters({"run_dir": "/r", "alpha": None, "max_points": 1.5}, DIRECTION_PARAMS)


def test_relative_paths_start_at_the_repository_root_from_notebooks(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "lt_kit").mkdir()
    (repo / "pyproject.toml").write_text("")
    monkeypatch.chdir(repo / "notebooks")                     # where JupyterLab starts the kernel
    assert base_dir() == repo and resolve_path("runs/x") == str(repo / "runs" / "x")
    monkeypatch.chdir(tmp_path)                               # papermill / the CLI: the current directory
    assert resolve_path("runs/x") == str(tmp_path / "runs" / "x")
    assert resolve_path("/abs") == "/abs" and resolve_path("") == ""


# --------------------------------------------------------------------------- compare.ipynb's figures
def test_sd_band_is_cut_to_what_an_accuracy_can_be():
    low, high = plots.sd_band([98.0, 50.0, 2.0], [5.0, 5.0, 5.0])
    assert high.tolist() == [100.0, 55.0, 7.0] and low.tolist() == [93.0, 45.0, 0.0]
    low, high = plots.sd_band([50.0], [float("nan")])                  # one seed: no sd, no band
    assert np.isnan(low).all() and np.isnan(high).all()


def test_per_class_band_stays_within_0_and_100_percent():
    """A class at 98 % ± 5 over seeds is drawn up to 100 %, one at 2 % ± 5 down to 0 %, never beyond."""
    counts = [100, 50, 20, 5]
    mean, sd = np.array([0.98, 0.6, 0.3, 0.02]), np.array([0.05, 0.1, 0.1, 0.05])
    fig = plots.per_class_band_figure([("g", counts, mean, sd)])
    bands = fig.axes[0].collections
    assert bands
    ys = np.concatenate([path.vertices[:, 1] for band in bands for path in band.get_paths()])
    assert ys.max() == pytest.approx(100.0) and ys.min() == pytest.approx(0.0)
    assert plots.to_png(fig).startswith(PNG)


def test_split_error_bars_stay_within_0_and_100_percent():
    stats = {"many": (3, 0.98, 0.05), "medium": (3, 0.5, 0.1), "few": (3, 0.02, 0.05), "overall": (3, 0.6, 0.02)}
    values = {"many": [0.93, 1.0, 1.0], "medium": [0.4, 0.5, 0.6], "few": [0.0, 0.0, 0.07], "overall": [0.6] * 3}
    fig = plots.split_bars_figure([("g", stats, values)])
    ax = fig.axes[0]
    (bars,) = [c for c in ax.containers if hasattr(c, "has_yerr")]
    _, caps, (segments,) = bars.lines
    ys = np.concatenate([np.asarray(seg)[:, 1] for seg in segments.get_segments()] +
                        [cap.get_ydata() for cap in caps])
    assert ys.max() == pytest.approx(100.0) and ys.min() == pytest.approx(0.0)
    tops = {round(float(np.max(np.asarray(seg)[:, 1])), 6) for seg in segments.get_segments()}
    assert tops == {100.0, 60.0, 7.0, 62.0}                            # unclipped where within range
