"""The unknown test prior: SADE's sub-sampled test sets (counts, seeds, refusals), EM and BBSE recovering a known
prior (a perfect and a noisy classifier), no test label read, the run-level table against the shift table, and
the ``adapt`` command's refusals."""
import dataclasses
import inspect
import re
import shutil

import numpy as np
import pytest
import torch

from lt_kit.errors import LtKitError
from lt_kit.evaluation.adaptation import COLUMNS, NEEDS_VAL, adaptation_table, prior_estimators
from lt_kit.evaluation.analysis import analyse, shift_table
from lt_kit.evaluation.features import FeatureCache
from lt_kit.maths.draws import draw_counts, draw_indices, draw_test_sets
from lt_kit.maths.prior_estimation import (
    bbse_prior,
    confusion_matrix,
    em_prior,
    fit_balanced_calibration,
    reweight_posteriors,
    tv_distance,
)
from lt_kit.maths.shift import DEFAULT_PRIORS, named_prior
from lt_kit.training.score import run_caches

C = 5
SOURCE = np.array([0.5, 0.25, 0.125, 0.075, 0.05])       # long-tailed "training" prior
TARGET_COUNTS = np.array([100, 200, 400, 800, 1500])      # a backward-shifted test set: 3,000 images


def _world(counts, scale, rng):
    """Images of a Gaussian world: x = scale * e_y + N(0, I), so log p(x | y) = scale * x_y + (a term of x
    alone): ``scale * x`` are exact class-conditional logits, and softmax(them + log prior) the exact posterior."""
    y = np.repeat(np.arange(C), counts)
    x = scale * np.eye(C)[y] + rng.standard_normal((len(y), C))
    return scale * x, y


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# --------------------------------------------------------------------------- the draws
def test_draw_counts_follow_sades_rule():
    prior = named_prior("forward10", [500, 200, 80, 30, 10])      # classes already in training order
    counts = draw_counts(prior, [20] * 5)
    assert counts[0] == 20                                        # the largest share keeps every image
    assert counts.tolist() == [int(np.floor(20 * p / prior[0] + 0.5)) for p in prior] == [20, 11, 6, 4, 2]
    assert draw_counts(named_prior("backward10", [500, 200, 80, 30, 10]), [20] * 5).tolist() == [2, 4, 6, 11, 20]
    assert draw_counts(np.full(5, 0.2), [20] * 5).tolist() == [20] * 5           # uniform: the whole set
    assert draw_counts(np.array([1000.0, 1, 1]), [20, 20, 20]).tolist() == [20, 1, 1]   # at least 1


def test_a_class_short_of_images_is_refused_in_one_line():
    prior = named_prior("forward10", [500, 200, 80, 30, 10])
    with pytest.raises(LtKitError, match=r"^a forward10 draw needs 6 test images of class c2, which has 4: "):
        draw_counts(prior, [20, 20, 4, 20, 20], class_names=[f"c{i}" for i in range(5)], what="a forward10 draw")
    with pytest.raises(LtKitError, match="needs 1 test image of class 3, which has 0"):
        draw_counts(np.full(5, 0.2), [20, 20, 20, 0, 20])


def test_draws_have_the_requested_counts_and_come_back_from_their_seed():
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(C), 20))
    prior = named_prior("forward10", [500, 200, 80, 30, 10])
    counts, sets = draw_test_sets(labels, prior, C, draws=4, seed=7)
    assert len(sets) == 4 and all(len(s) == counts.sum() == 43 for s in sets)
    for k, idx in enumerate(sets):
        assert np.bincount(labels[idx], minlength=C).tolist() == counts.tolist()
        assert len(np.unique(idx)) == len(idx)                            # without replacement
        assert np.array_equal(idx, draw_indices(labels, counts, 7 + k))   # its own seed alone redraws it
    assert np.array_equal(draw_test_sets(labels, prior, C, draws=4, seed=7)[1][2], sets[2])
    assert not np.array_equal(sets[0], sets[1])
    _, (full,) = draw_test_sets(labels, np.full(C, 0.2), C, draws=1)
    assert np.array_equal(full, np.arange(len(labels)))                   # uniform: the balanced set itself
    for bad in ({"draws": 0}, {"seed": -1}):
        with pytest.raises(LtKitError, match="must be >= "):
            draw_test_sets(labels, prior, C, **bad)


