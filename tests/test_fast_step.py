"""The fast step (fast_step.py) on the CPU: the function a CUDA graph captures equals the eager loop's step
(loss, gradients, weights, BatchNorm statistics, momentum buffers, direction) bit for bit; fused SGD with a tensor lr
matches the default SGD to float rounding; ``fit`` runs it, refuses what it cannot run, and stops on NaN."""
import copy

import pytest
import torch

from lt_kit.config import resolve
from lt_kit.errors import LtKitError, NonFiniteLossError
from lt_kit.methods import make_criterion
from lt_kit.training.build import build_data, build_model
from lt_kit.training.fast_step import FastStep, make_optimizer
from lt_kit.training.fit import fit
from lt_kit.training.loop import train_one_epoch

CPU = torch.device("cpu")


def _setup(**over):
    p = resolve({"dataset": "digits_lt", "epochs": 3, "warmup_epochs": 1, "milestones": [2], "device": "cpu", **over})
    torch.manual_seed(0)
    data = build_data(p, CPU)
    return p, data, build_model(p, len(data.train_counts))


def _state(model, opt):
    out = {f"p.{k}": v for k, v in model.state_dict().items()}      # weights, BN running stats, direction
    for i, (prm, st) in enumerate(opt.state.items()):
        out[f"m.{i}"] = st["momentum_buffer"]
        out[f"g.{i}"] = prm.grad                                    # the last step's gradients
    return out


@pytest.mark.parametrize("loss,head", [("ce", "causal_norm"), ("ldam_drw", "norm_linear")])
def test_fast_step_equals_eager_step(loss, head):
    p, data, model = _setup(loss=loss, head=head)
    fast_model, eager_model = model, copy.deepcopy(model)
    fast_opt, eager_opt = make_optimizer(fast_model, p, CPU), make_optimizer(eager_model, p, CPU)
    runner = FastStep(fast_model, data.train, fast_opt, graph=False)
    for epoch, lr, mu in [(1, 0.05, 0.9), (2, 0.2, 0.9), (3, 0.002, 0.5)]:       # epoch 2+: DRW re-weights
        crit = make_criterion(p, data.train_counts, epoch)
        a = runner.run_epoch(epoch, lr, mu, crit)
        for g in eager_opt.param_groups:
            g["lr"].fill_(lr)
        data.train.set_epoch(epoch)
        b = train_one_epoch(eager_model, data.train, eager_opt, mu=mu, epoch=epoch, criterion=crit)
        assert a == b, epoch                                  # mean loss and training accuracy, exactly
        sa, sb = _state(fast_model, fast_opt), _state(eager_model, eager_opt)
        assert sa.keys() == sb.keys() and len(sa) > 10
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (epoch, k)
    assert fast_model.direction.abs().sum() > 0


def test_fused_tensor_lr_sgd_matches_default_sgd():
    p, data, model = _setup()
    other = copy.deepcopy(model)
    fused = make_optimizer(model, p, CPU)
    plain = torch.optim.SGD(other.parameters(), lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"])
    x, y = next(iter(data.train))
    for m, opt in ((model, fused), (other, plain)):
        for _ in range(2):                                    # 2 steps: the momentum buffers are used too
            opt.zero_grad(set_to_none=True)
            logits, _ = m(x)
            torch.nn.functional.cross_entropy(logits, y).backward()
            opt.step()
    for a, b in zip(model.parameters(), other.parameters()):
        torch.testing.assert_close(a, b)                      # float32 defaults: rtol 1.3e-6, atol 1e-5


def test_fit_runs_the_fast_step(tmp_path):
    p = resolve({"dataset": "digits_lt", "epochs": 3, "warmup_epochs": 1, "milestones": [2], "device": "cpu",
                 "fast_step": True})
    m = fit(p, tmp_path / "fast", progress=False)
    log = (tmp_path / "fast" / "log.txt").read_text()
    assert "step: fast (one function on static buffers, eager)" in log
    eager = fit({**p, "fast_step": False}, tmp_path / "eager", progress=False)
    assert "step: eager loop" in (tmp_path / "eager" / "log.txt").read_text()
    # fused vs default SGD round differently; after 3 short epochs the runs are still close
    import json
    h1 = json.loads((tmp_path / "fast" / "history.json").read_text())
    h2 = json.loads((tmp_path / "eager" / "history.json").read_text())
    assert [round(r["loss"], 2) for r in h1] == [round(r["loss"], 2) for r in h2]
    assert abs(m["softmax"]["overall"] - eager["softmax"]["overall"]) < 0.05


@pytest.mark.parametrize("first", [False, True])
def test_resume_across_the_step_paths(tmp_path, first):
    """A run started on one path resumes on the other (fast_step says how a step runs, not what it computes)."""
    p = resolve({"dataset": "digits_lt", "epochs": 2, "warmup_epochs": 1, "milestones": [2], "device": "cpu",
                 "fast_step": first})
    fit(p, tmp_path / "r", progress=False)
    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)
    ckpt["epoch"] = 1                                          # pretend it stopped after epoch 1
    ckpt["history"] = ckpt["history"][:1]
    torch.save(ckpt, tmp_path / "r" / "checkpoint.pt")
    m = fit({**p, "fast_step": not first}, tmp_path / "r", resume=True, progress=False)
    assert m["epochs_trained"] == 2
    log = (tmp_path / "r" / "log.txt").read_text()
    assert "resume at epoch 2" in log and ("step: eager loop" in log.split("resume at")[-1]) == first


