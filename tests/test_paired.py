"""Paired gaps: the bootstrap interval (against scipy's paired bootstrap, and its coverage of a known gap),
McNemar's exact test against scipy's binomial test, the gap over seeds, a run's gaps, two runs' gaps and the
``gap`` command."""
import dataclasses
import re

import numpy as np
import pytest
from scipy.stats import binomtest, bootstrap

from lt_kit.errors import LtKitError
from lt_kit.evaluation.analysis import NO_VAL, paired_gaps, seed_gap_table
from lt_kit.maths.paired import mcnemar_exact, paired_bootstrap, seed_gaps
from lt_kit.training.score import run_analysis

# Each image: (a right, b right) with these probabilities; the true gap is P(a only) - P(b only) = 0.05.
JOINT = {(1, 1): 0.55, (1, 0): 0.15, (0, 1): 0.10, (0, 0): 0.20}
TRUE_GAP = 0.05


def _draw(rng, n: int, sims: int = 1) -> tuple[np.ndarray, np.ndarray]:
    cells = list(JOINT)
    k = rng.choice(len(cells), size=(sims, n), p=list(JOINT.values()))
    pairs = np.array(cells)[k]
    return pairs[..., 0].astype(bool), pairs[..., 1].astype(bool)


def test_gap_is_the_accuracy_difference_and_matches_scipys_paired_bootstrap():
    a, b = (x[0] for x in _draw(np.random.default_rng(0), 300))
    ours = paired_bootstrap(a, b, n_resamples=20000, seed=1)
    assert ours["gap"] == pytest.approx(a.mean() - b.mean())
    ref = bootstrap((a.astype(float), b.astype(float)), lambda x, y, axis: x.mean(axis) - y.mean(axis),
                    paired=True, vectorized=True, n_resamples=20000, method="percentile", random_state=2)
    assert ours["low"] == pytest.approx(ref.confidence_interval.low, abs=0.006)
    assert ours["high"] == pytest.approx(ref.confidence_interval.high, abs=0.006)
    assert paired_bootstrap(a, b, seed=1) == paired_bootstrap(a, b, seed=1)           # seeded
    assert paired_bootstrap(a, a)["low"] == paired_bootstrap(a, a)["high"] == 0.0


def test_paired_interval_covers_a_known_gap_at_about_its_rate():
    """200 simulated test sets of 400 images: the 95 % interval holds the true gap in 90-99 % of them."""
    rng = np.random.default_rng(0)
    a, b = _draw(rng, 400, sims=200)
    hits = [paired_bootstrap(a[i], b[i], n_resamples=2000, seed=i) for i in range(200)]
    coverage = np.mean([h["low"] <= TRUE_GAP <= h["high"] for h in hits])
    assert 0.90 <= coverage <= 0.99, coverage


def test_mcnemar_is_scipys_binomial_test_on_the_discordant_images():
    a, b = (x[0] for x in _draw(np.random.default_rng(3), 500))
    m = mcnemar_exact(a, b)
    assert m["b"] == int((a & ~b).sum()) and m["c"] == int((~a & b).sum())
    assert m["p"] == binomtest(m["b"], m["b"] + m["c"], 0.5).pvalue
    assert (m["b"] - m["c"]) / 500 == pytest.approx(paired_bootstrap(a, b)["gap"])
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == {"b": 0, "c": 0, "p": 1.0}    # no discordant image
    with pytest.raises(ValueError, match="same images"):
        mcnemar_exact([1, 0], [1, 0, 1])


def test_gap_over_seeds():
    s = seed_gaps([0.02, 0.04, 0.03])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.03) and s["sd"] == pytest.approx(0.01)
    assert s["sign"] == 1 and s["sign_holds"] and s["gaps"] == [0.02, 0.04, 0.03]
    assert not seed_gaps([0.02, -0.01, 0.03])["sign_holds"]
    assert not seed_gaps([0.02, 0.0])["sign_holds"]                   # a tie is not the sign held
    assert seed_gaps([-0.01, -0.02])["sign_holds"] and seed_gaps([-0.01, -0.02])["sign"] == -1
    one = seed_gaps([0.01])
    assert one["n"] == 1 and np.isnan(one["sd"]) and one["sign_holds"]


