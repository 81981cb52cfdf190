"""Compare runs (lt_kit/runs/compare.py): grouping, mean and sample sd against hand values, subset checksums,
folders that cannot be compared, the CLI's formats, and compare.ipynb under papermill on trained runs."""
from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import papermill as pm
import pytest
import yaml

from lt_kit.cli import main
from lt_kit.config import load_params_file, resolve
from lt_kit.errors import LtKitError
from lt_kit.precision import resolve_bf16
from lt_kit.runs.compare import evaluations, mean_std, read_run
from lt_kit.runs.rundir import RunDir, indices_checksum, subset_checksum
from lt_kit.training.build import resolve_device
from lt_kit.views.report import compare_runs

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks" / "compare.ipynb"
COUNTS = [100, 50, 20, 10, 5]               # many: >60 (1 class), few: <15 (2), medium: 2; median 20


def entry(acc: list[float]) -> dict:
    """A metrics.json entry from per-class accuracies (5 classes, 10 test images each)."""
    a = np.asarray(acc, float)
    return {"many": a[0], "medium": a[1:3].mean(), "few": a[3:].mean(), "overall": a.mean(),
            "head_tail": {"head": a[:2].mean(), "tail": a[2:].mean()}, "per_class": a.tolist()}


def make_run(path: Path, *, seed: int = 0, acc=(0.9, 0.8, 0.6, 0.4, 0.2), tde=(0.8, 0.8, 0.7, 0.6, 0.5),
             subset=range(185), methods: dict | None = None, alpha: float = 1.0, **params) -> Path:
    """A finished run dir written by hand: params.yaml, metrics.json, subset indices (+ subset.json).
    bf16 is recorded as fit records it: ``auto`` resolved for the run's device on this machine."""
    run = RunDir(path)
    path.mkdir(parents=True)
    resolved = resolve({"seed": seed, **params})
    resolved["bf16"] = resolve_bf16(resolved["bf16"], resolve_device(resolved["device"]))
    (path / "params.yaml").write_text(yaml.safe_dump(resolved))
    metrics = {"alpha": alpha, "head": "causal_norm", "softmax": entry(list(acc)), "tde": entry(list(tde)),
               "train_counts": COUNTS, "class_names": list("abcde"), "thresholds": {"many": 60, "few": 15}}
    if methods is not None:
        metrics["methods"] = methods
    (path / "metrics.json").write_text(json.dumps(metrics))
    run.save_indices(np.asarray(list(subset)))
    return path


# --------------------------------------------------------------------------- maths
def test_mean_std_hand_values():
    n, mean, sd = mean_std([0.80, 0.84, 0.86])
    assert n == 3 and mean == pytest.approx(0.833333333) and sd == pytest.approx(0.0305505, abs=1e-7)
    assert sd == pytest.approx(statistics.stdev([0.80, 0.84, 0.86]))          # sample sd: divisor n - 1
    assert mean_std([0.5, float("nan"), None, 0.7]) == pytest.approx((2, 0.6, math.sqrt(0.02)))
    n, mean, sd = mean_std([0.8])
    assert (n, mean) == (1, 0.8) and math.isnan(sd)
    n, mean, sd = mean_std([float("nan")])
    assert n == 0 and math.isnan(mean) and math.isnan(sd)


def test_groups_by_everything_but_the_seed(tmp_path):
    for seed, a0 in ((0, 0.80), (1, 0.84), (2, 0.86)):
        make_run(tmp_path / f"a{seed}", seed=seed, acc=(0.9, 0.8, a0, 0.4, 0.2))
    make_run(tmp_path / "b0", seed=0, imbalance_ratio=10.0, subset=range(300))
    make_run(tmp_path / "c0", seed=0, lr=0.1)
    c = compare_runs([str(tmp_path / "*")])
    assert [g.seeds for g in c.groups] == [[0, 1, 2], [0], [0]]
    assert [g.label for g in c.groups] == ["digits_lt r20 causal_norm lr=0.05", "digits_lt r10 causal_norm lr=0.05",
                                           "digits_lt r20 causal_norm lr=0.1"]
    stats = c.groups[0].stats("softmax")
    assert stats["few"] == pytest.approx((3, 0.3, 0.0))                # class 3 and 4 never changed
    n, mean, sd = stats["tail"]                                        # mean of classes 2..4, per seed
    tails = [statistics.mean([a, 0.4, 0.2]) for a in (0.80, 0.84, 0.86)]
    assert (n, mean, sd) == (3, pytest.approx(statistics.mean(tails)), pytest.approx(statistics.stdev(tails)))
    assert stats["many"] == pytest.approx((3, 0.9, 0.0))
    text = c.text()
    row = next(line for line in text.splitlines() if line.startswith("digits_lt r20 causal_norm lr=0.05  softmax"))
    assert "0,1,2" in row and f"{100 * statistics.mean(tails):.2f} ± {100 * statistics.stdev(tails):.2f}" in row
    assert "digits_lt r10 causal_norm lr=0.05  tde a=1" in text


