"""bf16 on the CPU (precision.py): the backbone runs in bfloat16 and everything TDE reads stays float32; ``auto``
resolves per device; the method is the same (resume, the fast step and the NaN stop hold in bf16); and every
speed switch either does what it claims on the CPU or is refused with the reason."""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml

import lt_kit.precision as P
from lt_kit.config import load_params_file, resolve
from lt_kit.errors import LtKitError, NonFiniteLossError
from lt_kit.evaluation.features import extract_features
from lt_kit.methods import make_criterion
from lt_kit.runs.rundir import load_checkpoint
from lt_kit.training.build import build_data, build_model
from lt_kit.training.fast_step import FastStep, make_optimizer
from lt_kit.training.fit import fit
from lt_kit.training.loop import train_one_epoch

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def smoke(**kw):
    return resolve({**load_params_file(ROOT / "params" / "smoke.yaml"), "device": "cpu", **kw})


def _conv_dtypes(model) -> list:
    """Record the output dtype of every convolution the backbone runs."""
    seen = []
    for m in model.backbone.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda mod, i, o: seen.append(o.dtype))
    return seen


def test_auto_resolves_per_device(monkeypatch):
    monkeypatch.setattr(P, "native_bf16_cpu", lambda: True)
    assert P.resolve_bf16("auto", "cpu") is True
    assert P.resolve_bf16("auto", "cuda") is False           # CUDA keeps float32 unless asked
    assert P.resolve_bf16(True, "cuda") is True and P.resolve_bf16(False, "cpu") is False
    monkeypatch.setattr(P, "native_bf16_cpu", lambda: False)
    assert P.resolve_bf16("auto", "cpu") is False
    with pytest.raises(LtKitError, match="true, false or auto"):
        P.resolve_bf16("yes", "cpu")
    with pytest.raises(LtKitError, match="bf16=true runs on cpu or cuda"):
        P.resolve_bf16(True, "mps")
    assert resolve({"bf16": "auto"})["bf16"] == "auto" and resolve({"bf16": "false"})["bf16"] is False
    with pytest.raises(LtKitError, match="'bf16'.*bool or auto"):
        resolve({"bf16": 3})


def test_emulated_bf16_is_said_once(monkeypatch):
    monkeypatch.setattr(P, "native_bf16_cpu", lambda: False)
    monkeypatch.setattr(P, "_warned", set())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert P.resolve_bf16(True, "cpu") is True              # runs as asked...
        P.resolve_bf16(True, "cpu")
    msgs = [str(x.message) for x in w]
    assert len(msgs) == 1 and "emulates bfloat16" in msgs[0] and "slower than float32" in msgs[0]


def test_backbone_in_bf16_and_what_tde_reads_in_float32():
    p = smoke(bf16=True)
    torch.manual_seed(0)
    data = build_data(p, CPU)
    model = build_model(p, len(data.train_counts))
    seen = _conv_dtypes(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train_one_epoch(model, data.train, opt, mu=0.9, epoch=1, bf16=True)
    assert seen and set(seen) == {torch.bfloat16}
    assert model.direction.dtype == torch.float32 and model.direction.abs().sum() > 0
    assert all(q.dtype == torch.float32 for q in model.parameters())      # the weights SGD updates
    seen.clear()
    feats, _ = extract_features(model, data.test, bf16=True)
    assert set(seen) == {torch.bfloat16} and feats.dtype == torch.float32
    seen.clear()
    extract_features(model, data.test, bf16=False)
    assert set(seen) == {torch.float32}


def test_bf16_resume_gives_the_uninterrupted_weights(tmp_path, monkeypatch):
    import lt_kit.training.fit as T
    fit(smoke(epochs=3, bf16=True), tmp_path / "full", progress=False)
    real = T.train_one_epoch
    monkeypatch.setattr(T, "train_one_epoch", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)
                        if k["epoch"] == 3 else real(*a, **k))
    with pytest.raises(KeyboardInterrupt):
        fit(smoke(epochs=3, bf16=True), tmp_path / "cut", progress=False)
    monkeypatch.undo()
    # resumed with bf16=auto on a machine that would resolve it to float32: the run keeps its recorded bf16
    monkeypatch.setattr(P, "native_bf16_cpu", lambda: False)
    fit(smoke(epochs=3, bf16="auto"), tmp_path / "cut", resume=True, progress=False)
    a, b = (load_checkpoint(tmp_path / r / "checkpoint.pt") for r in ("full", "cut"))
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert yaml.safe_load((tmp_path / "cut" / "params.yaml").read_text())["bf16"] is True


