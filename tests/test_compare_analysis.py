"""compare --against and --shift: each seed group's paired gaps to a reference and its label-shift table over the
seeds (views/analysis.py, evaluation/analysis.py's group_gaps / group_shift), against each run's own paired_gaps
and shift_table; a run whose caches are lost, a group without the reference, and the one-line refusals."""
from __future__ import annotations

import contextlib
import io
import math
import re
import shutil
import statistics
from pathlib import Path

import pytest
import yaml

from lt_kit.cli import main
from lt_kit.config import load_params_file, resolve
from lt_kit.evaluation.analysis import group_gaps, group_shift, paired_gaps, shift_table
from lt_kit.training.score import run_analysis
from lt_kit.views.analysis import seed_group_tables
from lt_kit.views.report import compare_runs

ROOT = Path(__file__).resolve().parents[1]
GAP_TITLE = "gaps to tde a=1 over each group's seeds (compare --against)"
SHIFT_TITLE = "label shift over each group's seeds (compare --shift)"
NUM = r"[+-]?\d+\.\d+"


# --------------------------------------------------------------------------- over seeds, by hand
def gap_row(name, gap=None, why=None):
    return {"evaluation": name, "gap": gap, "low": None if gap is None else gap - 0.01,
            "high": None if gap is None else gap + 0.01, "why": why}


def test_group_gaps_by_hand():
    runs = [(0, {"reference": "tde", "rows": [gap_row("softmax", 0.02), gap_row("tde/val", why="no validation split"),
                                               gap_row("crt/rule", why="no cache")]}),
            (1, {"reference": "tde", "rows": [gap_row("softmax", 0.04), gap_row("tde/val", -0.01),
                                               gap_row("crt/rule", why="no cache")]})]
    rows = {r["evaluation"]: r for r in group_gaps(runs, order=["softmax", "tde", "tde/val"])}
    assert list(rows) == ["softmax", "tde", "tde/val", "crt/rule"]          # compare's order, then the rest
    soft = rows["softmax"]
    assert (soft["n"], soft["gaps"], soft["sign_holds"]) == (2, [0.02, 0.04], True)
    assert soft["mean"] == pytest.approx(0.03) and soft["sd"] == pytest.approx(statistics.stdev([0.02, 0.04]))
    assert soft["per_seed"][1] == {"seed": 1, "gap": 0.04, "low": 0.03, "high": 0.05, "why": None}
    ref = rows["tde"]                                                       # the reference: 0 in every seed
    assert ref["reference"] and ref["gaps"] == [0.0, 0.0] and ref["sd"] == 0 and not soft["reference"]
    val = rows["tde/val"]                                                   # one seed lacks it: n = 1, said why
    assert (val["n"], val["gaps"], val["per_seed"][0]["why"], val["why"]) == (1, [-0.01], "no validation split", None)
    assert rows["crt/rule"]["n"] == 0 and rows["crt/rule"]["why"] == "no cache"
    with pytest.raises(Exception, match="one reference"):
        group_gaps([runs[0], (1, {**runs[1][1], "reference": "softmax"})])


def shift_rows(soft: float, prior_aware: float | None) -> dict:
    cell = {"uniform": {"accuracy": soft, "strength": None}, "forward10": {"accuracy": soft + 0.1, "strength": None}}
    aware = None if prior_aware is None else {p: {"accuracy": prior_aware, "strength": 0.5} for p in cell}
    return {"priors": {"uniform": [0.5, 0.5], "forward10": [0.9, 0.1]},
            "rows": [{"evaluation": "softmax", "kind": "fixed", "strength_name": None, "strength": None,
                      "cells": cell, "why": None},
                     {"evaluation": "tde/prior", "kind": "prior", "strength_name": "alpha", "strength": None,
                      "cells": aware, "why": None if aware else "no validation split"}]}


def test_group_shift_by_hand():
    out = group_shift([(0, shift_rows(0.5, 0.6)), (1, shift_rows(0.7, None)), (2, shift_rows(0.6, 0.8))])
    assert out["priors"] == ["uniform", "forward10"] and out["seeds"] == [0, 1, 2]
    soft, aware = out["rows"]
    assert soft["cells"]["forward10"]["values"] == pytest.approx([0.6, 0.8, 0.7])
    assert soft["cells"]["uniform"]["mean"] == pytest.approx(0.6)
    assert soft["cells"]["uniform"]["sd"] == pytest.approx(statistics.stdev([0.5, 0.7, 0.6]))
    assert aware["cells"]["uniform"]["n"] == 2 and aware["cells"]["uniform"]["mean"] == pytest.approx(0.7)
    assert aware["cells"]["uniform"]["strengths"] == [0.5, 0.5]
    missing = group_shift([(1, shift_rows(0.7, None))])["rows"][1]
    assert missing["cells"] is None and missing["why"] == "no validation split"