def test_mean_over_seeds_in_the_table_by_hand(tmp_path):
    """overall 0.80 / 0.84 / 0.86 -> 83.33 ± 3.06 (sample sd), written out by hand."""
    for seed, a in enumerate((0.80, 0.84, 0.86)):
        make_run(tmp_path / f"r{seed}", seed=seed, acc=[a] * 5)
    c = compare_runs([str(tmp_path / "r*")])
    row = c.rows(["softmax"])[0]
    assert row["n"] == 3 and row["seeds"] == "0,1,2"
    assert "83.33 ± 3.06" in c.text(["softmax"])
    assert "tde a=1" not in c.text(["softmax"]) and "tde a=1" in c.text()


def test_subset_checksum_written_and_computed_for_older_runs(tmp_path):
    run = make_run(tmp_path / "r", subset=range(185))
    written = json.loads((run / "subset.json").read_text())
    assert written["n"] == 185 and written["sha256"] == indices_checksum({"subset_indices.npy": np.arange(185)})
    (run / "subset.json").unlink()                                     # a run from before subset.json
    assert subset_checksum(run)["sha256"] == written["sha256"]
    np.save(run / "subset_indices.npy", np.arange(185, dtype=np.int32))     # dtype does not matter
    assert subset_checksum(run)["sha256"] == written["sha256"]
    np.save(run / "val_indices.npy", np.arange(5))                     # a val split changes it
    with_val = subset_checksum(run)
    assert with_val["sha256"] != written["sha256"] and with_val["files"] == ["subset_indices.npy", "val_indices.npy"]
    np.save(run / "subset_indices.npy", np.arange(1, 186))
    assert subset_checksum(run)["sha256"] != with_val["sha256"]


def test_different_subsets_are_said_plainly(tmp_path):
    make_run(tmp_path / "a0", seed=0)
    make_run(tmp_path / "a1", seed=1)
    assert "every group drew the same training subset" in compare_runs([str(tmp_path / "a*")]).text()
    make_run(tmp_path / "b0", seed=0, subset=range(1, 186))            # same parameters, other subset
    make_run(tmp_path / "c0", seed=0, imbalance_ratio=10.0, subset=range(300))
    c = compare_runs([str(tmp_path / "*")])
    assert [g.seeds for g in c.groups] == [[0, 1], [0], [0]]           # never averaged with a0/a1
    a, b, _ = (g.subset[:8] for g in c.groups)
    assert [g.label for g in c.groups] == [f"digits_lt r20 causal_norm subset {a}",
                                           f"digits_lt r20 causal_norm subset {b}", "digits_lt r10 causal_norm"]
    note = next(n for n in c.notes() if n.startswith("SUBSETS DIFFER"))
    for g in c.groups:
        assert f"{g.subset[:8]}: {g.label}" in note


