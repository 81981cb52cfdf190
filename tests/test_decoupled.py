"""Two-stage methods (cRT, LWS): the maths by hand, the registry, and every place methods appear."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from lt_kit.errors import LtKitError
from lt_kit.evaluation.features import FeatureCache
from lt_kit.maths.decoupled import (
    WEIGHT_DECAY,
    ClassAwareSampler,
    class_aware_indices,
    cosine_lr,
    init_linear,
    linear_logits,
    retrain,
    scaled_logits,
)
from lt_kit.methods import DECOUPLED, HEADS, decoupled_for, get_method


# --------------------------------------------------------------------------- the maths, by hand
def test_class_aware_sampling_visits_every_class_equally_in_cycles():
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    g = torch.Generator().manual_seed(0)
    one = class_aware_indices(labels, 6, 1, g)                 # 2 rounds of 3 visits, 1 image per visit
    assert np.bincount(labels[one].numpy(), minlength=3).tolist() == [2, 2, 2]
    four = class_aware_indices(labels, 24, 4, g)               # 2 rounds, 4 consecutive images per visit
    assert np.bincount(labels[four].numpy(), minlength=3).tolist() == [8, 8, 8]
    runs = labels[four].view(-1, 4)
    assert (runs == runs[:, :1]).all()                          # each visit: 4 images of one class
    assert set(four[labels[four] == 1].tolist()) == {3}          # a 1-image class repeats its image
    zeros = four[labels[four] == 0][:3].tolist()                 # a class's images cycle before any repeats
    assert sorted(zeros) == [0, 1, 2]
    again = class_aware_indices(labels, 24, 4, torch.Generator().manual_seed(0))
    assert torch.equal(class_aware_indices(labels, 24, 4, torch.Generator().manual_seed(0)), again)   # seeded


def test_the_sampler_runs_on_across_epochs_and_an_epoch_is_the_training_set():
    """Their sampler's cycles carry over from one epoch to the next: two draws of 8 are one draw of 16 (a
    fresh sampler per epoch would restart every class's cycle). An epoch is N // batch steps whatever number of
    cached passes the inputs hold."""
    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 2)
    s = ClassAwareSampler(labels, 4, torch.Generator().manual_seed(3))
    two = torch.cat([s.draw(8), s.draw(8)])
    assert torch.equal(two, class_aware_indices(labels, 16, 4, torch.Generator().manual_seed(3)))
    firsts = class_aware_indices(labels, 8, 4, torch.Generator().manual_seed(3))
    assert not torch.equal(two[8:], firsts)
    calls = []
    fn = lambda th, x: calls.append(len(x)) or scaled_logits(th, x)  # noqa: E731
    x = torch.randn(3 * 12, 3)                                 # 3 passes over 12 images
    retrain({"scales": torch.ones(3)}, fn, x, labels.repeat(3), epochs=2, lr=0.1, batch_size=4, seed=0,
            epoch_images=12)
    assert calls == [4] * 6                                     # 2 epochs x (12 // 4) steps, not x (36 // 4)


def test_cosine_lr_starts_at_lr_and_never_reaches_zero_inside_the_run():
    assert cosine_lr(0.2, 0, 10) == 0.2
    assert cosine_lr(0.2, 5, 10) == pytest.approx(0.1)
    assert 0 < cosine_lr(0.2, 9, 10) < 0.01


def test_one_lws_step_by_hand():
    """Two images, one per class, each seen 4 times in the one batch of 8: the step is plain SGD on the mean
    cross-entropy of the two (the first momentum step is the gradient itself), plus weight decay."""
    x = torch.tensor([[2.0, 0.5], [0.3, 1.0]])
    y = torch.tensor([0, 1])
    lr = 0.1
    r = retrain({"scales": torch.ones(2)}, scaled_logits, x, y, epochs=1, lr=lr, batch_size=8, seed=0)
    grad = [0.0, 0.0]
    for xi, yi in zip(x.tolist(), y.tolist()):
        z = [math.exp(v) for v in xi]                               # logits at s = 1
        p = [v / sum(z) for v in z]
        for c in range(2):
            grad[c] += (p[c] - (c == yi)) * xi[c] / 2
    expect = [1 - lr * (g + WEIGHT_DECAY * 1.0) for g in grad]
    assert r.last["scales"].tolist() == pytest.approx(expect, abs=1e-6)
    assert r.best_epoch == 1 and r.val_curve == []


def test_crt_on_separable_features_reaches_the_obvious_solution():
    """Four well-apart clusters, 100 / 30 / 8 / 2 images: the re-trained classifier gets every test point."""
    g = torch.Generator().manual_seed(1)
    centres = torch.eye(4) * 6
    counts = [100, 30, 8, 2]
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    x = centres[y] + 0.5 * torch.randn(len(y), 4, generator=g)
    yt = torch.arange(4).repeat(25)
    xt = centres[yt] + 0.5 * torch.randn(100, 4, generator=g)
    theta = init_linear(4, 4, seed=0)
    r = retrain(theta, linear_logits, x, y, epochs=10, lr=0.2, batch_size=32, seed=0, val=(xt, yt))
    assert (linear_logits(r.last, xt).argmax(1) == yt).all()
    assert r.val_curve[-1] == 1.0 and r.best_epoch == r.val_curve.index(1.0) + 1


def test_crt_puts_the_boundary_of_an_imbalanced_symmetric_pair_in_the_middle():
    """Class 1: ten points around +1; class 0: their mirror image around -1, each point 30 times. Class-balanced
    re-training puts the boundary at the mirror's centre, 0, where plain (instance-balanced) training pushes it
    into the tail class."""
    q = torch.distributions.Normal(0.0, 0.7).icdf(torch.linspace(0.05, 0.95, 10))
    x = torch.cat([-(1 + q).repeat(30), 1 + q])[:, None]
    y = torch.cat([torch.zeros(300, dtype=torch.long), torch.ones(10, dtype=torch.long)])
    r = retrain(init_linear(1, 2, seed=0), linear_logits, x, y, epochs=30, lr=0.2, batch_size=64, seed=0)
    w, b = r.last["weight"][:, 0], r.last["bias"]
    boundary = float((b[0] - b[1]) / (w[1] - w[0]))
    plain = init_linear(1, 2, seed=0)
    for p in plain.values():
        p.requires_grad_(True)
    opt = torch.optim.SGD(plain.values(), lr=0.2, momentum=0.9)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(linear_logits(plain, x), y).backward()
        opt.step()
    with torch.no_grad():
        plain_boundary = float((plain["bias"][0] - plain["bias"][1]) / (plain["weight"][1, 0] - plain["weight"][0, 0]))
    assert abs(boundary) < 0.15 and plain_boundary > 0.4, (boundary, plain_boundary)


# --------------------------------------------------------------------------- the registry
def test_every_head_takes_both_two_stage_methods_and_a_strength_is_refused():
    for head in HEADS:
        assert [m.name for m in decoupled_for(head)] == ["crt", "lws"]
    for m in DECOUPLED.values():
        assert m.hyper({}) == {"epochs": {"crt": 10, "lws": 5}[m.name], "lr": 0.2, "batch": 512, "weight_decay": 5e-4}
        assert "Kang et al." in m.what
        with pytest.raises(LtKitError, match="two-stage method with no strength"):
            get_method(m.name, "linear")


def test_the_second_stage_seeds_its_classifier_and_sampling_from_the_run_seed():
    from lt_kit.evaluation.decoupled import DecoupledFit
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    feats = torch.randn(120, 5, generator=g) + torch.eye(3, 5)[y] * 2
    cache = FeatureCache(feats, y, torch.randn(3, 5, generator=g), torch.zeros(5), "linear", 1, 16.0, 0.0,
                         [80, 30, 10], ["a", "b", "c"])
    params = {"seed": 3, "crt_epochs": 3, "crt_lr": 0.1, "crt_batch_size": 16}
    a, b = (DecoupledFit("crt", cache, params).logits(cache) for _ in range(2))
    torch.testing.assert_close(a, b)
    c = DecoupledFit("crt", cache, {**params, "seed": 4}).logits(cache)
    assert not torch.equal(a, c)


def test_two_stage_rows_are_named_last_epoch_and_authors_procedure_post_hoc_keep_paper_rule():
    """Kang et al.'s code scores the epoch best on validation data: that row is the authors' procedure, and the
    last epoch's classifier is lt_kit's own rule, not the paper's. Post-hoc methods' fixed strengths stay the
    paper's rule."""
    from lt_kit.methods import POSTHOC, chosen_by
    for name in DECOUPLED:
        assert chosen_by(name, "rule") == "last epoch (lt_kit rule)"
        assert chosen_by(name, "val") == "val split (authors' procedure)"
    for name in POSTHOC:
        assert (chosen_by(name, "rule"), chosen_by(name, "val")) == ("paper rule", "val split")
    assert chosen_by(None, "") == "–" and chosen_by("tde", "") == "–"