# --------------------------------------------------------------------------- the estimators
def test_a_perfect_classifier_gives_the_prior_exactly():
    y = np.repeat(np.arange(C), TARGET_COUNTS)
    true = TARGET_COUNTS / TARGET_COUNTS.sum()
    one_hot = np.eye(C)[y]
    em = em_prior(one_hot, SOURCE)
    assert em.converged and tv_distance(em.prior, true) < 1e-9
    assert tv_distance(bbse_prior(y, confusion_matrix(np.arange(C).repeat(10), np.arange(C).repeat(10), C)),
                       true) < 1e-9


def test_em_and_bbse_recover_a_prior_from_a_noisy_classifier():
    """About 65 % accurate; EM's posteriors exact (calibrated) under the source prior, BBSE's confusion from a
    balanced 'validation' set of 1,000 images. Bounds: EM TV < 0.04, BBSE TV < 0.10 (over seeds 0..19 the largest
    errors were 0.023 and 0.062); the uniform guess is off by 0.37 and the source prior by 0.62."""
    rng = np.random.default_rng(0)
    z_test, _ = _world(TARGET_COUNTS, 1.5, rng)
    z_val, y_val = _world([200] * C, 1.5, rng)
    true = TARGET_COUNTS / TARGET_COUNTS.sum()
    em = em_prior(_softmax(z_test + np.log(SOURCE)), SOURCE)
    assert em.converged and tv_distance(em.prior, true) < 0.04
    bbse = bbse_prior(z_test.argmax(1), confusion_matrix(z_val.argmax(1), y_val, C))
    assert tv_distance(bbse, true) < 0.10
    assert tv_distance(np.full(C, 0.2), true) > 0.35 and tv_distance(SOURCE, true) > 0.6
    # EM's maximum does not depend on the posteriors' reference prior, given the matching one
    balanced = em_prior(_softmax(z_test), np.full(C, 0.2))
    assert np.allclose(balanced.prior, em.prior, atol=1e-4)
    assert np.allclose(reweight_posteriors(_softmax(z_test), np.full(C, 0.2), SOURCE),
                       _softmax(z_test + np.log(SOURCE)))


def test_the_calibration_finds_the_lean_toward_the_training_prior_and_the_temperature():
    """Logits that are the balanced posterior's, doubled, plus 0.5 x log(source prior) (a head that leans half-way
    toward its training prior and is over-confident): on a balanced labelled split the fit finds beta = 0.5 and
    T = 2, and EM on what it gives recovers a shifted prior as well as EM on the exact posteriors."""
    rng = np.random.default_rng(3)
    z_val, y_val = _world([1000] * C, 1.5, rng)
    z_test, _ = _world(TARGET_COUNTS, 1.5, rng)
    lean = lambda z: 2 * z + 0.5 * np.log(SOURCE)             # noqa: E731
    cal = fit_balanced_calibration(lean(z_val), y_val, np.log(SOURCE))
    assert cal.beta == 0.5 and cal.temperature == pytest.approx(2.0, rel=0.05)
    probs = _softmax((lean(z_test) - cal.beta * np.log(SOURCE)) / cal.temperature)
    exact = em_prior(_softmax(z_test), np.full(C, 0.2)).prior
    assert tv_distance(em_prior(probs, np.full(C, 0.2), init=SOURCE).prior, exact) < 0.01
    with pytest.raises(LtKitError, match="the log training prior must be 5 finite numbers"):
        fit_balanced_calibration(z_val, y_val, np.array([-0.7, -0.7, -np.inf, -np.inf, -np.inf]))