def test_methods_are_evaluations_named_by_their_path(tmp_path):
    la = entry([0.6, 0.6, 0.6, 0.6, 0.6])
    methods = {"logit_adjust": {"label": "logit adj.", "rule": {"strength": 1.0, "metrics": la},
                                "val": {"strength": 0.5, "metrics": entry([0.7] * 5)}, "test_chosen": {"overall": 1}},
               "tde": {"rule": {"strength": 1.0, "metrics": entry([0.8, 0.8, 0.7, 0.6, 0.5])}},   # = tde entry
               "tau_norm": {"val": None}}
    run = make_run(tmp_path / "m0", seed=0, methods=methods)
    assert list(evaluations(json.loads((run / "metrics.json").read_text()))) == \
        ["softmax", "tde", "logit_adjust/rule", "logit_adjust/val"]
    nan_few = {**entry([0.9, 0.8, 0.7, 0.6, 0.5]), "few": math.nan}    # CIFAR-10-LT: no few-shot class
    assert list(evaluations({"softmax": nan_few, "methods": {"softmax": {"rule": {"metrics": dict(nan_few)}}}})) \
        == ["softmax", "softmax/rule"]                                 # equal values, another evaluation: kept
    make_run(tmp_path / "m1", seed=1)                                  # an older run: no methods
    c = compare_runs([str(tmp_path / "m*")])
    rows = {r["key"]: r for r in c.rows()}
    assert rows["softmax"]["n"] == 2 and rows["logit_adjust/rule"]["n"] == 1
    assert f"logit_adjust/rule: n=1 of 2; {tmp_path / 'm1'} lacks it (its metrics.json has no post-hoc methods" \
        in c.text()                                                    # a row short of its group says why
    assert rows["logit_adjust/rule"]["stats"]["overall"] == pytest.approx((1, 0.6, math.nan), nan_ok=True)
    with pytest.raises(LtKitError, match="no run holds the evaluation 'ldam'; these runs hold: softmax, tde"):
        c.rows(["ldam"])


def test_a_validation_choice_equal_to_the_rule_keeps_its_seed(tmp_path, capsys):
    """Seed 0's validation split chose the preset alpha, so its tde/val entry equals its tde entry: still
    seed 0's tde/val, averaged with the others; tde/rule is the tde entry itself (by path), one row."""
    tde = {0: (0.8, 0.8, 0.7, 0.6, 0.5), 1: (0.7, 0.7, 0.7, 0.6, 0.5), 2: (0.9, 0.8, 0.6, 0.6, 0.4)}
    for seed, acc in tde.items():
        chosen = (1.0, entry(list(acc))) if seed == 0 else (1.5, entry([0.6] * 5))
        methods = {"tde": {"rule": {"strength": 1.0, "metrics": entry(list(acc))},       # older runs' copy
                           "val": {"strength": chosen[0], "metrics": chosen[1]}}}
        make_run(tmp_path / f"r{seed}", seed=seed, tde=acc, methods=methods)
    c = compare_runs([str(tmp_path / "r*")])
    rows = {r["key"]: r for r in c.rows()}
    assert list(rows) == ["softmax", "tde", "tde/val"]
    assert (rows["tde/val"]["n"], rows["tde/val"]["seeds"]) == (3, "0,1,2")
    assert rows["tde/val"]["stats"]["overall"][1] == pytest.approx((entry(list(tde[0]))["overall"] + 2 * 0.6) / 3)
    assert main(["compare", str(tmp_path / "r*")]) == 0
    assert re.search(r"tde/val +3 +0,1,2 ", capsys.readouterr().out)


def test_tde_at_another_alpha_is_another_group(tmp_path):
    make_run(tmp_path / "r0", seed=0)
    make_run(tmp_path / "r1", seed=1, alpha=2.0)                       # `test --alpha 2` rewrote metrics.json
    c = compare_runs([str(tmp_path / "r*")])
    assert [g.label for g in c.groups] == ["digits_lt r20 causal_norm tde@1", "digits_lt r20 causal_norm tde@2"]
    assert "tde a=2" in c.text()


def test_a_repeated_seed_is_pointed_out(tmp_path):
    make_run(tmp_path / "r0", seed=0)
    shutil.copytree(tmp_path / "r0", tmp_path / "r0.replaced-20250101-000000")
    c = compare_runs([str(tmp_path / "*")])
    assert c.groups[0].seeds == [0, 0]
    assert any("holds seed 0 more than once (copies of one run?)" in n for n in c.notes())