def test_fast_step_refuses_what_it_cannot_run():
    with pytest.raises(LtKitError, match="mixup_alpha draws on the host"):
        resolve({"fast_step": True, "mixup_alpha": 1.0})
    with pytest.raises(LtKitError, match="reads image files"):
        resolve({"fast_step": True, "dataset": "folder"})


def test_fast_step_under_torchrun_is_refused_before_the_run_dir_is_written(tmp_path, monkeypatch, capsys):
    """Two processes (torchrun's environment; the process group faked): refused as one process refuses
    mixup, by the CLI's parameter check and by ``fit`` itself, and nothing is written."""
    import lt_kit.training.distributed as D
    from lt_kit.cli import main
    monkeypatch.setattr(D, "setup", lambda device: D.DistInfo(0, 2, 0))
    monkeypatch.setattr(D, "barrier", lambda info: None)
    params = resolve({"fast_step": True, "device": "cpu", "epochs": 1})     # resolved before WORLD_SIZE is set
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    run = tmp_path / "run"
    with pytest.raises(LtKitError, match="distributed runs all-reduce every step"):
        fit(params, run, progress=False)
    assert not run.exists()
    assert main(["train", "--set", "fast_step=true", "--set", "device=cpu", "--run-dir", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: fast_step=true cannot run") and "distributed runs all-reduce" in err, err
    assert not run.exists()


def test_captured_criterion_is_kept_until_its_phase_changes():
    """A graph reads the device tensors of the criterion it captured: a new criterion object of the same phase
    must not replace it (its tensors would be freed); a new phase (DRW's switch) recaptures with the new one."""
    p, data, model = _setup(loss="ldam_drw", head="norm_linear")
    runner = FastStep(model, data.train, make_optimizer(model, p, CPU), graph=False)
    first = make_criterion(p, data.train_counts, 1)
    runner.run_epoch(1, 0.1, 0.9, first, phase=("ldam_drw", False))
    runner.run_epoch(2, 0.1, 0.9, make_criterion(p, data.train_counts, 1), phase=("ldam_drw", False))
    assert runner.criterion is first
    drw = make_criterion(p, data.train_counts, 2)
    runner.run_epoch(3, 0.1, 0.9, drw, phase=("ldam_drw", True))
    assert runner.criterion is drw and runner.phase == ("ldam_drw", True)
    assert all(torch.is_tensor(g["lr"]) and g["lr"].device == CPU for g in runner.opt.param_groups)


def test_fast_step_nan_names_the_step():
    p, data, model = _setup()
    runner = FastStep(model, data.train, make_optimizer(model, p, CPU), graph=False)
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 1/"):
        runner.run_epoch(1, 0.1, 0.9, lambda logits, y: torch.nn.functional.cross_entropy(logits, y) * float("nan"))


def test_head_and_features_stay_float32_under_bf16_autocast():
    """The autocast of the bf16 path reaches the backbone only: logits are the float32 head of float32 features."""
    _, _, model = _setup()
    x = torch.randn(4, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, feats = model(x)
    assert logits.dtype == feats.dtype == torch.float32
    assert torch.equal(logits, model.head(feats))


def test_bench_solo_paths_and_check_run_on_cpu():
    """bench/fast_paths.py (what `speed.py --full-epochs` and the device script's check call) on the digits:
    every path trains whole epochs and reports measured seconds; the check finds the fast step equal."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from fast_paths import check_equal, solo
    p, data, _ = _setup()
    for path in ("eager", "fast", "bound"):
        r = solo(path, p, data.train, data.train_counts, CPU, 2)
        assert r["epochs"] == 2 and r["seconds"] > 0 and r["img_s"] > 0 and r["last_loss"] == r["last_loss"]
    with pytest.raises(ValueError, match="valid: eager"):
        solo("turbo", p, data.train, data.train_counts, CPU, 1)
    res = check_equal(p, data.train, data.train_counts, CPU, epochs=2)
    assert res["graph_equals_eager_fn"] and res["direction_equal"] and res["graph_vs_eager_fn_max_abs"] == 0.0
    assert res["epoch2"]["graph"] == res["epoch2"]["eager_fn"]
    assert res["channels_last"]                                  # the default layout; then contiguous memory
    nchw, data_nchw, _ = _setup(channels_last=False)
    res = check_equal(nchw, data_nchw.train, data_nchw.train_counts, CPU, epochs=1)
    assert not res["channels_last"] and res["graph_equals_eager_fn"]


def test_speed_bench_quick_runs(tmp_path, capsys):
    """bench/speed.py on its fake CIFAR-10 (one round, one step per path): the JSON line and result files."""
    import json
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import speed
    threads = torch.get_num_threads()
    try:            # speed.py sets this process's thread count; later tests compare runs made at the suite's count
        res = speed.main(["--quick", "--device", "cpu", "--input-batches", "1", "--workers", "0", "--threads", "1",
                          "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["a_img_s"] > 0 and line["device"] == "cpu" and line["device_name"]
    assert res["train_images"] == 12406 and (tmp_path / "speed.md").is_file()
