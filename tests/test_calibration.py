"""Calibration: ECE and the reliability data against a hand-computed set, NLL, a temperature that recovers a known
one, and a run's calibration table (temperature fitted on the validation split, per method and strength)."""
import math

import numpy as np
import pytest
import torch

from lt_kit.evaluation.analysis import NO_VAL, calibration_table
from lt_kit.maths.calibration import (
    at_bound,
    calibration,
    confidence_correct,
    ece,
    fit_temperature,
    nll,
    reliability,
)
from lt_kit.training.score import run_analysis


def test_ece_and_reliability_hand_computed():
    conf = [0.95, 0.95, 0.55, 0.55, 0.25]
    ok = [1, 0, 1, 1, 0]
    # bins of width 1/15: 0.95 -> 14, 0.55 -> 8, 0.25 -> 3
    # ECE = 2/5 |0.5 - 0.95| + 2/5 |1 - 0.55| + 1/5 |0 - 0.25| = 0.18 + 0.18 + 0.05
    assert ece(conf, ok) == pytest.approx(0.41)
    r = reliability(conf, ok)
    assert len(r["count"]) == 15 and sum(r["count"]) == 5
    assert [i for i, k in enumerate(r["count"]) if k] == [3, 8, 14]
    assert r["accuracy"][14] == 0.5 and r["confidence"][8] == pytest.approx(0.55) and math.isnan(r["accuracy"][0])
    assert r["lo"][14] == pytest.approx(14 / 15) and r["hi"][14] == 1.0


def test_a_bin_edge_goes_to_the_bin_below_and_zero_to_the_first():
    r = reliability([0.4, 0.0, 1.0], [1, 1, 1])           # 0.4 = 6/15 ends bin 5: (1/3, 0.4]
    assert r["count"][5] == 1 and r["count"][0] == 1 and r["count"][14] == 1
    assert ece([0.6, 0.6], [1, 1], bins=1) == pytest.approx(0.4)


def test_nll_and_confidence_hand_computed():
    logits = torch.tensor([[0.0, math.log(3)], [math.log(4), 0.0]])
    labels = torch.tensor([1, 1])                         # p = 3/4 and 1/5
    assert nll(logits, labels) == pytest.approx(-(math.log(0.75) + math.log(0.2)) / 2)
    conf, ok = confidence_correct(logits, labels)
    assert conf.tolist() == pytest.approx([0.75, 0.8]) and ok.tolist() == [True, False]
    c = calibration(logits, labels)
    assert c["n"] == 2 and c["accuracy"] == 0.5 and c["ece"] == pytest.approx(abs(1 - 0.75) / 2 + abs(0 - 0.8) / 2)
    assert math.isnan(calibration(logits[:0], labels[:0])["ece"])


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_recovers_a_known_one(true_t):
    """Labels drawn from softmax(z); the model reports z * T: the fitted temperature is T."""
    g = torch.Generator().manual_seed(0)
    z = 2 * torch.randn(20000, 10, generator=g)
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    t = fit_temperature(z * true_t, labels)
    assert t == pytest.approx(true_t, rel=0.03) and not at_bound(t)
    assert nll(z * true_t, labels, t) < nll(z * true_t, labels)
    assert ece(*confidence_correct(z * true_t, labels, t)) < 0.02       # calibrated again
    assert at_bound(1e3) and at_bound(1e-3)


def test_calibration_table_of_a_run_with_a_validation_split(smoke_val_run):
    a = run_analysis(smoke_val_run)
    table = calibration_table(a)
    names = [r["evaluation"] for r in table["rows"]]
    assert names == ["softmax", "tde", "tde/val", "logit_adjust/rule", "logit_adjust/val", "crt/rule", "crt/val",
                     "lws/rule", "lws/val"]
    y_val = a.val.labels
    for r in table["rows"]:
        e = a.evaluations[r["evaluation"]]
        assert r["temperature"] > 0 and r["why"] is None
        assert r["temperature"] == pytest.approx(fit_temperature(e.val, y_val))   # its own, on validation data
        assert nll(e.val, y_val, r["temperature"]) <= nll(e.val, y_val) + 1e-9
        raw = r["raw"]
        assert raw["overall"]["accuracy"] == pytest.approx(a.correct(r["evaluation"]).mean())
        assert r["scaled"]["overall"]["accuracy"] == raw["overall"]["accuracy"]  # T changes no prediction
        assert sum(raw[g]["n"] for g in ("many", "medium", "few")) == raw["overall"]["n"] == len(a.test.labels)
        assert sum(raw["overall"]["reliability"]["count"]) == len(a.test.labels)
    temps = {r["evaluation"]: r["temperature"] for r in table["rows"]}
    assert len(set(temps.values())) > 1                  # one per method and strength


def test_reliability_figure_draws_each_evaluation_before_and_after_its_temperature(smoke_val_run, tmp_path, capsys):
    """One panel per evaluation: a filled bar per non-empty confidence bin at its accuracy as it is, an outlined
    bar at its accuracy after T, the diagonal; the title gives ECE before -> after and T. The CLI saves it."""
    from lt_kit.views.plots import reliability_figure
    table = calibration_table(run_analysis(smoke_val_run))
    fig = reliability_figure(table)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == len(table["rows"])
    for ax, r in zip(shown, table["rows"]):
        raw = r["raw"]["overall"]
        assert ax.get_title().startswith(f"{r['evaluation']}\nECE {100 * raw['ece']:.1f} -> "
                                         f"{100 * r['scaled']['overall']['ece']:.1f} (T ")
        for key, container in zip(("raw", "scaled"), ax.containers):
            rel = r[key]["overall"]["reliability"]
            want = [100 * a for a, k in zip(rel["accuracy"], rel["count"]) if k]      # empty bins: no bar
            assert [b.get_height() for b in container] == pytest.approx(want), (r["evaluation"], key)
    few = reliability_figure(table, ["softmax", "tde"])
    assert [ax.get_title().split("\n")[0] for ax in few.axes if ax.get_visible()] == ["softmax", "tde"]
    from lt_kit.errors import LtKitError
    with pytest.raises(LtKitError, match="no calibration data for nothing; the table has: softmax, tde, tde/val"):
        reliability_figure(table, ["softmax", "nothing"])
    from lt_kit.cli import main
    assert main(["calibration", "--run-dir", str(smoke_val_run), "--figure", str(tmp_path / "rel.png")]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"figure: {tmp_path / 'rel.png'}")
    assert (tmp_path / "rel.png").read_bytes().startswith(b"\x89PNG")


def test_calibration_without_validation_split(smoke_run, capsys):
    table = calibration_table(run_analysis(smoke_run))
    rows = {r["evaluation"]: r for r in table["rows"]}
    assert rows["tde"]["raw"] and rows["tde"]["temperature"] is None and rows["tde"]["scaled"] is None
    assert NO_VAL in rows["tde"]["why"] and rows["crt/val"]["raw"] is None and rows["crt/val"]["why"] == NO_VAL
    from lt_kit.cli import main
    assert main(["calibration", "--run-dir", str(smoke_run)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:5] == ["evaluation", "strength", "acc", "ECE", "NLL"]
    assert "no validation split in this run, so no temperature was fitted" in out


def test_ece_is_small_for_calibrated_probabilities():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.1, 1.0, 50000)
    ok = rng.random(50000) < conf
    assert ece(conf, ok) < 0.01