def test_bbse_weights_are_relative_to_the_source_split_not_balanced_by_assumption():
    """A long-tailed labelled source split (4,300 images, 10:1): its prior is the confusion matrix's column sums,
    and ``q = w * p_src`` recovers the target (TV < 0.06; 0.015 .. 0.041 over seeds 0..9), where reading w as q
    (a balanced source assumed) is off by 0.16 .. 0.20."""
    rng = np.random.default_rng(1)
    z_test, _ = _world(TARGET_COUNTS, 2.0, rng)
    z_lt, y_lt = _world([2000, 1200, 600, 300, 200], 2.0, rng)
    true = TARGET_COUNTS / TARGET_COUNTS.sum()
    cm = confusion_matrix(z_lt.argmax(1), y_lt, C)
    assert np.allclose(cm.sum(0), np.array([2000, 1200, 600, 300, 200]) / 4300)
    assert tv_distance(bbse_prior(z_test.argmax(1), cm), true) < 0.06
    w = np.clip(np.linalg.lstsq(cm, np.bincount(z_test.argmax(1), minlength=C) / len(z_test), rcond=None)[0], 0, None)
    assert tv_distance(w / w.sum(), true) > 0.12


def test_estimates_read_no_label_and_no_order():
    assert not any("label" in p for f in (em_prior, bbse_prior) for p in inspect.signature(f).parameters)
    rng = np.random.default_rng(2)
    z, _ = _world(TARGET_COUNTS, 1.5, rng)
    perm = rng.permutation(len(z))
    assert np.allclose(em_prior(_softmax(z)[perm], np.full(C, 0.2)).prior, em_prior(_softmax(z), np.full(C, 0.2)).prior)
    cm = confusion_matrix(rng.integers(0, C, 100), rng.integers(0, C, 100), C)
    assert np.allclose(bbse_prior(z.argmax(1)[perm], cm), bbse_prior(z.argmax(1), cm))


def test_estimators_refuse_bad_input():
    with pytest.raises(LtKitError, match=r"probabilities must be \(N, C\)"):
        em_prior(np.zeros((0, 3)), np.ones(3))
    with pytest.raises(LtKitError, match="the source prior must be 3 finite weights > 0"):
        em_prior(np.ones((4, 3)), [1, 0, 1])
    with pytest.raises(LtKitError, match="predictions and labels must be classes 0 .. 2"):
        confusion_matrix([0, 3], [0, 1], 3)


# --------------------------------------------------------------------------- a run
def test_run_estimates_never_read_the_test_labels(smoke_val_run):
    """The estimators' inputs (posteriors, predictions, confusion) and their estimates on the same drawn images
    are unchanged when the test labels are permuted."""
    params, caches = run_caches(smoke_val_run)
    test = caches["test"]
    g = torch.Generator().manual_seed(0)
    shuffled = dataclasses.replace(test, labels=test.labels[torch.randperm(len(test.labels), generator=g)])
    before = prior_estimators(analyse(params, caches))
    after = prior_estimators(analyse(params, {**caches, "test": shuffled}))
    assert not torch.equal(test.labels, shuffled.labels)
    idx = draw_test_sets(test.labels.numpy(), named_prior("forward10", test.train_counts), 10, seed=3)[1][0]
    for k in ("em", "bbse"):
        assert np.array_equal(before.estimate(idx)[k], after.estimate(idx)[k]), k
    assert before.calibration == after.calibration and np.array_equal(before.confusion, after.confusion)