# --------------------------------------------------------------------------- two trained seeds
@pytest.fixture(scope="module")
def seeds(smoke_val_run, tmp_path_factory) -> list[Path]:
    """Two seeds of one configuration with a validation split: conftest's smoke_val_run (seed 0) and seed 1."""
    from lt_kit.training.fit import fit
    run = tmp_path_factory.mktemp("compare_analysis") / "seed1"
    fit(resolve({**load_params_file(ROOT / "params" / "smoke.yaml"), "seed": 1, "val_per_class": 5}), run,
        progress=False)
    return [smoke_val_run, run]


@pytest.fixture(scope="module")
def analyses(seeds) -> dict:
    """Each seed's Analysis, by resolved run dir (what `gap` and `shift` read)."""
    return {str(Path(r).resolve()): run_analysis(r) for r in seeds}


@pytest.fixture(scope="module")
def printed(seeds) -> str:
    """``compare SEED0 SEED1 --against 'tde a=1' --shift``: what it prints (the runs' caches read for real)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["compare", *map(str, seeds), "--against", "tde a=1", "--shift"]) == 0
    return out.getvalue()


def section(text: str, title: str) -> list[str]:
    """The lines of one section (from its title to the next blank line)."""
    return text.split(title + "\n", 1)[1].split("\n\n", 1)[0].splitlines()


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_seed_group_tables_hold_each_runs_paired_gaps(seeds, analyses):
    tables, = seed_group_tables(compare_runs(list(map(str, seeds))), against="tde a=1", shift=True)
    assert tables.reference == "tde" and [s for s, _ in tables.runs] == [0, 1] and not tables.lost
    own = [paired_gaps(analyses[str(Path(r).resolve())], "tde") for r in seeds]
    rows = {r["evaluation"]: r for r in tables.gaps}
    for name, row in rows.items():
        if name == "tde":
            continue
        mine = [next(x for x in o["rows"] if x["evaluation"] == name) for o in own]
        assert [s["gap"] for s in row["per_seed"]] == [m["gap"] for m in mine]
        assert [(s["low"], s["high"]) for s in row["per_seed"]] == [(m["low"], m["high"]) for m in mine]
    shift = [shift_table(analyses[str(Path(r).resolve())]) for r in seeds]
    for row, *per_run in zip(tables.shift["rows"], *(s["rows"] for s in shift)):
        for p in tables.shift["priors"]:
            assert row["cells"][p]["mean"] == pytest.approx(statistics.mean(r["cells"][p]["accuracy"] for r in per_run))


def test_against_prints_each_seeds_gap_and_their_spread(printed, seeds, analyses):
    lines = section(printed, GAP_TITLE)
    assert lines[0] == "digits_lt r20 causal_norm (seeds 0,1)"
    head, body = cells(lines[1]), [cells(line) for line in lines[2:] if line.startswith("  ")
                                   and not line.startswith("  runs: ")]
    assert head == ["evaluation", "n", "mean ± sd", "sign held", "seed 0", "seed 1"]
    group = compare_runs(list(map(str, seeds))).groups[0]
    assert [b[0] for b in body] == [group.shown(e) + " (reference)" * (e == "tde") for e in group.evaluations()]
    own = [paired_gaps(analyses[str(Path(r).resolve())], "tde") for r in seeds]
    for b in body:
        name = b[0].removesuffix(" (reference)")
        if name == "tde a=1":                                              # the reference's own row: gap 0
            assert b[1:] == ["2", "+0.00 ± 0.00", "reference", "+0.00 [+0.00, +0.00]", "+0.00 [+0.00, +0.00]"]
            continue
        mine = [next(x for x in o["rows"] if x["evaluation"] == name) for o in own]
        for cell, m in zip(b[4:], mine):                                    # each seed: gap [interval], in points
            assert [float(v) for v in re.findall(NUM, cell)] == pytest.approx(
                [100 * m["gap"], 100 * m["low"], 100 * m["high"]], abs=0.0051)
        gaps = [m["gap"] for m in mine]
        mean, sd = (float(v) for v in re.findall(NUM, b[2]))
        assert b[1] == "2" and mean == pytest.approx(100 * statistics.mean(gaps), abs=0.0051)
        assert sd == pytest.approx(100 * statistics.stdev(gaps), abs=0.0051)
        holds = all(math.copysign(1, g) == math.copysign(1, statistics.mean(gaps)) and g for g in gaps)
        assert b[3] == ("yes" if holds else "no"), name
    assert f"  runs: seed 0 = {seeds[0]}; seed 1 = {seeds[1]}" in lines
    assert lines[-1].startswith("gap = evaluation - reference, in points, each seed on its own test images")


def test_shift_cells_are_the_mean_over_seeds_of_each_runs_table(printed, seeds, analyses):
    lines = section(printed, SHIFT_TITLE)
    head = cells(lines[1])
    priors = head[3:]
    assert head[:3] == ["evaluation", "n", "strength"] and priors == ["forward50", "forward10", "uniform",
                                                                       "backward10", "backward50"]
    shift = [shift_table(analyses[str(Path(r).resolve())]) for r in seeds]
    rows = {c[0]: c for line in lines[2:] if not re.search(r"chosen per seed: |^  runs: ", line)
            for c in [cells(line)]}
    for per_run in zip(*(s["rows"] for s in shift)):
        name = "tde a=1" if per_run[0]["evaluation"] == "tde" else per_run[0]["evaluation"]
        for p, cell in zip(priors, rows[name][3:]):
            acc = [r["cells"][p]["accuracy"] for r in per_run]
            mean, sd = (float(v) for v in re.findall(NUM, cell))
            assert mean == pytest.approx(100 * statistics.mean(acc), abs=0.0051), (name, p)
            assert sd == pytest.approx(100 * statistics.stdev(acc), abs=0.0051), (name, p)
    assert any(line.startswith("  tde/prior alpha chosen per seed: forward50 ") for line in lines)


def test_markdown_a_lost_run_and_a_group_without_the_reference(smoke_run, seeds, tmp_path, capsys):
    lost = Path(shutil.copytree(seeds[1], tmp_path / "lost"))                # a copy that lost caches and weights
    for f in ("features.pt", "val_features.pt", "train_features.pt", "evaluated.pt", "checkpoint.pt"):
        (lost / f).unlink()
    params = yaml.safe_load((lost / "params.yaml").read_text())
    (lost / "params.yaml").write_text(yaml.safe_dump({**params, "seed": 2}))
    assert main(["compare", str(smoke_run), *map(str, seeds), str(lost), "--against", "tde/val", "--markdown", "-"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\| digits_lt r20 causal_norm val_per_class=5 \| softmax \| 3 \| 0,1,2 \|", out, re.M)
    assert ("digits_lt r20 causal_norm val_per_class=0: holds no 'tde/val'; its evaluations: softmax, tde a=1, "
            "logit_adjust/rule, crt/rule, lws/rule") in out
    assert "**digits_lt r20 causal_norm val_per_class=5** (seeds 0,1)" in out
    assert "| evaluation | n | mean ± sd | sign held | seed 0 | seed 1 |" in out
    assert ("| tde/val (reference) | 2 | +0.00 ± 0.00 | reference | +0.00 [+0.00, +0.00] | +0.00 [+0.00, +0.00] |"
            in out)
    assert re.search(rf"^\| softmax \| 2 \| {NUM} ± {NUM} \| (yes|no) \| {NUM} \[{NUM}, {NUM}\] \|", out, re.M)
    left_out = [line for line in out.splitlines() if str(lost) in line and "left out" in line]
    assert len(left_out) == 1 and left_out[0].startswith(f"- {lost}: left out (") and "no evaluated model" in left_out[0]


@pytest.mark.parametrize("argv, match", [
    (["--against", "nope"], "--against 'nope': no group holds this evaluation; valid: softmax, tde (shown as "
                            "tde a=1), tde/val, logit_adjust/rule"),
    (["--against", "tde a=2"], "--against 'tde a=2': no group holds this evaluation"),
    (["--prior", "uniform"], "--prior goes with --shift"),
    (["--shift", "--prior", "unif"], "unknown prior 'unif'"),
])
def test_bad_input_is_one_line_and_exit_2(seeds, capsys, argv, match):
    assert main(["compare", *map(str, seeds), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and match in err