def test_one_run_named_twice_counts_once(tmp_path, monkeypatch, capsys):
    """Relative and absolute, through a symlink, matched by two globs: one folder is one seed, the first name is
    kept and a note says which names were dropped; two copies of a run (two folders) stay a warning."""
    make_run(tmp_path / "runs" / "s0", seed=0, acc=(0.9, 0.8, 0.8, 0.4, 0.2))
    make_run(tmp_path / "runs" / "s1", seed=1)
    (tmp_path / "link").symlink_to(tmp_path / "runs" / "s0")
    monkeypatch.chdir(tmp_path)
    named = ["runs/s0", str(tmp_path / "runs" / "s0"), "runs/s1", "link", "runs/*", "runs/s*"]
    c = compare_runs(named, strict=True)                               # a note, not an error under strict
    assert [g.seeds for g in c.groups] == [[0, 1]] and [str(r.path) for r in c.groups[0].runs] == ["runs/s0", "runs/s1"]
    assert c.groups[0].stats("softmax")["medium"] == pytest.approx((2, 0.75, math.sqrt(0.005)))
    note = next(n for n in c.notes() if n.startswith("named more than once, counted once"))
    for part in (f"{tmp_path / 'runs' / 's0'} (= runs/s0)", "link (= runs/s0)", "runs/s0 (named twice)",
                 "runs/s1 (named twice)"):
        assert part in note
    assert not any("more than once (copies of one run?)" in n for n in c.notes())
    assert main(["compare", *named]) == 0
    out = capsys.readouterr().out
    assert re.search(r"digits_lt r20 causal_norm\s+softmax\s+2\s+0,1\s", out) and "named more than once" in out


def test_ignore_lets_a_parameter_differ_inside_a_group(tmp_path):
    make_run(tmp_path / "r0", seed=0, weight_decay=5e-4)
    make_run(tmp_path / "r1", seed=1, weight_decay=1e-4)
    assert len(compare_runs([str(tmp_path / "r*")]).groups) == 2
    c = compare_runs([str(tmp_path / "r*")], ignore=["weight_decay"])
    assert [g.seeds for g in c.groups] == [[0, 1]]
    assert any(n.startswith("not told apart") and "weight_decay (0.0001, 0.0005)" in n for n in c.notes())
    with pytest.raises(LtKitError, match="unknown parameter 'devise' to ignore"):
        compare_runs([str(tmp_path / "r*")], ignore=["devise"])


def test_settings_that_cannot_change_a_result_do_not_split_groups(tmp_path):
    """Where the data lies, where and how fast a run ran: one group, and the table says what it did not tell
    apart. A folder data set's data_root is its data, so it still splits."""
    make_run(tmp_path / "r0", seed=0)
    make_run(tmp_path / "r1", seed=1, data_root="/elsewhere", device="cpu", num_workers=0, download=True,
             cudnn_benchmark=False, channels_last=False, compile=True)
    c = compare_runs([str(tmp_path / "r*")])
    assert [g.seeds for g in c.groups] == [[0, 1]] and c.groups[0].label == "digits_lt r20 causal_norm"
    note = next(n for n in c.notes() if n.startswith("not told apart"))
    for key in ("data_root", "device", "num_workers", "download", "cudnn_benchmark", "channels_last", "compile"):
        assert key in note
    assert "device (auto, cpu)" in note and "--ignore" in note
    make_run(tmp_path / "f0", seed=0, dataset="folder", data_root="/cats", imbalance_ratio=1.0)
    make_run(tmp_path / "f1", seed=1, dataset="folder", data_root="/dogs", imbalance_ratio=1.0)
    assert [g.seeds for g in compare_runs([str(tmp_path / "f*")]).groups] == [[0], [1]]


# --------------------------------------------------------------------------- folders that cannot be compared
@pytest.fixture
def mixed(tmp_path) -> Path:
    """Two good runs and one folder of each kind that must be skipped, with the reason it must give."""
    make_run(tmp_path / "good0", seed=0)
    make_run(tmp_path / "good1", seed=1)
    unfinished = make_run(tmp_path / "unfinished", seed=2)
    (unfinished / "metrics.json").unlink()
    (unfinished / "history.json").write_text(json.dumps([{"epoch": 1}]))
    older = make_run(tmp_path / "older", seed=3)
    for f in ("subset_indices.npy", "subset.json"):
        (older / f).unlink()
    no_ht = make_run(tmp_path / "no_head_tail", seed=4)
    m = json.loads((no_ht / "metrics.json").read_text())
    del m["softmax"]["head_tail"]
    (no_ht / "metrics.json").write_text(json.dumps(m))
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "params.yaml").write_text("model: {def_file: ./models/X.py}\n")   # not lt_kit's
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("a file, matched by the glob")
    return tmp_path