def test_every_method_times_every_prior_and_the_full_uniform_set_is_the_shift_table(smoke_val_run):
    params, caches = run_caches(smoke_val_run)
    a = analyse(params, caches)
    table = adaptation_table(a, draws=3, seed=0)
    shift = {r["evaluation"]: r for r in shift_table(a)["rows"]}
    names = [r["name"] for r in table["rows"]]
    assert names[:3] == ["logit_adjust/shift", "tde/prior", "logit_adjust/prior"]
    assert names[3:] == a.names()          # softmax, tde, tde/val, logit_adjust/rule, ..., crt/val, lws/val
    assert list(table["priors"]) == list(DEFAULT_PRIORS)
    for r in table["rows"]:
        for p in DEFAULT_PRIORS:
            cols = r["cells"][p]
            assert list(cols) == (list(COLUMNS) if r["kind"] == "adapted" else ["unadapted"]), (r["name"], p)
            assert all(len(s["values"]) == 3 for s in cols.values())
    for p in DEFAULT_PRIORS:
        err = table["errors"][p]
        assert len(err["em"]["values"]) == 3 and 0 <= err["bbse"]["mean"] <= 1
        assert table["priors"][p]["size"] == sum(table["priors"][p]["counts"])
    # uniform: every draw is the whole balanced test set, so each cell is the shift table's uniform figure
    rows = {r["name"]: r for r in table["rows"]}
    uni = table["priors"]["uniform"]
    assert uni["size"] == len(caches["test"].labels) and np.allclose(uni["true"], 0.1)
    oracle = rows["logit_adjust/shift"]["cells"]["uniform"]["oracle"]
    assert oracle["sd"] == 0 and oracle["mean"] == pytest.approx(shift["logit_adjust/oracle"]["cells"]["uniform"]
                                                                 ["accuracy"])
    assert rows["tde/prior"]["cells"]["uniform"]["oracle"]["mean"] == pytest.approx(
        shift["tde/prior"]["cells"]["uniform"]["accuracy"])
    for name in a.names():
        assert rows[name]["cells"]["uniform"]["unadapted"]["mean"] == pytest.approx(
            shift[name]["cells"]["uniform"]["accuracy"]), name
    assert rows["logit_adjust/shift"]["cells"]["uniform"]["unadapted"]["mean"] == pytest.approx(
        shift["logit_adjust/rule"]["cells"]["uniform"]["accuracy"])
    # the unadapted column of a prior-aware row is the validation choice; the oracle's choice is the shift table's
    assert set(rows["tde/prior"]["strengths"]["forward50"]["unadapted"]) == {a.evaluations["tde/val"].strength}
    assert rows["tde/prior"]["strengths"]["uniform"]["oracle"][0] == shift["tde/prior"]["cells"]["uniform"]["strength"]


def test_the_run_table_comes_back_from_its_seed(smoke_val_run):
    params, caches = run_caches(smoke_val_run)
    a = analyse(params, caches)
    one, two = adaptation_table(a, ["forward10"], draws=2, seed=5), adaptation_table(a, ["forward10"], draws=2, seed=5)
    other = adaptation_table(a, ["forward10"], draws=2, seed=6)
    assert one == two
    assert one["rows"][0]["cells"]["forward10"] != other["rows"][0]["cells"]["forward10"]
    # a calibrated model near a uniform guess's NLL is said to leave EM little to read
    from lt_kit.evaluation.adaptation import format_adaptation
    assert "warning: that validation NLL is near a uniform guess's" in format_adaptation(
        {**one, "val_nll": 0.95 * one["uniform_nll"]})
    assert "warning" not in format_adaptation({**one, "val_nll": 0.5 * one["uniform_nll"]})