@pytest.mark.parametrize("dataset, expect", [
    ("cifar10_lt", {"crt": "10 epochs, lr 0.2, batch 512, weight decay 0.0005", "lws": "5 epochs, lr 0.2, batch 512"}),
    ("inat2018", {"crt": "30 epochs, lr 0.2, batch 512, weight decay 0.0001", "lws": "weight decay 0.0001"}),
    ("places_lt", {"crt": "10 epochs, lr 0.1, batch 256", "lws": "5 epochs, lr 0.1, batch 256"}),
])
def test_the_how_text_names_the_settings_each_data_set_resolves_to(dataset, expect):
    """The "how" of a two-stage row was one hard-coded ImageNet-LT sentence (10 epochs, lr 0.2, batch 512), wrong
    for iNaturalist (cRT 30 epochs, weight decay 1e-4) and Places-LT (lr 0.1 at batch 256)."""
    from lt_kit.config import resolve
    params = resolve({"dataset": dataset})
    for name, m in DECOUPLED.items():
        hyper = m.hyper(params)
        rule, val = m.how(hyper, "rule"), m.how(hyper, "val")
        assert expect[name] in rule and expect[name] in val
        assert "last epoch" in rule and "lt_kit's fixed rule" in rule and "authors' procedure" in val


def test_a_fit_writes_the_settings_it_ran_with_into_its_rows():
    from lt_kit.evaluation.decoupled import decoupled_summary
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    cache = FeatureCache(torch.randn(120, 5, generator=g) + torch.eye(3, 5)[y] * 2, y, torch.randn(3, 5, generator=g),
                         torch.zeros(5), "linear", 1, 16.0, 0.0, [80, 30, 10], ["a", "b", "c"])
    params = {"seed": 0, "crt_epochs": 3, "crt_lr": 0.1, "crt_batch_size": 16, "crt_weight_decay": 1e-4}
    e = decoupled_summary("crt", cache, cache, params, val_cache=cache)
    assert "3 epochs, lr 0.1, batch 16, weight decay 0.0001" in e["rule"]["how"]
    assert "3 epochs, lr 0.1, batch 16, weight decay 0.0001" in e["val"]["how"]
    assert "10 epochs" not in e["rule"]["how"] and "512" not in e["rule"]["how"]