REASONS = {"unfinished": "unfinished: no metrics.json (1 of 30 epochs in history.json",
           "older": "from an lt_kit without what compare needs: no readable subset_indices.npy",
           "no_head_tail": "from an lt_kit without what compare needs: metrics.json's softmax entry has no head_tail",
           "foreign": "not an lt_kit run (params.yaml has no dataset and seed)",
           "empty": "not a run (no params.yaml)"}


def test_unusable_folders_are_named_and_skipped(mixed):
    c = compare_runs([str(mixed / "*"), str(mixed / "nothing*")])
    assert [g.seeds for g in c.groups] == [[0, 1]]                     # none of the others averaged in
    skipped = dict(c.skipped)
    for name, reason in REASONS.items():
        assert skipped[str(mixed / name)].startswith(reason), (name, skipped[str(mixed / name)])
    assert skipped[str(mixed / "nothing*")] == "no folder matches this glob"
    text = c.text()
    assert "skipped 6 folders:" in text and "1 plain file matched by the globs left out" in text
    for name in REASONS:
        assert f"  {mixed / name}: {REASONS[name]}" in text


def test_strict_refuses_them(mixed):
    with pytest.raises(LtKitError, match=r"5 of the run dirs given cannot be compared \(strict\): .*unfinished"):
        compare_runs([str(mixed / "*")], strict=True)
    assert compare_runs([str(mixed / "good*")], strict=True).groups[0].seeds == [0, 1]


def test_a_folder_of_runs_says_to_use_a_glob(mixed):
    with pytest.raises(LtKitError, match=r"no run to compare among 1 given .*not a run \(no params.yaml\); it "
                                         r"holds 6 run dirs: pass .*/\*"):
        compare_runs([str(mixed)])


def test_the_unfinished_hint_is_a_command_that_works(smoke_copy, capsys):
    """Every epoch trained, nothing evaluated (stopped before the end): the hint's command evaluates it."""
    for f in ("metrics.json", "evaluated.pt", "features.pt"):
        (smoke_copy / f).unlink()
    with pytest.raises(LtKitError) as e:
        read_run(smoke_copy)
    command = re.search(r"`python -m lt_kit (.+?)`", str(e.value))
    assert command and "all 3 epochs trained, not evaluated" in str(e.value), str(e.value)
    assert main(command.group(1).split()) == 0, capsys.readouterr().err
    assert read_run(smoke_copy).evaluations["tde"]["overall"] >= 0


def test_read_run_errors_are_one_line(mixed):
    for name in REASONS:
        with pytest.raises(LtKitError) as e:
            read_run(mixed / name)
        assert "\n" not in str(e.value) and str(e.value).startswith(str(mixed / name))