def test_adaptation_figure_draws_each_column_over_the_protocol_priors(smoke_val_run):
    """One panel per adapted method; in each, the unadapted, EM, BBSE and oracle means (%) over the priors in the
    control's order (tail-heavy .. head-heavy), whatever order the table has; ``train`` is not drawn."""
    from lt_kit.views.adaptation import adaptation_figure
    from lt_kit.views.plots import protocol_priors
    params, caches = run_caches(smoke_val_run)
    table = adaptation_table(analyse(params, caches), ["forward10", "backward5", "uniform", "train"], draws=2)
    fig = adaptation_figure(table)
    adapted = [r for r in table["rows"] if r["kind"] == "adapted"]
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [r["name"] for r in adapted]
    order = [p for p in protocol_priors() if p in ("forward10", "backward5", "uniform")]
    assert order == ["backward5", "uniform", "forward10"]
    for ax, r in zip(axes, adapted):
        assert [t.get_text() for t in ax.get_xticklabels()] == order
        lines = ax.get_lines()
        assert len(lines) == len(COLUMNS)
        for line, col in zip(lines, COLUMNS):
            assert np.allclose(line.get_ydata(), [100 * r["cells"][p][col]["mean"] for p in order]), (r["name"], col)
    assert len({ax.get_ylim() for ax in axes}) == 1                   # one scale across the panels
    with pytest.raises(LtKitError, match="nothing to draw"):
        adaptation_figure({**table, "rows": [r for r in table["rows"] if r["kind"] != "adapted"]})


# --------------------------------------------------------------------------- the command
def _cli(capsys, *argv):
    from lt_kit.cli import main
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line(code, out, err, match):
    assert code == 2 and out == "" and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(match, err), err


def test_adapt_command_prints_every_prior(capsys, smoke_val_run, tmp_path):
    code, out, err = _cli(capsys, "adapt", "--run-dir", str(smoke_val_run), "--prior", "forward50",
                          "--prior", "backward10", "--draws", "2", "--seed", "1", "--figure",
                          str(tmp_path / "figs" / "adapt.png"))
    assert code == 0, err
    assert out.rstrip().endswith(f"figure: {tmp_path / 'figs' / 'adapt.png'}")
    assert (tmp_path / "figs" / "adapt.png").read_bytes().startswith(b"\x89PNG")
    assert "2 draws per prior" in out and "draw k seeded 1 + k" in out
    assert re.search(r"^forward50: 2 draws of \d+ images each \(class counts 50 \.\. 1\)", out, flags=re.M)
    assert re.search(r"^backward10: 2 draws of \d+ images each", out, flags=re.M)
    assert re.search(r"^ +accuracy \(%\) +unadapted +EM +BBSE +oracle$", out, flags=re.M)
    assert re.search(r"^ +logit_adjust/shift +\d+\.\d\d ± \d+\.\d\d( +\d+\.\d\d ± \d+\.\d\d){3}$", out, flags=re.M)
    assert "tde/prior alpha chosen:" in out and "prior error (TV)" in out


def test_adapt_refuses_a_run_without_validation_split(capsys, smoke_run):
    _one_line(*_cli(capsys, "adapt", "--run-dir", str(smoke_run)), re.escape(NEEDS_VAL))
    assert "validation split" in NEEDS_VAL and "val_per_class" in NEEDS_VAL


def test_adapt_refuses_a_test_set_short_of_a_class(capsys, smoke_val_run, tmp_path):
    """A copy whose test cache keeps 3 images of class 5: a forward50 draw needs 6 of them."""
    run = shutil.copytree(smoke_val_run, tmp_path / "run")
    test = FeatureCache.load(run / "features.pt")
    y = test.labels
    keep = (y != 5) | (torch.cumsum((y == 5).long(), 0) <= 3)
    dataclasses.replace(test, features=test.features[keep], labels=y[keep]).save(run / "features.pt")
    _one_line(*_cli(capsys, "adapt", "--run-dir", str(run), "--prior", "uniform", "--prior", "forward50"),
              r"a forward50 draw needs 6 test images of class 5, which has 3")


@pytest.mark.parametrize("args,match", [
    (["--prior", "forwad50"], "unknown prior 'forwad50'; valid: forward50"),
    (["--draws", "0"], "--draws must be >= 1, got 0"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
])
def test_adapt_refuses_bad_arguments_in_one_line(capsys, tmp_path, args, match):
    _one_line(*_cli(capsys, "adapt", "--run-dir", str(tmp_path / "never_read"), *args), re.escape(match))