def _published(method, how, ratio=100):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from accuracy import published
    return published({"dataset": "cifar10_lt", "ratio": ratio, "head": "linear", "loss": "ce", "method": method,
                      "how": how})


def test_published_crt_and_lws_stand_beside_the_validation_chosen_epoch():
    """BagofTricks-LT, like Kang et al., tests the epoch best on validation data: its figures go beside lt_kit's
    validation row, not beside the last epoch."""
    assert _published("crt", "val").startswith("74.99") and _published("lws", "val").startswith("72.63")
    assert _published("crt", "rule") is None and _published("lws", "rule") is None


def test_published_tau_norm_is_a_tau_1_figure_beside_the_rule_row():
    """BagofTricks-LT's CIFAR-10 tau-norm configs set tau = 1.0: 72.70 (ratio 100) and 79.78 (ratio 50) stand
    beside the tau = 1 row, not beside a validation-chosen tau."""
    assert _published("tau_norm", "rule") == "72.70 (BagofTricks-LT, tau=1)"
    assert _published("tau_norm", "rule", ratio=50) == "79.78 (BagofTricks-LT, tau=1)"
    assert _published("tau_norm", "val") is None and _published("tau_norm", "val", ratio=50) is None


# --------------------------------------------------------------------------- everywhere methods appear
@pytest.fixture(scope="module")
def two_stage_run(tmp_path_factory):
    from test_methods import smoke

    from lt_kit.training.fit import fit
    run = tmp_path_factory.mktemp("crt") / "run"
    fit(smoke(val_per_class=5, epochs=3), run, progress=False)
    return run


