"""Label shift: the protocol's priors, accuracy under a prior, the prior-aware choice (validation split only),
the run's shift table against its metrics.json, and the ``shift`` command's refusals."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from lt_kit.errors import LtKitError
from lt_kit.evaluation.analysis import NO_VAL, analyse, shift_table
from lt_kit.maths.metrics import per_class_accuracy
from lt_kit.maths.shift import (
    DEFAULT_PRIORS,
    choose_for_prior,
    known_prior_shift,
    long_tail_prior,
    named_prior,
    prior_names,
    prior_weighted_accuracy,
    weights_prior,
)
from lt_kit.training.score import run_analysis, run_caches


# --------------------------------------------------------------------------- maths
def test_prior_weighted_accuracy_hand_computed():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 0, 1, 0, 1, 0])              # per class: 1.0, 0.5, 0.0
    acc = per_class_accuracy(preds, labels, 3)
    assert prior_weighted_accuracy(acc, np.array([0.5, 0.3, 0.2])) == pytest.approx(0.5 + 0.15)
    assert prior_weighted_accuracy(acc, np.full(3, 1 / 3)) == pytest.approx(0.5)     # = balanced accuracy
    grid = np.stack([acc, acc[::-1]])                 # (S, C): one row per strength
    assert prior_weighted_accuracy(grid, np.array([0.0, 0.0, 1.0])).tolist() == [0.0, 1.0]
    with_missing = np.array([1.0, np.nan, 0.0])       # a class without images: the prior renormalised
    assert prior_weighted_accuracy(with_missing, np.array([0.25, 0.5, 0.25])) == pytest.approx(0.5)


def test_weighted_mean_is_the_expectation_of_sades_resampled_sets():
    """SADE's test set for a prior: each class subsampled to its share; its accuracy averages to the weighted mean."""
    rng = np.random.default_rng(0)
    per_class_n, c = 60, 4
    correct = rng.random((c, per_class_n)) < np.array([0.9, 0.6, 0.4, 0.1])[:, None]
    prior = np.array([0.1, 0.2, 0.3, 0.4])
    keep = (prior / prior.max() * per_class_n).round().astype(int)       # 15, 30, 45, 60 images
    draws = [sum(rng.choice(correct[k], keep[k], replace=False).sum() for k in range(c)) / keep.sum()
             for _ in range(3000)]
    exact = prior_weighted_accuracy(correct.mean(1), keep / keep.sum())
    assert np.mean(draws) == pytest.approx(exact, abs=3e-3)


def test_forward_and_backward_priors_ratio_and_order():
    counts = [30, 500, 5, 120, 5, 60]                 # training order: 1, 3, 5, 0, then 2 and 4 (ties by index)
    rank = [1, 3, 5, 0, 2, 4]
    for r in (50, 25, 10, 5, 2):
        fwd, bwd = named_prior(f"forward{r}", counts), named_prior(f"backward{r}", counts)
        for p in (fwd, bwd):
            assert p.sum() == pytest.approx(1) and p.max() / p.min() == pytest.approx(r)
        assert np.all(np.diff(fwd[rank]) < 0) and np.all(np.diff(bwd[rank]) > 0)
        assert np.allclose(bwd[rank], fwd[rank][::-1])
        steps = fwd[rank][1:] / fwd[rank][:-1]          # exponential: one constant factor per rank
        assert np.allclose(steps, r ** (-1 / 5))
    assert np.allclose(named_prior("uniform", counts), 1 / 6)
    assert np.allclose(named_prior("train", counts), np.array(counts) / sum(counts))
    assert named_prior("forward100", counts).max() / named_prior("forward100", counts).min() == pytest.approx(100)
    assert np.allclose(long_tail_prior([3, 2, 1], 1.0), 1 / 3)
    names = prior_names()
    assert names[:5] == ["forward50", "forward25", "forward10", "forward5", "forward2"] and names[5] == "uniform"
    assert names[6:] == ["backward2", "backward5", "backward10", "backward25", "backward50", "train"]
    assert set(DEFAULT_PRIORS) <= set(names)


@pytest.mark.parametrize("name", ["forwad50", "forward1", "backward", "forward-5", "normal"])
def test_unknown_prior_names_list_the_valid_ones(name):
    with pytest.raises(LtKitError, match=f"unknown prior '{name}'; valid: forward50, .*backward50, train"):
        named_prior(name, [3, 2, 1])


