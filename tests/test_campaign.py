"""The campaign runner (bench/campaign.py): rows run in order, a killed row resumes from its checkpoint to the
uninterrupted result, a recorded row never runs again, a lost run dir starts over, a stash resumes elsewhere."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import campaign  # noqa: E402

import lt_kit.training.fit as T  # noqa: E402
from lt_kit.errors import LtKitError  # noqa: E402


def _manifest(tmp_path: Path, rows: list[dict]) -> Path:
    m = {"name": "camp_test", "defaults": {"params": "smoke", "set": {"epochs": 3, "val_per_class": 5,
                                                                       "num_workers": 0}},
         "rows": rows}
    p = tmp_path / "manifest.yaml"
    p.write_text(yaml.safe_dump(m))
    return p


def _campaign(tmp_path, rows):
    return campaign.Campaign(campaign.load_manifest(_manifest(tmp_path, rows)), tmp_path / "runs", tmp_path / "res")


ROWS = [{"name": "causal_s0", "set": {"head": "causal_norm", "seed": 0}},
        {"name": "linear_s0", "set": {"head": "linear", "seed": 0}}]


def _run(tmp_path, *extra):
    campaign.main(["run", "--manifest", str(tmp_path / "manifest.yaml"), "--runs", str(tmp_path / "runs"),
                   "--results", str(tmp_path / "res"), "--data-root", str(tmp_path / "data"), "--device", "cpu",
                   *extra])


class Killed(Exception):
    pass


def test_rows_record_in_order_and_never_run_again(tmp_path, monkeypatch):
    c = _campaign(tmp_path, ROWS)
    assert [c.state(r)[0] for r in c.m["rows"]] == ["pending", "pending"]
    _run(tmp_path, "--max-rows", "1")
    assert [c.state(r)[0] for r in c.m["rows"]] == ["done", "pending"]
    rec = json.loads((tmp_path / "res" / "rows" / "causal_s0.json").read_text())
    assert rec["meta"]["epochs"] == 3 and rec["meta"]["seed"] == 0 and rec["meta"]["device"] == "cpu"
    assert {r["method"] for r in rec["rows"]} >= {None, "tde", "logit_adjust"}
    assert (tmp_path / "res" / "runs" / "causal_s0" / "evaluated.pt").is_file()
    assert (tmp_path / "res" / "camp_test.md").read_text().count("causal_norm") >= 3      # grouped table rebuilt
    calls = []
    real_fit = campaign.fit
    monkeypatch.setattr(campaign, "fit", lambda *a, **k: calls.append(a[1]) or real_fit(*a, **k))
    readme_writes = []
    monkeypatch.setattr(campaign, "write_between", lambda *a: readme_writes.append(a) or a[0])
    _run(tmp_path, "--readme")
    assert [Path(p).name for p in calls] == ["linear_s0"]          # the recorded row was not trained again
    # --readme: after each row, the short table into README.md and the full one into docs/results.md
    assert [(a[0].name, a[0].parent.name) for a in readme_writes] == [("README.md", ROOT.name), ("results.md", "docs")]
    assert "| Softmax |" in readme_writes[0][2] and readme_writes[1][2] == c.headline()
    monkeypatch.undo()
    assert "done" in c.status().splitlines()[2]
    table = json.loads((tmp_path / "res" / "camp_test.json").read_text())
    assert {r["head"] for r in table["rows"]} == {"causal_norm", "linear"}
    # the headline: one line per method and choice, both heads, the val choice's strength shown
    head = c.headline()
    lines = [ln for ln in head.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert any(ln.startswith("| De-confound-TDE (a=1) | paper rule |") for ln in lines)
    assert any(ln.startswith("| Softmax + logit adj. | val split |") for ln in lines)
    # cRT / LWS: the last epoch is lt_kit's rule, the validation-chosen epoch the authors' procedure
    assert any(ln.startswith("| Softmax + cRT (epoch=10) | last epoch (lt_kit rule) |") for ln in lines)
    assert any(ln.startswith("| Softmax + cRT | val split (authors' procedure) |") for ln in lines)
    assert not any("| paper rule |" in ln for ln in lines if "cRT" in ln or "LWS" in ln)
    assert len(lines) == sum(len(json.loads(f.read_text())["rows"]) for f in (tmp_path / "res" / "rows").iterdir())
    assert (tmp_path / "res" / "headline.md").read_text().endswith(head)
    # the README's short table: the same cells for the rows that carry the reading, tau-norm and the rule rows
    # of cRT / LWS left to the full table, and of cRT / LWS only the one with the better validation accuracy
    short = [ln for ln in c.headline(short=True).splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert set(short) <= set(lines) and readme_writes[0][2] == c.headline(short=True)
    assert [ln.split(" | ")[0] for ln in short] == [
        "| De-confound", "| De-confound-TDE (a=1)", "| De-confound-TDE", "| De-confound + logit adj. (tau=1)",
        "| De-confound + logit adj.", short[5].split(" | ")[0], "| Softmax", "| Softmax + logit adj. (tau=1)",
        "| Softmax + logit adj.", short[9].split(" | ")[0]]
    for i, run in ((5, "causal_s0"), (9, "linear_s0")):
        val = {m: json.loads((tmp_path / "res" / "runs" / run / "metrics.json").read_text())["methods"][m]["val"]
               ["val_overall"] for m in ("crt", "lws")}
        best = max(val, key=lambda m: (val[m], m))
        assert f"+ {dict(crt='cRT', lws='LWS')[best]} | val split (authors' procedure) |" in short[i], (short[i], val)
    (tmp_path / "res" / "headline.md").unlink()            # killed between a row's record and its tables:
    (tmp_path / "res" / "camp_test.md").unlink()           # the next run rebuilds them before it trains
    _run(tmp_path)
    assert (tmp_path / "res" / "headline.md").read_text().endswith(head)
    assert (tmp_path / "res" / "camp_test.md").read_text().count("causal_norm") >= 3
    readme = tmp_path / "README.md"
    readme.write_text("# x\n" + "\n".join(campaign.HEADLINE_MARKERS) + "\ntail\n")
    campaign.write_between(readme, campaign.HEADLINE_MARKERS, head)
    campaign.write_between(readme, campaign.HEADLINE_MARKERS, head)          # idempotent
    assert readme.read_text().count("| De-confound-TDE (a=1) |") == 1 and readme.read_text().endswith("tail\n")
    # rescore: the same lt_kit gives the same rows; the training record stays, the rescoring is noted
    before = json.loads((tmp_path / "res" / "rows" / "causal_s0.json").read_text())
    assert c.rescore() == ["causal_s0", "linear_s0"]
    after = json.loads((tmp_path / "res" / "rows" / "causal_s0.json").read_text())
    assert after["rows"] == before["rows"] and after["meta"]["wall_seconds"] == before["meta"]["wall_seconds"]
    assert after["meta"]["rescored"]["version"]
    with pytest.raises(campaign.LtKitError, match="mark where the table goes"):
        campaign.write_between(tmp_path / "manifest.yaml", campaign.HEADLINE_MARKERS, head)


def test_a_killed_row_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    c = _campaign(tmp_path, ROWS[:1])
    real = T.train_one_epoch

    def dies_in_epoch_2(*a, **k):
        if k["epoch"] == 2:
            raise Killed
        return real(*a, **k)
    monkeypatch.setattr(T, "train_one_epoch", dies_in_epoch_2)
    with pytest.raises(Killed):
        _run(tmp_path)
    st, done, _ = c.state(c.m["rows"][0])
    assert (st, done) == ("partial", 1)
    assert "partial  epoch 1 of 3" in c.status()
    monkeypatch.setattr(T, "train_one_epoch", real)
    _run(tmp_path)
    assert c.state(c.m["rows"][0])[0] == "done"
    resumed = torch.load(tmp_path / "res" / "runs" / "causal_s0" / "evaluated.pt", weights_only=True)["model"]
    (tmp_path / "b").mkdir()
    c2 = _campaign(tmp_path / "b", ROWS[:1])        # the same row, never interrupted
    c2.run_row(c2.m["rows"][0], str(tmp_path / "data"), "cpu")
    straight = torch.load(c2.results / "runs" / "causal_s0" / "evaluated.pt", weights_only=True)["model"]
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=0)


def test_a_lost_run_dir_starts_over_and_a_stash_resumes(tmp_path, monkeypatch):
    c = _campaign(tmp_path, ROWS[:1])
    real = T.train_one_epoch
    monkeypatch.setattr(T, "train_one_epoch",
                        lambda *a, **k: (_ for _ in ()).throw(Killed) if k["epoch"] == 3 else real(*a, **k))
    with pytest.raises(Killed):
        _run(tmp_path)
    assert c.stash() == ["causal_s0"]
    stashed = tmp_path / "res" / "partial" / "causal_s0"
    assert yaml.safe_load((stashed / "params.yaml").read_text())["data_root"] == "DIR"     # no machine path
    assert not (stashed / ".lock").exists()
    assert torch.load(stashed / "checkpoint.pt", weights_only=False)["params"]["data_root"] == "DIR"
    import shutil
    shutil.rmtree(tmp_path / "runs")                 # a fresh machine: only the committed stash is left
    assert c.state(c.m["rows"][0])[:2] == ("partial", 2)
    from lt_kit.runs.lock import RunLock
    with RunLock(c.run_dir(c.m["rows"][0])):        # another worker holds the row (in its first epoch)
        c.restore_stash(c.m["rows"][0])
        assert not (c.run_dir(c.m["rows"][0]) / "checkpoint.pt").exists()          # its run dir left alone
    monkeypatch.setattr(T, "train_one_epoch", real)
    epochs_run = []
    monkeypatch.setattr(T, "train_one_epoch", lambda *a, **k: epochs_run.append(k["epoch"]) or real(*a, **k))
    _run(tmp_path)
    assert epochs_run == [3]                         # resumed from the stash, not started over
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["causal_s0"]     # no half-copied stash left
    assert not (tmp_path / "res" / "partial" / "causal_s0").exists()
    shutil.rmtree(tmp_path / "runs")
    (tmp_path / "res" / "rows" / "causal_s0.json").unlink()
    epochs_run.clear()
    _run(tmp_path)                                   # no run dir, no stash, no record: the row starts over
    assert epochs_run == [1, 2, 3]


@pytest.fixture(scope="module")
def recorded_row(tmp_path_factory) -> Path:
    """A campaign folder (manifest, runs/, res/) whose one row, causal_s0, is trained and recorded; tests copy it."""
    base = tmp_path_factory.mktemp("camp")
    _campaign(base, ROWS[:1])
    _run(base)
    return base


def test_a_finished_run_is_recorded_only_under_the_manifest_row_it_ran(recorded_row, tmp_path):
    """Killed between its fit and its record, a row is recorded on the next run; if its manifest row changed
    meanwhile, the run is refused with both values named, and what differs per machine does not count."""
    shutil.copytree(recorded_row, tmp_path, dirs_exist_ok=True)
    (tmp_path / "res" / "rows" / "causal_s0.json").unlink()          # finished, not recorded
    changed = _campaign(tmp_path, [{"name": "causal_s0", "set": {"head": "causal_norm", "seed": 0, "lr": 0.1}}])
    with pytest.raises(campaign.LtKitError) as e:
        changed.run_row(changed.m["rows"][0], str(tmp_path / "data"), "cpu")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("row causal_s0: the manifest row no longer names the parameters")
    assert "(lr: manifest 0.1, run 0.05)" in msg and "restore the row in" in msg and "manifest.yaml" in msg
    assert msg.endswith(f"or move {tmp_path / 'runs' / 'causal_s0'} away to train the row again")
    assert not (tmp_path / "res" / "rows" / "causal_s0.json").exists()
    assert campaign.manifest_drift({"bf16": "auto", "seed": 1}, {"bf16": True}) == ["seed: manifest 1, run 0"]
    # another data root, device and loader workers: the same row on another machine, recorded
    same = _campaign(tmp_path, [{"name": "causal_s0", "set": {"head": "causal_norm", "seed": 0, "num_workers": 2}}])
    assert same.run_row(same.m["rows"][0], str(tmp_path / "elsewhere"), "auto")
    assert same.state(same.m["rows"][0])[0] == "done"


def test_the_headline_footer_counts_the_runs_its_table_shows(recorded_row, tmp_path):
    """A row kept out of the headline (headline: false) and a recorded row compare cannot read are not counted,
    nor is their machine named."""
    shutil.copytree(recorded_row, tmp_path, dirs_exist_ok=True)
    res = tmp_path / "res"
    rec = json.loads((res / "rows" / "causal_s0.json").read_text())
    for name in ("causal_s0_bf16", "causal_s0_lost"):                # recorded copies of the row, on other machines
        shutil.copytree(res / "runs" / "causal_s0", res / "runs" / name)
        meta = {**rec["meta"], "row": name, "machine": f"MACHINE-{name}"}
        (res / "rows" / f"{name}.json").write_text(json.dumps({**rec, "meta": meta}))
    (res / "runs" / "causal_s0_lost" / "metrics.json").unlink()      # compare skips it: not in the table
    c = _campaign(tmp_path, [*ROWS[:1], {"name": "causal_s0_bf16", "headline": False, "set": {"seed": 0}},
                             {"name": "causal_s0_lost", "set": {"seed": 0}}])
    head = c.headline()
    assert "; 1 recorded run(s) on " in head and "MACHINE-" not in head
    assert all(" | 0 | " in ln for ln in head.splitlines() if ln.startswith("| ") and "---" not in ln
               and not ln.startswith("| method"))                                   # seeds: 0, once


def test_a_recorded_row_keeps_its_weights_and_test_gives_its_metrics_again(tmp_path, capsys):
    """The recorded run dir holds the model alone (no optimiser state, small enough to commit) and params.yaml
    with data_root DIR; with everything else gone, `lt_kit test --run-dir <it> --data-root <the data>` rebuilds
    the caches and gives every recorded metric again, bit for bit (same machine)."""
    from conftest import write_cifar

    from lt_kit.cli import main
    from lt_kit.evaluation.summary import rule_metrics
    write_cifar(tmp_path / "data")
    _campaign(tmp_path, [{"name": "cifar_s0", "params": "cifar10_lt_resnet32",
                          "set": {"epochs": 2, "warmup_epochs": 1, "milestones": [1], "batch_size": 16,
                                  "imbalance_ratio": 10, "seed": 0}}])
    _run(tmp_path)
    kept = Path(shutil.copytree(tmp_path / "res" / "runs" / "cifar_s0", tmp_path / "kept"))
    for gone in ("runs", "res"):                             # the machine's run dir, the caches, the row record
        shutil.rmtree(tmp_path / gone)
    weights = torch.load(kept / "evaluated.pt", map_location="cpu", weights_only=True)
    assert set(weights) == set(campaign.WEIGHT_KEYS) and (kept / "evaluated.pt").stat().st_size < 3_000_000
    assert yaml.safe_load((kept / "params.yaml").read_text())["data_root"] == "DIR"
    assert not list(kept.glob("*features.pt")) and not (kept / "checkpoint.pt").exists()
    if (ROOT / ".git").exists() and shutil.which("git"):    # committed: git does not ignore a recorded row's weights
        probe = "bench/results/campaign_e200/runs/r100_causal_norm_s0/evaluated.pt"
        assert subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT).returncode == 1
    recorded = json.loads((kept / "metrics.json").read_text())
    calls = [(["--alpha", "0"], recorded["softmax"]), ([], recorded["tde"])]
    for name, e in recorded["methods"].items():
        if "rule" not in e:
            continue
        if e.get("kind") == "two-stage":                     # re-fitted on the rebuilt training cache
            calls.append((["--method", name], e["rule"]["metrics"]))
            continue
        calls.append((["--method", name], rule_metrics(recorded, name)))
        if e.get("val"):
            calls.append((["--method", name, "--strength", repr(e["val"]["strength"])], e["val"]["metrics"]))
    assert any(e.get("kind") == "two-stage" for e in recorded["methods"].values()) and len(calls) >= 7
    for args, _ in calls:
        assert main(["test", "--run-dir", str(kept), "--data-root", str(tmp_path / "data"), *args]) == 0, \
            capsys.readouterr().err
    assert (kept / "features.pt").is_file() and (kept / "val_features.pt").is_file()       # rebuilt from the data
    got = [json.loads(ln) for ln in (kept / "evaluations.jsonl").read_text().splitlines()]
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)   # noqa: E731 (NaN too)
    for (args, want), line in zip(calls, got, strict=True):
        assert same(line["metrics"], want), args
        if line["method"] in ("crt", "lws") and recorded["methods"][line["method"]].get("val"):
            assert same(line["val"]["metrics"], recorded["methods"][line["method"]]["val"]["metrics"]), args


def test_campaign_analysis_rescores_a_recorded_row_and_runs_every_table_on_it(tmp_path, capsys):
    """bench/campaign_analysis.py on a recorded row with weights: the caches come back from evaluated.pt in a work
    folder (the row's own folder is left as recorded), every recorded number is found identical, and the shift,
    calibration, gap and adaptation tables and both figures are written; a row without weights is named as such
    and refused when asked for, and counts in its seed group's gaps (from the recorded metrics); a changed number
    is found, with where and by how much."""
    import campaign_analysis
    from conftest import write_cifar
    write_cifar(tmp_path / "data")
    short = {"epochs": 2, "warmup_epochs": 1, "milestones": [1], "batch_size": 16, "imbalance_ratio": 10}
    _campaign(tmp_path, [{"name": f"cifar_s{s}", "params": "cifar10_lt_resnet32", "set": {**short, "seed": s}}
                         for s in (0, 1)])
    _run(tmp_path)
    res = tmp_path / "res"
    (res / "runs" / "cifar_s1" / "evaluated.pt").unlink()          # as a row recorded before weights were kept
    before = sorted(p.name for p in (res / "runs" / "cifar_s0").iterdir())
    args = ["--data-root", str(tmp_path / "data"), "--results", str(res), "--work", str(tmp_path / "work"),
            "--draws", "2"]
    threads = torch.get_num_threads()
    assert campaign_analysis.main([*args, "--threads", str(threads % 2 + 1)]) == 0
    assert torch.get_num_threads() == threads             # its --threads is its own: the caller's is given back
    assert sorted(p.name for p in (res / "runs" / "cifar_s0").iterdir()) == before        # no cache written there
    assert (tmp_path / "work" / "cifar_s0" / "features.pt").is_file()
    out = json.loads((res / "analysis.json").read_text())
    assert list(out["rows"]) == ["cifar_s0"]
    row = out["rows"]["cifar_s0"]
    assert row["rescore"]["identical"] and {"softmax", "tde", "methods"} <= set(row["rescore"]["compared"])
    assert set(row["tde_prior_alpha"]) == set(row["shift"]["priors"]) and row["adaptation"]["draws"] == 2
    md = (res / "analysis.md").read_text()
    for part in ("identical: every recorded number came back bit for bit", "### Label shift", "### Calibration",
                 "### Paired gaps against the reference", "### When the test prior is unknown",
                 "metrics only (recorded before weights were kept, no caches to analyse): cifar_s1",
                 "## Over the seeds, from the recorded metrics", "over seeds, against tde:",
                 "| adapted method | test prior | unadapted | EM | BBSE | oracle | EM recovers | BBSE recovers |"):
        assert part in md, part
    assert "--data-root $CIFAR" in md and str(tmp_path / "data") not in md
    for fig in ("label_shift", "adaptation", "reliability"):
        assert (res / "analysis" / "cifar_s0" / f"{fig}.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(LtKitError, match="cifar_s1: no recorded run with weights"):
        campaign_analysis.main([*args, "--rows", "cifar_s1"])
    (group,) = out["seed_groups"]
    assert group["rows"] == ["cifar_s0", "cifar_s1"] and group["seeds"] == [0, 1] and group["reference"] == "tde"
    metrics = [json.loads((res / "runs" / r / "metrics.json").read_text()) for r in group["rows"]]
    gaps = {g["evaluation"]: g for g in group["gaps"]}
    assert {"softmax", "tde/val", "logit_adjust/rule", "crt/val"} <= set(gaps) and "tde" not in gaps
    assert not any("test_chosen" in n for n in gaps)                # chosen on the test set: never a result
    for name, path in (("softmax", ("softmax",)), ("tde/val", ("methods", "tde", "val", "metrics")),
                       ("crt/val", ("methods", "crt", "val", "metrics"))):   # each seed's minus TDE's, by hand
        want = []
        for m in metrics:
            node = m
            for k in path:
                node = node[k]
            want.append(node["overall"] - m["tde"]["overall"])
        assert gaps[name]["gaps"] == pytest.approx(want) and gaps[name]["n"] == 2, name
    recorded = json.loads((res / "runs" / "cifar_s0" / "metrics.json").read_text())
    again = json.loads(json.dumps(recorded))
    again["tde"]["overall"] += 0.001
    assert campaign_analysis.differences(recorded, again) == [("tde.overall", pytest.approx(0.001))]
    assert campaign_analysis.differences(recorded, recorded) == []
    again["softmax"]["overall"] += 0.004
    again["softmax"]["pred_counts"][0] += 40                       # counts move by whole images: not an accuracy
    diff = campaign_analysis.differences(recorded, again)
    assert campaign_analysis.largest_overall(diff) == ("softmax.overall", pytest.approx(0.004))
    assert campaign_analysis.overall_change(campaign_analysis.largest_overall(diff)) == \
        "the largest change of an overall accuracy 0.40 points, at `softmax.overall`"
    assert campaign_analysis.largest_overall([("softmax.pred_counts[0]", 40.0)]) is None
    del again["methods"]["crt"]["val"]                             # a recorded value the re-score lacks
    assert ("methods.crt.val (missing)", math.inf) in campaign_analysis.differences(recorded, again)
    # a second run reuses the caches of the same weights; other weights are copied afresh
    assert campaign_analysis.main(args) == 0
    assert json.loads((res / "analysis.json").read_text())["rows"]["cifar_s0"]["rescore"]["caches"] == \
        "loaded from an earlier rebuild of the same weights"


@pytest.mark.filterwarnings("ignore:bf16=true on a CPU without native bf16")     # the hand-made bf16 twin
def test_campaign_analysis_pairs_models_of_one_seed_subset_and_precision(tmp_path):
    """Across models: TDE's rule on the causal-norm rows against every evaluation of the linear rows, pairing
    only rows of one seed, subset, ratio and precision (a bf16 twin, or a seed the other model lacks, stays out),
    with each seed's gap the two recorded overall accuracies' difference."""
    import campaign_analysis
    from test_compare import make_run

    from lt_kit.runs.compare import group_runs, read_run
    runs = tmp_path / "res" / "runs"
    la = {"logit_adjust": {"label": "logit adj.", "rule": {"strength": 1.0, "metrics": {"overall": 0.0}}}}
    for s, tde, soft, adj in ((0, 0.70, 0.60, 0.66), (1, 0.72, 0.58, 0.69), (2, 0.71, 0.5, 0.6)):
        make_run(runs / f"causal_s{s}", seed=s, tde=[tde] * 5, bf16=False)
        for name, extra in ((f"linear_s{s}", {"bf16": False}), (f"linear_s{s}_bf16", {"bf16": True})):
            if s == 2 and not extra["bf16"]:
                continue                                    # the linear model lacks seed 2 in float32
            la["logit_adjust"]["rule"]["metrics"]["overall"] = adj
            path = make_run(runs / name, seed=s, acc=[soft] * 5, head="linear", methods=la, **extra)
            metrics = json.loads((path / "metrics.json").read_text())
            del metrics["tde"]                              # a linear head has no TDE
            (path / "metrics.json").write_text(json.dumps(metrics))
    rows = sorted(p.name for p in runs.iterdir())
    pairs = campaign_analysis.model_pairs({r: read_run(runs / r) for r in rows})
    assert pairs == [("causal_s0", "linear_s0"), ("causal_s1", "linear_s1")]
    (x,) = campaign_analysis.across_seed_groups(group_runs(read_run(runs / r) for r in rows))
    assert x["seeds"] == [0, 1] and x["rows"] == [["causal_s0", "linear_s0"], ["causal_s1", "linear_s1"]]
    gaps = {g["evaluation"]: g for g in x["gaps"]}
    assert gaps["softmax"]["gaps"] == pytest.approx([0.60 - 0.70, 0.58 - 0.72]) and gaps["softmax"]["sign_holds"]
    assert gaps["logit_adjust/rule"]["gaps"] == pytest.approx([0.66 - 0.70, 0.69 - 0.72])
    assert "tde" not in gaps


def test_a_bf16_row_rescored_without_native_bf16_is_said_to_be_emulated(monkeypatch):
    """Only a row trained in bf16, re-scored on a CPU that emulates bf16, is flagged (its numbers may differ)."""
    import campaign_analysis

    import lt_kit.precision as P
    for native, bf16, flagged in ((False, True, True), (True, True, False), (False, False, False),
                                  (False, "auto", False)):
        monkeypatch.setattr(P, "native_bf16_cpu", lambda native=native: native)
        assert campaign_analysis.bf16_emulated({"bf16": bf16}) is flagged, (native, bf16)


def test_speed_takes_200_epoch_seconds_from_recorded_rows(tmp_path):
    """bench/speed.py's measured 200-epoch figure: only 200-epoch rows on the asked device kind, labelled with
    row, precision and machine."""
    import speed
    rows = tmp_path / "rows"
    rows.mkdir()
    for name, epochs, device, bf16, secs in (("a", 200, "cpu", False, 12480.0), ("b", 45, "cpu", True, 900.0),
                                             ("c", 200, "cuda:0", True, 31.0)):
        meta = {"row": name, "epochs": epochs, "device": device, "bf16": bf16, "threads": 2, "machine": "M",
                "wall_seconds": secs}
        (rows / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": []}))
    assert speed.campaign_measured("cpu", rows) == {"campaign a (float32, M)": 12480.0}
    assert speed.campaign_measured("cuda", rows) == {"campaign c (bf16, M)": 31.0}
    assert speed.campaign_measured("cpu", tmp_path / "none") == {}


def test_precision_rule_decides_only_on_enough_pairs_and_both_bounds():
    """The bf16 rule of docs/performance.md: two pairs, mean -0.5 or better at both deciding evaluations, no pair
    below -1.5."""
    v = campaign.precision_verdict
    assert v({"tde/rule": [-0.15], "logit_adjust/rule": [-0.13]})[0] == "undecided"
    assert v({"tde/rule": [-0.15, -0.6], "logit_adjust/rule": [-0.13, 0.2]})[0] == "auto"          # mean -0.375
    verdict, why = v({"tde/rule": [-0.15, -0.9], "logit_adjust/rule": [-0.13, 0.2]})                # mean -0.525
    assert verdict == "float32" and "tde/rule: mean -0.53 is below -0.5" in why
    verdict, why = v({"tde/rule": [1.2, -1.6], "logit_adjust/rule": [0.0, 0.0]})                     # mean fine
    assert verdict == "float32" and why == "tde/rule: a pair at -1.60 is below -1.5"


def test_precision_pairs_each_bf16_row_with_its_float32_twin(recorded_row, tmp_path):
    """`campaign.py precision`: a recorded bf16 row beside the float32 row of the same seed, the differences read
    from both rows' recorded metrics, and the verdict waiting for a second pair."""
    shutil.copytree(recorded_row, tmp_path, dirs_exist_ok=True)
    res = tmp_path / "res"
    rec = json.loads((res / "rows" / "causal_s0.json").read_text())
    rows = [{**r, "metrics": {**r["metrics"], "overall": r["metrics"]["overall"] - 0.004}} for r in rec["rows"]]
    (res / "rows" / "causal_s0_bf16.json").write_text(json.dumps(
        {"meta": {**rec["meta"], "row": "causal_s0_bf16", "bf16": True}, "rows": rows}))
    c = _campaign(tmp_path, [*ROWS[:1], {"name": "causal_s0_bf16", "headline": False,
                                         "set": {"head": "causal_norm", "seed": 0, "bf16": True}}])
    text = c.precision()
    tde = next(r for r in rec["rows"] if (r["method"], r["how"]) == ("tde", "rule"))["metrics"]["overall"]
    assert f"| 0 | tde/rule | {100 * tde:.2f} | {100 * tde - 0.4:.2f} | -0.40 | yes |" in text
    assert "| 0 | logit_adjust/rule |" in text and "**Verdict: undecided** (1 of the 2 seed pairs" in text
    assert (res / "precision.md").read_text().endswith(text)
    assert _campaign(tmp_path, ROWS[:1]).precision() is None        # no bf16 row in the manifest