def test_fit_caches_the_training_subset_and_writes_crt_and_lws(two_stage_run):
    run = two_stage_run
    m = json.loads((run / "metrics.json").read_text())
    train = FeatureCache.load(run / "train_features.pt")
    subset = np.load(run / "subset_indices.npy")
    assert len(train.labels) == len(subset) and train.passes == 1
    assert np.bincount(train.labels.numpy()).tolist() == m["train_counts"]
    for name in ("crt", "lws"):
        e = m["methods"][name]
        assert e["kind"] == "two-stage" and e["strength_name"] == "epoch" and e["seconds"] > 0
        assert e["rule"]["strength"] == e["settings"]["epochs"] and "metrics" in e["rule"]
        assert 1 <= e["val"]["strength"] <= e["settings"]["epochs"]
        assert e["val"]["val_overall"] == max(e["val"]["val_curve"])
        assert -1 <= e["prior_check"]["la_tau_chosen_on_val"] <= 2
        assert "test_chosen" not in e                      # no strength, so nothing is chosen on test
    assert "lt_kit's fixed rule" in m["methods"]["crt"]["rule"]["how"]
    assert "authors' procedure" in m["methods"]["crt"]["val"]["how"]
    from lt_kit.evaluation.summary import format_table
    table = format_table(m)
    assert "De-confound + cRT (epoch=10)" in table and "De-confound + LWS (epoch=" in table
    assert "cRT, LWS: (epoch=N) = last epoch (lt_kit rule)" in table
    assert "(epoch=N, val) = val split (authors' procedure)" in table


def _test_result(method: str, val: bool) -> dict:
    """What ``score_run`` returns for a two-stage method (``format_test``'s input), by hand."""
    m = {"many": 0.9, "medium": 0.5, "few": float("nan"), "overall": 0.8, "head_tail": {"head": 0.9, "tail": 0.6}}
    return {"method": method, "strength": 10, "head": "linear", "loss": "ce", "checkpoint": None, "metrics": m,
            "val": {"strength": 4, "metrics": m} if val else None,
            "settings": {"epochs": 10, "lr": 0.2, "batch": 512, "weight_decay": 5e-4}, "passes": 1, "seconds": 0.25,
            "prior_check": None, "thresholds": {"many": 100, "few": 20}}


@pytest.mark.parametrize("method", ["crt", "lws"])
def test_test_output_names_the_two_stage_rows_as_the_run_table_does(method):
    """``python -m lt_kit test --method crt`` prints the note the run's table gives (``two_stage_note``): the
    ``epoch=N`` row is lt_kit's rule (the last epoch), the ``epoch=N, val`` row the authors' procedure."""
    from lt_kit.evaluation.summary import two_stage_note
    from lt_kit.training.score import format_test
    label = DECOUPLED[method].label
    text = format_test(_test_result(method, val=True))
    assert f"Softmax + {label} (epoch=10)" in text and f"Softmax + {label} (epoch=4, val)" in text
    note = f"{label}: (epoch=N) = last epoch (lt_kit rule), the last epoch's classifier; (epoch=N, val) = val split " \
           "(authors' procedure), the epoch best on the validation split, as Kang et al.'s code keeps it"
    assert note in text.splitlines()
    assert note == two_stage_note({method: {"rule": {}, "val": {"strength": 4}}})[0]       # the run table's words
    alone = format_test(_test_result(method, val=False)).splitlines()                         # no validation split
    assert f"{label}: (epoch=N) = last epoch (lt_kit rule), the last epoch's classifier" in alone
    assert not any("authors' procedure" in ln for ln in alone)