def test_bf16_fast_step_equals_eager_step():
    p = smoke(bf16=True)
    torch.manual_seed(0)
    data = build_data(p, CPU)
    fast_model = build_model(p, len(data.train_counts))
    eager_model = copy.deepcopy(fast_model)
    fast_opt, eager_opt = make_optimizer(fast_model, p, CPU), make_optimizer(eager_model, p, CPU)
    runner = FastStep(fast_model, data.train, fast_opt, bf16=True, graph=False)
    assert runner.amp is True
    for epoch, lr, mu in [(1, 0.05, 0.9), (2, 0.2, 0.9)]:
        crit = make_criterion(p, data.train_counts, epoch)
        a = runner.run_epoch(epoch, lr, mu, crit)
        for g in eager_opt.param_groups:
            g["lr"].fill_(lr)
        data.train.set_epoch(epoch)
        b = train_one_epoch(eager_model, data.train, eager_opt, mu=mu, epoch=epoch, criterion=crit, bf16=True)
        assert a == b, epoch
        for (k, va), vb in zip(fast_model.state_dict().items(), eager_model.state_dict().values()):
            assert torch.equal(va, vb), (epoch, k)


def test_bf16_nan_is_caught_and_named(tmp_path):
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 2, step"):
        fit(smoke(bf16=True, lr_factor=1e30), tmp_path / "nan", progress=False)
    p = smoke(bf16=True)
    data = build_data(p, CPU)
    model = build_model(p, len(data.train_counts))
    runner = FastStep(model, data.train, make_optimizer(model, p, CPU), bf16=True, graph=False)
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 1/"):
        runner.run_epoch(1, 0.1, 0.9, lambda logits, y: torch.nn.functional.cross_entropy(logits, y) * float("nan"))


# ----------------------------------------------------------------- every speed switch on the CPU, through fit
def _first_conv(model) -> torch.nn.Conv2d:
    return next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("switch", ["bf16", "channels_last", "compile", "fast_step"])
def test_every_speed_switch_changes_what_it_claims_on_the_cpu(switch, tmp_path, monkeypatch):
    """One smoke epoch with the switch on and one with it off; each observes what the switch claims to change."""
    import lt_kit.training.fit as T
    seen = {}
    real_build = T.build_model

    def build(params, n):
        model = real_build(params, n)
        def pre(m, i):
            x = i[0]
            seen.setdefault("cl_input", x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())

        def post(m, i, o):
            seen.setdefault("dtype", o.dtype)
        conv = _first_conv(model)
        conv.register_forward_pre_hook(pre)
        conv.register_forward_hook(post)
        seen["model"] = model
        return model
    monkeypatch.setattr(T, "build_model", build)
    graphs = []
    if switch == "compile":                 # a recording backend instead of inductor's code generation
        real_compile = torch.compile
        monkeypatch.setattr(torch, "compile", lambda fn, *a, **kw: real_compile(
            fn, backend=lambda gm, ex: graphs.append(gm) or gm.forward))
        torch._dynamo.reset()
    base = {"bf16": False, "channels_last": False, "compile": False, "fast_step": False, "epochs": 1}
    out = {}
    for on in (False, True):
        seen.clear()
        graphs.clear()
        run = tmp_path / f"{switch}_{on}"
        fit(smoke(**{**base, switch: on}), run, progress=False)
        log = (run / "log.txt").read_text()
        out[on] = {"dtype": seen["dtype"], "cl": seen["cl_input"], "graphs": len(graphs),
                   "fast": "step: fast" in log, "recorded": yaml.safe_load((run / "params.yaml").read_text())[switch]}
    torch._dynamo.reset()
    assert out[True]["recorded"] is True and out[False]["recorded"] is False
    claims = {"bf16": ("dtype", torch.float32, torch.bfloat16), "channels_last": ("cl", False, True),
              "compile": ("graphs", 0, out[True]["graphs"] or "no graph"), "fast_step": ("fast", False, True)}
    key, off, on = claims[switch]
    assert out[False][key] == off and out[True][key] == on and on != off
    if switch == "compile":
        assert out[True]["graphs"] > 0


def test_speed_switches_that_cannot_run_are_refused_with_the_reason():
    with pytest.raises(LtKitError, match="fast_step=true cannot run.*mixup_alpha draws on the host"):
        resolve({"fast_step": True, "mixup_alpha": 1.0})
    with pytest.raises(LtKitError, match="bf16=true runs on cpu or cuda"):
        P.resolve_bf16(True, "mps")


def test_speed_bench_measures_bf16_on_the_cpu(capsys):
    import sys
    sys.path.insert(0, str(ROOT / "bench"))
    import speed
    res = speed.main(["--rounds", "1", "--steps", "1", "--input-batches", "0", "--threads", str(torch.get_num_threads()),
                      "--options", "bf16,bf16_channels_last"])
    for k in ("bf16_speedup_a", "bf16_speedup_c", "bf16_channels_last_speedup_a", "bf16_channels_last_speedup_c"):
        assert res[k] > 0, k
    json.loads(capsys.readouterr().out.strip().splitlines()[-1])
