"""Post-hoc methods (logit adjustment, tau-normalisation, TDE) and their registry; the validation split and
strength selection that never looks at the test set; `test` with a method and strength."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import ROOT

from lt_kit import logit_adjust, tau_normalize
from lt_kit.config import load_params_file, resolve
from lt_kit.data.datasets import balanced_val_indices, load_tensor_dataset, long_tail_indices
from lt_kit.errors import LtKitError
from lt_kit.evaluation.features import FeatureCache
from lt_kit.evaluation.summary import MethodEvaluator, choose_on_val, format_table, rule_metrics, summary
from lt_kit.maths.tde import tde_logits
from lt_kit.methods import POSTHOC, get_method, head_logits, methods_for
from lt_kit.models import HEADS
from lt_kit.training.fit import fit
from lt_kit.training.score import score_run as score_run


# --------------------------------------------------------------------------- the pure functions, by hand
def test_logit_adjust_by_hand():
    logits = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    out = logit_adjust(logits, [3, 1], 1.0)                    # prior 0.75, 0.25
    expect = torch.tensor([[1 - math.log(0.75), 2 - math.log(0.25)], [-math.log(0.75), -math.log(0.25)]])
    torch.testing.assert_close(out, expect)
    torch.testing.assert_close(logit_adjust(logits, [3, 1], 0.5), logits - 0.5 * torch.tensor([math.log(.75), math.log(.25)]))
    assert torch.equal(logit_adjust(logits, [3, 1], 0.0), logits)
    # tau = 1 on a classifier that predicts the prior's log makes every class equally likely
    assert torch.allclose(logit_adjust(torch.tensor([[math.log(.75), math.log(.25)]]), [3, 1], 1.0), torch.zeros(1, 2))


def test_tau_normalize_by_hand():
    w = torch.tensor([[3.0, 4.0], [0.0, 2.0]])                 # row norms 5 and 2
    torch.testing.assert_close(tau_normalize(w, 1.0), torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    torch.testing.assert_close(tau_normalize(w, 0.5), torch.tensor([[3 / 5 ** .5, 4 / 5 ** .5], [0.0, 2 / 2 ** .5]]))
    assert torch.equal(tau_normalize(w, 0.0), w)
    assert tau_normalize(w, 1.0).norm(dim=1).allclose(torch.ones(2))


@pytest.mark.parametrize("fn,args", [(logit_adjust, (torch.zeros(1, 2), [1, 1])), (tau_normalize, (torch.ones(2, 2),))])
@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "x"])
def test_bad_strength_is_refused(fn, args, bad):
    with pytest.raises(ValueError, match="tau must be a finite number"):
        fn(*args, bad)


def test_logit_adjust_refuses_an_empty_class_and_a_class_count_mismatch():
    with pytest.raises(ValueError, match="every class"):
        logit_adjust(torch.zeros(1, 2), [3, 0], 1.0)
    with pytest.raises(ValueError, match="2 logits per image but 3 class counts"):
        logit_adjust(torch.zeros(1, 2), [3, 1, 1], 1.0)


# --------------------------------------------------------------------------- the old keyword tau (before 0.2.0)
_POSTHOC_RENAMES = [(logit_adjust, "la_tau", lambda: (torch.tensor([[1.0, 2.0], [0.5, -1.0]]), [3, 1])),
                    (tau_normalize, "tn_tau", lambda: (torch.tensor([[3.0, 4.0], [0.0, 2.0]]),))]


@pytest.mark.parametrize("fn,new,args", _POSTHOC_RENAMES)
def test_the_old_keyword_tau_of_the_posthoc_functions_warns_and_gives_what_the_new_one_gives(fn, new, args):
    """``logit_adjust(..., tau=0.5)`` and ``tau_normalize(..., tau=0.5)``, as written against 0.1.0, run for one
    more release: a FutureWarning naming the new keyword (at the caller's line) and the same tensor bit for bit."""
    with pytest.warns(FutureWarning, match=rf"{fn.__name__}\(\): the keyword tau= is now {new}=.*removed in lt_kit "
                      r"0\.3\.0") as rec:
        old = fn(*args(), tau=0.5)
    assert rec[0].filename == __file__                                  # stacklevel: the caller's line
    assert torch.equal(old, fn(*args(), **{new: 0.5})) and torch.equal(old, fn(*args(), 0.5))
    assert not torch.equal(old, fn(*args(), 1.0))                       # 0.5 was used


@pytest.mark.parametrize("fn,new,args", _POSTHOC_RENAMES)
def test_both_tau_and_the_new_keyword_of_a_posthoc_function_is_a_type_error(fn, new, args):
    with pytest.raises(TypeError, match=f"got both tau= and {new}="):
        fn(*args(), tau=0.5, **{new: 0.5})


@pytest.mark.parametrize("fn,new,args", _POSTHOC_RENAMES)
def test_the_posthoc_functions_show_their_new_keyword_and_do_not_warn_on_it(fn, new, args):
    import inspect
    import warnings

    import lt_kit
    assert getattr(lt_kit, fn.__name__) is fn
    assert new in inspect.signature(fn).parameters and "tau" not in inspect.signature(fn).parameters
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(*args(), **{new: 0.5})
        fn(*args(), 0.5)


# --------------------------------------------------------------------------- the registry
def make_cache(head: str, n: int = 200, c: int = 4, d: int = 8, seed: int = 0) -> FeatureCache:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % c
    centres = torch.randn(c, d, generator=g)
    feats = (centres[labels] + 0.9 * torch.randn(n, d, generator=g)).relu()
    weight = centres * torch.tensor([2.0, 1.0, 0.6, 0.3])[:, None]            # head classes have bigger norms
    return FeatureCache(feats, labels, weight, feats[:50].mean(0) * 5, head, 2, 16.0, 1 / 32,
                        [400, 100, 25, 6][:c], [f"c{i}" for i in range(c)], 60, 15)


PAIRS = [(m, h) for m in POSTHOC for h in HEADS]


@pytest.mark.parametrize("method,head", PAIRS)
def test_every_method_on_every_head_applies_or_is_refused_with_the_reason(method, head):
    m = POSTHOC[method]
    cache = make_cache(head)
    if head not in m.heads:
        with pytest.raises(LtKitError, match=f"does not apply to the {head} head.*valid pairs"):
            MethodEvaluator(cache, method)
        assert m.refused.get(head), "a refused head needs its reason (README and errors show it)"
        return
    ev = MethodEvaluator(cache, method)
    torch.testing.assert_close(ev.logits(0.0), head_logits(cache))          # strength 0 = the head's own logits
    s = 0.7
    expect = {"tde": lambda: tde_logits(cache.features, cache.weight, cache.direction, s, num_heads=2),
              "logit_adjust": lambda: logit_adjust(head_logits(cache), cache.train_counts, s),
              "tau_norm": lambda: cache.features @ tau_normalize(cache.weight, s).T}[method]()
    torch.testing.assert_close(ev.logits(s), expect)
    assert m.rule(1.5) >= 0 and m.rule_text and len(m.grid()) > 10 and m.grid()[0] == 0
    with pytest.raises(LtKitError, match=f"{method}: {m.strength} must be"):
        ev.logits(-1.0)


def test_every_head_has_a_label_and_logits_from_a_cache():
    for name, cls in HEADS.items():
        assert cls.name == name and cls.label
        assert head_logits(make_cache(name)).shape == (200, 4)
    assert [m.name for m in methods_for("linear")] == ["logit_adjust", "tau_norm"]
    assert [m.name for m in methods_for("causal_norm")] == ["tde", "logit_adjust"]


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(LtKitError, match="unknown post-hoc method 'bogus'; valid: tde, logit_adjust, tau_norm"):
        get_method("bogus", "linear")


def test_unknown_head_is_refused_by_config_with_the_registry():
    with pytest.raises(LtKitError, match="must be one of causal_norm, linear"):
        resolve({"head": "cosine"})


# --------------------------------------------------------------------------- choosing on validation data
def test_choose_on_val_is_the_best_val_strength_by_brute_force():
    val, test = make_cache("linear", seed=1), make_cache("linear", seed=2)
    chosen = choose_on_val(val, "logit_adjust")
    grid = POSTHOC["logit_adjust"].grid()
    accs = [float((logit_adjust(head_logits(val), val.train_counts, t).argmax(1) == val.labels).float().mean())
            for t in grid]
    assert chosen["val_overall"] == pytest.approx(max(accs))
    assert chosen["strength"] == pytest.approx(grid[int(np.argmax(accs))])       # first (smallest) best
    m = summary(test, 1.0, val)["methods"]["logit_adjust"]
    assert m["val"]["strength"] == chosen["strength"]                             # from val, not from test
    assert m["val"]["metrics"] == MethodEvaluator(test, "logit_adjust").metrics(chosen["strength"])
    assert m["rule"]["strength"] == 1.0 and m["test_chosen"]["note"] == "for reading, chosen on test"
    assert "metrics" not in m["test_chosen"]                                      # never a result row


def test_summary_without_a_val_split_chooses_nothing():
    m = summary(make_cache("causal_norm"), 1.0, None)
    assert m["val_images"] is None and all(e["val"] is None for e in m["methods"].values())
    assert rule_metrics(m, "tde") == m["tde"] and "metrics" not in m["methods"]["tde"]["rule"]
    text = format_table(m)
    assert "De-confound-TDE (a=1)" in text and ", val)" not in text and "no validation split" in text
    assert "for reading, chosen on test: TDE alpha=" in text


# --------------------------------------------------------------------------- the validation split
def test_val_split_is_balanced_disjoint_seeded_and_drawn_first(cifar_root):
    from conftest import write_cifar
    write_cifar(cifar_root, per_class_train=60)
    d = load_tensor_dataset("cifar10_lt", cifar_root, imbalance_ratio=5, max_per_class=0, subset_seed=3,
                            val_per_class=5)
    assert np.bincount(d["val"].labels.numpy(), minlength=10).tolist() == [5] * 10
    assert not set(d["val_indices"]) & set(d["subset_indices"])
    assert d["train_counts"][0] == 55                          # the head class keeps what val left: 60 - 5
    again = load_tensor_dataset("cifar10_lt", cifar_root, imbalance_ratio=5, max_per_class=0, subset_seed=3,
                                val_per_class=5)
    assert np.array_equal(again["val_indices"], d["val_indices"])
    assert np.array_equal(again["subset_indices"], d["subset_indices"])
    plain = load_tensor_dataset("cifar10_lt", cifar_root, imbalance_ratio=5, max_per_class=0, subset_seed=3)
    assert plain["val"] is None and plain["train_counts"][0] == 60             # the reference's subset unchanged
    from lt_kit.data.datasets import read_cifar
    full = read_cifar("cifar10_lt", cifar_root)[0].labels.numpy()
    assert np.array_equal(plain["subset_indices"], long_tail_indices(full, plain["train_counts"], 3))
    with pytest.raises(LtKitError, match="too few to hold out val_per_class=60"):
        balanced_val_indices(full, 10, 60, 0)


def smoke(**kw):
    return resolve({**load_params_file(ROOT / "params" / "smoke.yaml"), **kw})


@pytest.mark.parametrize("key", ["select_best", "eval_every"])
def test_selection_without_a_val_split_is_refused(key):
    with pytest.raises(LtKitError, match=f"{key} needs a validation split.*set val_per_class"):
        smoke(**{key: True if key == "select_best" else 1})


@pytest.fixture(scope="module")
def val_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("val") / "run"
    fit(smoke(val_per_class=5, select_best=True, epochs=3), run, progress=False)
    return run


def test_each_evaluation_is_written_once(val_run):
    """TDE's paper rule is the run's alpha: methods/tde/rule points at the tde entry instead of copying it."""
    m = json.loads((val_run / "metrics.json").read_text())
    text = (val_run / "metrics.json").read_text()
    written = ["softmax", "tde", *(f"{k}/{how}" for k, e in m["methods"].items() for how in ("rule", "val")
                                   if isinstance(e.get(how), dict) and "metrics" in e[how])]
    assert "tde/rule" not in written and "tde/val" in written
    assert text.count('"per_class"') == len(written)
    assert m["methods"]["tde"]["rule"] == {"strength": m["alpha"], "how": POSTHOC["tde"].rule_text, "same_as": "tde"}
    assert [r for r in format_table(m).splitlines() if r.startswith("De-confound-TDE (a=1)")]


def test_a_run_with_a_val_split_caches_it_and_chooses_on_it(val_run):
    m = json.loads((val_run / "metrics.json").read_text())
    val = FeatureCache.load(val_run / "val_features.pt")
    assert len(val.labels) == 50 and m["val_images"] == 50
    assert not set(np.load(val_run / "val_indices.npy")) & set(np.load(val_run / "subset_indices.npy"))
    for name in ("tde", "logit_adjust"):
        assert m["methods"][name]["val"]["strength"] == choose_on_val(val, name)["strength"]
    hist = json.loads((val_run / "history.json").read_text())
    assert all("val_acc" in h for h in hist) and m["best_epoch"] == max(hist, key=lambda h: h["val_acc"])["epoch"]


def test_test_rebuilds_what_fit_evaluated_and_never_rewrites_metrics(val_run, tmp_path):
    import shutil
    run = shutil.copytree(val_run, tmp_path / "run")
    before = json.loads((run / "metrics.json").read_text())
    (run / "features.pt").unlink()
    out = score_run(run, method="tde", strength=before["alpha"])
    assert out["metrics"]["overall"] == before["tde"]["overall"]           # the best epoch's weights, not the last
    assert json.loads((run / "metrics.json").read_text()) == before
    la = score_run(run, method="logit_adjust", strength=0.25)
    rec = json.loads((run / "evaluations.jsonl").read_text().splitlines()[-1])
    assert (rec["method"], rec["strength"], rec["checkpoint"]) == ("logit_adjust", 0.25, None)
    assert rec["metrics"]["overall"] == la["metrics"]["overall"]
    with pytest.raises(LtKitError, match="tau_norm' does not apply to the causal_norm head"):
        score_run(run, method="tau_norm", strength=1.0)
    with pytest.raises(LtKitError, match="give --strength instead"):
        score_run(run, method="logit_adjust", alpha=1.0)


def test_test_run_is_score_run_under_its_old_name_with_a_warning(smoke_copy):
    """``lt_kit.test_run``, the public name of ``score_run`` before 0.2.0, still scores a run (every keyword passed
    on) with a FutureWarning naming ``score_run``, until 0.3.0."""
    import lt_kit
    assert "test_run" in lt_kit.__all__ and lt_kit.test_run.__test__ is False       # pytest never collects it
    with pytest.warns(FutureWarning, match=r"test_run\(\) is now score_run\(\).*removed in lt_kit 0\.3\.0") as rec:
        old = lt_kit.test_run(smoke_copy, method="logit_adjust", strength=0.25)
    assert rec[0].filename == __file__
    new = lt_kit.score_run(smoke_copy, method="logit_adjust", strength=0.25)
    assert json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True)       # NaN included
    lines = [json.loads(ln) for ln in (smoke_copy / "evaluations.jsonl").read_text().splitlines()]
    assert [(r["method"], r["strength"]) for r in lines[-2:]] == [("logit_adjust", 0.25)] * 2


def test_cli_test_takes_a_method_and_strength(val_run, tmp_path, capsys):
    import shutil

    from lt_kit.cli import main
    run = shutil.copytree(val_run, tmp_path / "run")
    assert main(["test", "--run-dir", str(run), "--method", "logit_adjust", "--strength", "0.5"]) == 0
    assert "De-confound + logit adj. (tau=0.5)" in capsys.readouterr().out
    assert main(["test", "--run-dir", str(run), "--method", "tau_norm"]) == 2
    assert "does not apply to the causal_norm head" in capsys.readouterr().err