def test_cli_test_fits_crt_from_the_cache_and_rebuilds_a_missing_one(two_stage_run, tmp_path, capsys):
    from lt_kit.cli import main
    run = shutil.copytree(two_stage_run, tmp_path / "run")
    before = json.loads((run / "metrics.json").read_text())
    (run / "train_features.pt").unlink()                   # a run older than the training cache
    assert main(["test", "--run-dir", str(run), "--method", "crt"]) == 0
    out = capsys.readouterr().out
    assert "De-confound + cRT (epoch=10)" in out and "(epoch=" in out and "fit " in out
    assert "cRT: (epoch=N) = last epoch (lt_kit rule)" in out and "= val split (authors' procedure)" in out
    assert (run / "train_features.pt").is_file()
    (run / "val_features.pt").unlink()                     # a lost validation cache is rebuilt, not skipped
    assert main(["test", "--run-dir", str(run), "--method", "crt"]) == 0
    assert (run / "val_features.pt").is_file() and "val)" in capsys.readouterr().out
    rec = json.loads((run / "evaluations.jsonl").read_text().splitlines()[-1])
    assert rec["metrics"]["overall"] == before["methods"]["crt"]["rule"]["metrics"]["overall"]   # the same fit
    assert json.loads((run / "metrics.json").read_text()) == before
    assert main(["test", "--run-dir", str(run), "--method", "lws", "--set", "lws_epochs=2"]) == 0
    assert "LWS (epoch=2)" in capsys.readouterr().out
    assert main(["test", "--run-dir", str(run), "--method", "crt", "--strength", "1"]) == 2
    assert "no strength" in capsys.readouterr().err
    assert main(["test", "--run-dir", str(run), "--method", "crt", "--set", "lr=0.1"]) == 2
    assert "crt reads only crt_epochs" in capsys.readouterr().err
    assert main(["test", "--run-dir", str(run), "--method", "crt", "--set", "crt_epochs=0"]) == 2
    assert "crt_epochs" in capsys.readouterr().err
    assert main(["test", "--run-dir", str(run), "--method", "tde", "--set", "crt_epochs=2"]) == 2
    assert "--set goes with --method crt or lws" in capsys.readouterr().err


def test_k_augmented_passes_cache_k_different_views_and_are_seeded(two_stage_run, tmp_path):
    from lt_kit.training.score import score_run
    run = shutil.copytree(two_stage_run, tmp_path / "run")
    plain = FeatureCache.load(run / "train_features.pt")
    out = score_run(run, method="crt", overrides={"train_feature_passes": 2})
    assert out["passes"] == 2
    assert FeatureCache.load(run / "train_features.pt").passes == 1    # a trial K does not replace the run's cache
    from lt_kit.config import DEFAULTS
    from lt_kit.runs.rundir import RunDir
    from lt_kit.training.score import _load_or_rebuild
    params = {**DEFAULTS, **RunDir(run).params(), "train_feature_passes": 2}
    a = _load_or_rebuild(RunDir(run), params, None, None, train=True, fresh_train=True)["train"]
    b = _load_or_rebuild(RunDir(run), params, None, None, train=True, fresh_train=True)["train"]
    n = len(plain.labels)
    assert len(a.labels) == 2 * n and torch.equal(a.labels[:n], plain.labels)
    torch.testing.assert_close(a.features, b.features)                  # seeded by (seed, pass)
    assert not torch.allclose(a.features[:n], a.features[n:])           # two different augmented views
    assert not torch.allclose(a.features[:n], plain.features)


