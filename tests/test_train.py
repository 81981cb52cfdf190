import json

import pytest
import torch
from conftest import ROOT

from lt_kit.config import load_params_file, resolve
from lt_kit.errors import LtKitError, NonFiniteLossError
from lt_kit.evaluation.features import FeatureCache
from lt_kit.evaluation.summary import AlphaEvaluator
from lt_kit.models import LTModel
from lt_kit.runs.rundir import RunDir, load_checkpoint
from lt_kit.training.fit import fit
from lt_kit.training.score import score_run as evaluate_run


def smoke(**kw):
    return resolve({**load_params_file(ROOT / "params" / "smoke.yaml"), **kw})


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path, monkeypatch):
    import lt_kit.training.fit as T
    fit(smoke(epochs=4), tmp_path / "full", progress=False)
    real = T.train_one_epoch
    monkeypatch.setattr(T, "train_one_epoch", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)
                        if k["epoch"] == 3 else real(*a, **k))               # interrupted in epoch 3
    with pytest.raises(KeyboardInterrupt):
        fit(smoke(epochs=4), tmp_path / "cut", progress=False)
    monkeypatch.undo()
    fit(smoke(epochs=4), tmp_path / "cut", resume=True, progress=False)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k                    # includes the momentum direction
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    assert json.loads((tmp_path / "full" / "metrics.json").read_text())["tde"] == \
        json.loads((tmp_path / "cut" / "metrics.json").read_text())["tde"]
    version = json.loads((tmp_path / "cut" / "version.json").read_text())   # both sessions' code is on record
    assert [v.get("lt_kit") for v in version["earlier"]] == [version["lt_kit"]] and "earlier" not in \
        json.loads((tmp_path / "full" / "version.json").read_text())


def test_direction_is_updated_every_step_and_saved(smoke_run):
    ckpt = load_checkpoint(smoke_run / "checkpoint.pt")
    d = ckpt["model"]["direction"]
    assert d.shape == (128,) and d.norm() > 0
    # d <- 0.9 d + mean(feat) with ReLU features: after S steps its norm is of order sum(0.9^k) x feature norm
    assert torch.equal(FeatureCache.load(smoke_run / "features.pt").direction, d)


def test_cached_alpha_equals_a_fresh_forward(smoke_run):
    params = RunDir(smoke_run).params()
    model = LTModel("resnet32", 10)
    model.load_state_dict(load_checkpoint(smoke_run / "checkpoint.pt", model.signature())["model"])
    cache = FeatureCache.load(smoke_run / "features.pt")
    ev = AlphaEvaluator(cache)
    model.eval()
    with torch.no_grad():
        from lt_kit.training.build import build_data
        data = build_data(params, torch.device("cpu"))
        x, _ = next(iter(data.test))
        fresh = model.head(model.backbone.forward_features(x), model.direction, 1.7)
    torch.testing.assert_close(ev.logits(1.7)[:len(x)], fresh, rtol=1e-4, atol=1e-4)


def test_test_with_new_alpha_uses_the_cache_not_the_backbone(smoke_copy, monkeypatch):
    smoke_run = smoke_copy
    import lt_kit.training.fit as T
    monkeypatch.setattr(T, "build_model", lambda *a, **k: pytest.fail("backbone was rebuilt"))
    before = (smoke_run / "metrics.json").read_bytes()
    m0 = evaluate_run(smoke_run, alpha=0.0)
    m2 = evaluate_run(smoke_run, alpha=2.0)
    run_metrics = json.loads(before)
    assert m0["metrics"]["overall"] == run_metrics["softmax"]["overall"]
    assert m2["method"] == "tde" and m2["strength"] == 2.0
    assert (smoke_run / "metrics.json").read_bytes() == before          # the run's own evaluation stays
    lines = [json.loads(l) for l in (smoke_run / "evaluations.jsonl").read_text().splitlines()[-2:]]
    assert [(e["method"], e["strength"]) for e in lines] == [("tde", 0.0), ("tde", 2.0)]


def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_last_checkpoint(tmp_path):
    run = tmp_path / "nan"
    fit(smoke(epochs=1), run, progress=False)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step \d+/\d+"):
        fit(smoke(epochs=3, lr_factor=1e30), run, resume=False, overwrite=True, progress=False)
    replaced = [p for p in tmp_path.iterdir() if p.name.startswith("nan.replaced-")]
    assert len(replaced) == 1 and (replaced[0] / "metrics.json").is_file()        # earlier run kept aside
    ckpt = load_checkpoint(run / "checkpoint.pt")                                  # epoch 1 of the NaN run
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_an_earlier_run_is_refused_without_overwrite(smoke_run):
    before = (smoke_run / "checkpoint.pt").read_bytes()
    with pytest.raises(LtKitError, match="holds an earlier run.*--resume.*--overwrite"):
        fit(smoke(), smoke_run, progress=False)
    assert (smoke_run / "checkpoint.pt").read_bytes() == before


def test_resume_with_other_parameters_is_refused(smoke_run):
    with pytest.raises(LtKitError, match="different parameters: arch"):
        fit(smoke(arch="resnext50_32x4d"), smoke_run, resume=True, progress=False)
    with pytest.raises(LtKitError, match=r"different parameters: epochs=3->5; a resumed run keeps the epochs"):
        fit(smoke(epochs=5), smoke_run, resume=True, progress=False)        # would move the lr curve


def test_checkpoint_of_another_model_is_refused(smoke_run, tmp_path):
    other = RunDir(tmp_path)
    m = LTModel("resnet32", 5)
    other.save_checkpoint({"model": m.state_dict(), "epoch": 1, "signature": m.signature()})
    with pytest.raises(LtKitError, match=r"another model: num_classes 5 \(checkpoint\) vs 10"):
        evaluate_run(smoke_run, checkpoint=tmp_path / "checkpoint.pt")
    (tmp_path / "ref.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(LtKitError, match="not a readable lt_kit checkpoint"):
        evaluate_run(smoke_run, checkpoint=tmp_path / "ref.pth")


def test_linear_head_is_the_softmax_baseline(tmp_path):
    m = fit(smoke(head="linear", epochs=2), tmp_path / "lin", progress=False)
    assert m["head"] == "linear" and m["tde"] is None and 0 <= m["softmax"]["overall"] <= 1