# --------------------------------------------------------------------------- the CLI
def test_cli_text_markdown_csv(mixed, tmp_path, capsys):
    pattern = str(mixed / "good*")
    assert main(["compare", pattern]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:5] == ["group", "evaluation", "n", "seeds", "subset"]
    assert "digits_lt r20 causal_norm  softmax" in text and "0,1" in text
    assert main(["compare", pattern, "--markdown", "-", "--evaluation", "tde"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("| group | evaluation | n | seeds | subset | many |") and "| tde a=1 | 2 | 0,1 |" in md
    assert "softmax" not in md
    out = tmp_path / "out" / "table.csv"
    assert main(["compare", pattern, "--csv", str(out), "--markdown", str(tmp_path / "t.md")]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "group" in printed              # the text table is printed too
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["evaluation"], r["alpha"]) for r in rows] == [("softmax", ""), ("tde", "1")]
    assert float(rows[0]["overall_mean"]) == pytest.approx(58.0) and float(rows[0]["overall_sd"]) == 0.0
    assert rows[0]["few_mean"] == "30.0000" and rows[0]["runs"].count(";") == 1
    assert (tmp_path / "t.md").read_text().startswith("| group |")


def test_cli_skips_or_refuses_with_strict(mixed, capsys):
    assert main(["compare", str(mixed / "*")]) == 0
    assert "skipped 5 folders:" in capsys.readouterr().out
    assert main(["compare", str(mixed / "*"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 5 of the run dirs given cannot be compared (strict)") and err.count("\n") == 1
    assert main(["compare", str(mixed / "empty")]) == 2
    assert capsys.readouterr().err.startswith("error: no run to compare among 1 given")
    assert main(["compare", str(mixed / "good*"), "--evaluation", "ldam"]) == 2
    assert "no run holds the evaluation 'ldam'" in capsys.readouterr().err


# --------------------------------------------------------------------------- trained runs and the notebook
@pytest.fixture(scope="module")
def trained(smoke_run, tmp_path_factory) -> list[str]:
    """Two seeds of params/smoke.yaml: conftest's smoke_run (seed 0) and seed 1, trained here (seconds)."""
    from lt_kit.training.fit import fit
    run = tmp_path_factory.mktemp("compare_runs") / "smoke_s1"
    fit(resolve({**load_params_file(ROOT / "params" / "smoke.yaml"), "seed": 1}), run, progress=False)
    return [str(smoke_run), str(run)]


def test_trained_runs(trained, tmp_path):
    other = make_run(tmp_path / "other", seed=0)                       # another configuration, by hand
    c = compare_runs([*trained, str(other)])
    assert [g.seeds for g in c.groups] == [[0, 1], [0]]
    m = [json.loads((Path(r) / "metrics.json").read_text()) for r in trained]
    n, mean, sd = c.groups[0].stats("tde")["overall"]
    assert (n, mean) == (2, pytest.approx((m[0]["tde"]["overall"] + m[1]["tde"]["overall"]) / 2))
    assert sd == pytest.approx(abs(m[0]["tde"]["overall"] - m[1]["tde"]["overall"]) / math.sqrt(2))
    for r in trained:                                                  # train wrote subset.json; it matches
        assert json.loads((Path(r) / "subset.json").read_text())["sha256"] == \
            subset_checksum(r, use_record=False)["sha256"]
    assert c.groups[0].subset != c.groups[1].subset and "SUBSETS DIFFER" in c.text()


# the notebook's form, parameters and jupytext pair: tests/test_notebooks.py (NOTEBOOKS includes compare)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A kernelspec for this interpreter (as in test_notebooks.py)."""
    path = tmp_path_factory.mktemp("jupyter")
    spec = path / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                                           "{connection_file}"], "language": "python"}))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(path))
    mp.setenv("OMP_NUM_THREADS", "2")
    yield "python3"
    mp.undo()


def test_notebook_under_papermill(trained, tmp_path, kernel):
    out = tmp_path / "figs"
    make_run(tmp_path / "hand" / "other", seed=0, lr=0.1)              # a second group (5 classes, by hand)
    (tmp_path / "hand" / "unfinished").mkdir()
    nb = pm.execute_notebook(str(NB), str(tmp_path / "compare.out.ipynb"), kernel_name=kernel, cwd=str(ROOT),
                             progress_bar=False, parameters={"runs": [*trained, str(tmp_path / "hand" / "*")],
                                                             "out_dir": str(out)})
    text = "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert re.search(r"^digits_lt r20 causal_norm epochs=3 .* tde a=1 +2 +0,1 ", text, re.M)
    assert re.search(r"^digits_lt r20 causal_norm epochs=30 .* softmax +1 +0 .* 58\.00 ", text, re.M)
    assert "SUBSETS DIFFER" in text
    assert f"{tmp_path / 'hand' / 'unfinished'}: not a run (no params.yaml)" in text
    for f in ("compare_per_class.png", "compare_splits.png"):
        assert (out / f).read_bytes().startswith(b"\x89PNG")
    assert (out / "compare.md").read_text().startswith("| group |") and (out / "compare.csv").is_file()
    assert sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])) == 2
    with pytest.raises(pm.PapermillExecutionError, match="no run holds the evaluation 'ldam'"):
        pm.execute_notebook(str(NB), str(tmp_path / "bad.ipynb"), kernel_name=kernel, cwd=str(ROOT),
                            progress_bar=False, parameters={"runs": trained[1], "evaluation": "ldam",
                                                            "out_dir": str(out)})