def test_given_weights_are_checked_and_normalised():
    assert weights_prior([1, 3], 2).tolist() == [0.25, 0.75]
    with pytest.raises(LtKitError, match="one weight per class: got 2 weights for 3 classes"):
        weights_prior([1, 2], 3)
    for bad in ([1, 0, 1], [1, -1, 1], [1, float("nan"), 1]):
        with pytest.raises(LtKitError, match="must be finite and > 0"):
            weights_prior(bad, 3)


def test_prior_choice_takes_the_first_of_ties_and_follows_the_prior():
    val = np.array([[0.9, 0.1], [0.9, 0.1], [0.5, 0.8]])   # three strengths, two classes
    assert choose_for_prior(val, np.array([0.9, 0.1])) == 0
    assert choose_for_prior(val, np.array([0.1, 0.9])) == 2


def test_known_prior_shift_is_logit_adjustment_for_a_uniform_prior():
    from lt_kit.maths.posthoc import logit_adjust
    logits, counts = torch.randn(50, 4), [400, 100, 20, 5]
    shifted = logits + torch.as_tensor(known_prior_shift(counts, np.full(4, 0.25)), dtype=torch.float32)
    assert torch.equal(shifted.argmax(1), logit_adjust(logits, counts, 1.0).argmax(1))
    same = known_prior_shift(counts, np.array(counts) / sum(counts))    # test prior = train prior: no change
    assert np.allclose(same, 0)


# --------------------------------------------------------------------------- a run's table
def _uniform(table: dict) -> dict:
    return {r["evaluation"]: r["cells"]["uniform"]["accuracy"] for r in table["rows"] if r["cells"]}


@pytest.mark.parametrize("fixture", ["smoke_run", "smoke_val_run"])
def test_every_method_times_every_prior_and_uniform_is_metrics_json(request, fixture):
    """Every evaluation compare reads from metrics.json has a row under the same name, whose uniform cell is
    that entry's balanced accuracy (the digits test set is balanced: the mean of per-class = overall)."""
    from lt_kit.runs.compare import evaluations
    run = request.getfixturevalue(fixture)
    a = run_analysis(run)
    table = shift_table(a, ["all"])
    assert list(table["priors"]) == prior_names()
    methods = ("tde", "logit_adjust", "crt", "lws")          # the causal-norm head's (tau_norm does not apply)
    expected = ["softmax"] + [n for m in methods for n in ("tde" if m == "tde" else f"{m}/rule", f"{m}/val",
                                                            f"{m}/prior")]
    expected.insert(expected.index("logit_adjust/prior") + 1, "logit_adjust/oracle")
    assert [r["evaluation"] for r in table["rows"]] == expected
    for r in table["rows"]:
        assert r["cells"] is None or set(r["cells"]) == set(prior_names())
    metrics = json.loads((run / "metrics.json").read_text())
    recorded = evaluations(metrics)
    uniform = _uniform(table)
    assert set(recorded) <= set(uniform)
    for name, entry in recorded.items():
        assert uniform[name] == pytest.approx(np.mean(entry["per_class"]), abs=1e-9), name
        assert uniform[name] == pytest.approx(entry["overall"], abs=1e-9), name
    assert uniform["logit_adjust/oracle"] == pytest.approx(uniform["logit_adjust/rule"])   # uniform: tau = 1
    train = {r["evaluation"]: r["cells"]["train"]["accuracy"] for r in table["rows"] if r["cells"]}
    assert train["logit_adjust/oracle"] == pytest.approx(train["softmax"])                 # no shift: no change


def test_a_run_without_validation_split_says_so(smoke_run):
    table = shift_table(run_analysis(smoke_run))
    assert list(table["priors"]) == list(DEFAULT_PRIORS)
    rows = {r["evaluation"]: r for r in table["rows"]}
    for name, r in rows.items():
        if name.endswith(("/val", "/prior")):
            assert r["cells"] is None and r["why"] == NO_VAL, name
        else:
            assert r["cells"] is not None, name