def test_a_runs_gaps_to_tde(smoke_run):
    a = run_analysis(smoke_run)
    result = paired_gaps(a, "tde", seed=0, n_resamples=2000)
    rows = {r["evaluation"]: r for r in result["rows"]}
    assert "tde" not in rows and set(rows) == {"softmax", "tde/val", "logit_adjust/rule", "logit_adjust/val",
                                               "crt/rule", "crt/val", "lws/rule", "lws/val"}
    ref = a.correct("tde")
    assert result["reference_accuracy"] == pytest.approx(ref.mean()) and result["n_images"] == ref.size
    for name, r in rows.items():
        if name.endswith("/val"):
            assert r["why"] == NO_VAL
            continue
        ok = a.correct(name)
        assert r["gap"] == pytest.approx(ok.mean() - ref.mean()) and r["low"] <= r["gap"] <= r["high"]
        assert r["p"] == mcnemar_exact(ok, ref)["p"]
    assert paired_gaps(a, "tde", seed=0, n_resamples=2000) == result
    over = {r["evaluation"]: r for r in seed_gap_table([result, result])}
    assert over["softmax"]["n"] == 2 and over["softmax"]["sd"] == 0 and over["tde/val"]["why"] == NO_VAL


def test_two_runs_paired_image_by_image(smoke_run, smoke_val_run):
    """Another model's evaluations against this run's reference on the same test images: each gap is the other
    run's accuracy minus the reference's, McNemar's b / c are counted across the two runs, and the other run's
    own name for the reference is a row too (same name, another model); a test set in another order is refused."""
    a, b = run_analysis(smoke_run), run_analysis(smoke_val_run)
    result = paired_gaps(a, "tde", other=b, seed=0, n_resamples=2000)
    rows = {r["evaluation"]: r for r in result["rows"]}
    assert result["across_runs"] and "tde" in rows and "logit_adjust/val" in rows
    assert rows["logit_adjust/val"]["why"] is None                 # the other run has a validation split
    ref = a.correct("tde")
    for name, r in rows.items():
        ok = b.correct(name)
        assert r["gap"] == pytest.approx(ok.mean() - ref.mean()) and r["low"] <= r["gap"] <= r["high"]
        assert (r["b"], r["c"]) == (int((ok & ~ref).sum()), int((~ok & ref).sum()))
    from lt_kit.evaluation.analysis_text import format_gaps
    assert "of the first run; the evaluations are the other run's" in format_gaps(result).splitlines()[0]
    b.test = dataclasses.replace(b.test, labels=b.test.labels.roll(1))
    with pytest.raises(LtKitError, match=r"same test images in the same order; these differ in test labels"):
        paired_gaps(a, "tde", other=b)
    b.test = dataclasses.replace(a.test, class_names=list(reversed(a.test.class_names)))
    b.params = {**b.params, "dataset": "cifar10_lt"}
    with pytest.raises(LtKitError, match=r"these differ in dataset, classes\. Compare runs of one data set"):
        paired_gaps(a, "tde", other=b)


def test_a_reference_not_in_the_run_lists_the_valid_ones(smoke_run):
    a = run_analysis(smoke_run)
    with pytest.raises(LtKitError, match=r"'tde/val' is not in this run \(no validation split\); valid: softmax, "
                                         r"tde, logit_adjust/rule, crt/rule, lws/rule"):
        paired_gaps(a, "tde/val")


def _cli(capsys, *argv):
    from lt_kit.cli import main
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_gap_command(capsys, smoke_run, smoke_val_run):
    code, out, _ = _cli(capsys, "gap", "--run-dir", str(smoke_run), "--against", "softmax", "--resamples", "500")
    assert code == 0 and out.startswith(f"run dir: {smoke_run}\nreference: softmax")
    assert "95% interval" in out and "McNemar p" in out and "tde " in out
    code, out, _ = _cli(capsys, "gap", "--run-dir", str(smoke_run), "--other-run", str(smoke_val_run),
                        "--resamples", "500")
    assert code == 0 and out.startswith(f"run dir: {smoke_run}\nother run: {smoke_val_run}\nreference: tde")
    assert re.search(r"^logit_adjust/val .* \[[-+]\d", out, re.M)      # the other run's validation choice, paired
    for argv, match in ((["--against", "nope"], "evaluation 'nope' is not in this run; valid: softmax, tde"),
                        (["--run-dir", str(smoke_val_run)], "differ only in seed"),
                        (["--run-dir", str(smoke_val_run), "--other-run", str(smoke_val_run)], "give one --run-dir")):
        code, out, err = _cli(capsys, "gap", "--run-dir", str(smoke_run), *argv)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and match in err