def test_compare_and_the_comparison_figure_show_the_two_stage_methods(two_stage_run):
    from lt_kit.views.explorer import AlphaExplorer
    from lt_kit.views.posthoc import comparison_figure, comparison_table, method_curves
    from lt_kit.views.report import compare_runs
    cmp = compare_runs([str(two_stage_run)])
    text = cmp.text()
    assert "crt/rule" in text and "lws/val" in text
    ex = AlphaExplorer.from_run(two_stage_run)
    info = ex.summary()
    curves = method_curves(ex.cache, ex.val_cache, ex.preset_alpha, info)
    fixed = [c for c in curves if c.get("fixed")]
    assert [c["method"] for c in fixed] == ["crt", "lws"]
    fig = comparison_figure(curves, "causal_norm")
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "cRT (no strength) last epoch (lt_kit rule): epoch 10" in labels
    assert any(lab.startswith("LWS val split (authors' procedure): epoch ") for lab in labels)
    table = comparison_table(ex.cache, ex.val_cache, ex.preset_alpha, info)
    assert "De-confound + cRT (epoch=10)" in table and "last epoch (lt_kit rule)" in table


def test_compare_says_how_to_score_a_run_older_than_the_two_stage_methods(two_stage_run, tmp_path):
    import yaml

    from lt_kit.views.report import compare_runs
    new = shutil.copytree(two_stage_run, tmp_path / "new")
    old = shutil.copytree(two_stage_run, tmp_path / "old")
    p = yaml.safe_load((old / "params.yaml").read_text())
    (old / "params.yaml").write_text(yaml.safe_dump({**p, "seed": p["seed"] + 1}))
    m = json.loads((old / "metrics.json").read_text())
    m["methods"] = {k: v for k, v in m["methods"].items() if k not in DECOUPLED}
    (old / "metrics.json").write_text(json.dumps(m))
    text = compare_runs([str(new), str(old)]).text()
    assert "a run older than the two-stage methods" in text and f"--run-dir {old} --method crt" in text


def test_no_training_cache_with_zero_passes_and_test_says_how_to_get_one(tmp_path):
    from test_methods import smoke

    from lt_kit.training.fit import fit
    from lt_kit.training.score import score_run
    run = tmp_path / "run"
    m = fit(smoke(epochs=1, train_feature_passes=0), run, progress=False)
    assert not (run / "train_features.pt").exists() and not set(m["methods"]) & set(DECOUPLED)
    with pytest.raises(LtKitError, match="add --set train_feature_passes=1"):
        score_run(run, method="crt")
    out = score_run(run, method="crt", overrides={"train_feature_passes": 1})
    assert out["passes"] == 1 and not (run / "train_features.pt").exists()     # a trial cache is not kept
    from lt_kit.training.score import run_summary  # the tables' recomputation: no two-stage rows
    again = run_summary(run)
    assert not set(again["methods"]) & set(DECOUPLED) and again["softmax"] == m["softmax"]
    with pytest.raises(LtKitError, match="train_feature_passes must be >= 0"):
        smoke(train_feature_passes=-1)


def test_test_rebuilds_a_cache_from_data_that_moved(cifar_root, tmp_path, capsys):
    """A run whose data lies elsewhere now (a recorded campaign row: data_root DIR): `test` says the folder is
    missing, and --data-root names where it is."""
    from test_methods import smoke

    from lt_kit.cli import main
    from lt_kit.training.fit import fit
    run = tmp_path / "run"
    fit(smoke(dataset="cifar10_lt", data_root=str(cifar_root), epochs=1, batch_size=32, imbalance_ratio=5,
              train_feature_passes=0), run, progress=False)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (cifar_root / "cifar-10-batches-py").rename(moved / "cifar-10-batches-py")
    (run / "features.pt").unlink()
    assert main(["test", "--run-dir", str(run)]) == 2
    assert str(cifar_root) in capsys.readouterr().err
    assert main(["test", "--run-dir", str(run), "--data-root", str(moved)]) == 0
    assert "De-confound-TDE (a=1)" in capsys.readouterr().out and (run / "features.pt").is_file()