def test_prior_aware_choice_reads_the_validation_split_only(smoke_val_run):
    """Permuting the test labels changes test accuracies but no chosen strength or epoch; at the uniform prior the
    balanced validation split's weighted accuracy is its overall accuracy, so the choice is the val row's."""
    params, caches = run_caches(smoke_val_run)
    before = shift_table(analyse(params, caches), ["all"])
    g = torch.Generator().manual_seed(0)
    test = caches["test"]
    shuffled = dataclasses.replace(test, labels=test.labels[torch.randperm(len(test.labels), generator=g)])
    after = shift_table(analyse(params, {**caches, "test": shuffled}), ["all"])

    def chosen(table):
        return {(r["evaluation"], p): c["strength"] for r in table["rows"] if r["kind"] != "oracle" and r["cells"]
                for p, c in r["cells"].items()}
    assert chosen(before) == chosen(after)
    assert _uniform(before) != _uniform(after)
    rows = {r["evaluation"]: r for r in before["rows"]}
    for m in ("tde", "logit_adjust", "crt", "lws"):
        assert rows[f"{m}/prior"]["cells"]["uniform"]["strength"] == rows[f"{m}/val"]["strength"], m
    metrics = json.loads((smoke_val_run / "metrics.json").read_text())
    assert rows["crt/val"]["strength"] == metrics["methods"]["crt"]["val"]["strength"]   # the recorded epoch


def test_the_epoch_hook_sees_every_epoch_and_changes_nothing(smoke_val_run):
    """cRT's prior-aware row chooses among epochs through DecoupledFit's on_epoch hook: called once per epoch,
    the last call's logits are the last epoch's classifier's, and training is the same as without the hook."""
    from lt_kit.evaluation.decoupled import DecoupledFit
    params, caches = run_caches(smoke_val_run)
    seen = []
    hooked = DecoupledFit("crt", caches["train"], params, caches["val"],
                          on_epoch=lambda e, logits_of: seen.append((e, logits_of(caches["test"]))))
    plain = DecoupledFit("crt", caches["train"], params, caches["val"])
    assert [e for e, _ in seen] == list(range(1, params["crt_epochs"] + 1))
    assert torch.equal(seen[-1][1], plain.logits(caches["test"], "last"))
    assert torch.equal(hooked.logits(caches["test"], "best"), plain.logits(caches["test"], "best"))
    best = hooked.result.best_epoch
    assert torch.equal(seen[best - 1][1], plain.logits(caches["test"], "best"))


def test_a_linear_head_gets_tau_norm_and_no_tde(smoke_val_run):
    """The registry decides the rows: the same caches read as a linear head's have tau_norm, not TDE."""
    from lt_kit.evaluation.summary import MethodEvaluator
    params, caches = run_caches(smoke_val_run)
    linear = {k: c if c is None else dataclasses.replace(c, head="linear") for k, c in caches.items()}
    table = shift_table(analyse({**params, "head": "linear"}, linear), ["uniform", "backward10"])
    rows = {r["evaluation"]: r for r in table["rows"]}
    assert not any(n.startswith("tde") for n in rows)
    assert {"tau_norm/rule", "tau_norm/val", "tau_norm/prior"} <= set(rows)
    expected = MethodEvaluator(linear["test"], "tau_norm").metrics(1.0)["per_class"]
    assert rows["tau_norm/rule"]["cells"]["uniform"]["accuracy"] == pytest.approx(np.mean(expected))


def test_given_weights_join_the_named_priors(smoke_run):
    a = run_analysis(smoke_run)
    table = shift_table(a, ["uniform"], weights=[1] * 10)
    assert list(table["priors"]) == ["uniform", "given"]
    for r in table["rows"]:
        if r["cells"]:
            assert r["cells"]["given"]["accuracy"] == pytest.approx(r["cells"]["uniform"]["accuracy"])


# --------------------------------------------------------------------------- the command
def _cli(capsys, *argv):
    from lt_kit.cli import main
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_shift_command_prints_methods_by_priors(capsys, smoke_run):
    code, out, _ = _cli(capsys, "shift", "--run-dir", str(smoke_run))
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[2:] == list(DEFAULT_PRIORS)
    assert "tde/prior" in out and f"({NO_VAL})" in out and "logit_adjust/oracle" in out


@pytest.mark.parametrize("args,match", [
    (["--prior", "forwad50"], "unknown prior 'forwad50'; valid: forward50, forward25"),
    (["--weights", "1,2,3"], "one weight per class: got 3 weights for 10 classes"),
    (["--weights", "1,1,1,1,1,1,1,1,1,0"], "class weights must be finite and > 0"),
    (["--weights", "1,two"], "--weights must be comma-separated numbers"),
])
def test_shift_command_refuses_bad_priors_in_one_line(capsys, smoke_run, args, match):
    code, out, err = _cli(capsys, "shift", "--run-dir", str(smoke_run), *args)
    assert code == 2 and out == "" and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert match in err
