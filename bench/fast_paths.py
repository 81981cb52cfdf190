"""Whole training runs timed solo, one path at a time (``bench/speed.py --full-epochs N``), and the GPU equality
check of the captured step (``--check``).

Paths, each a fresh model (seed 0) trained for N epochs of the reference recipe (lr warm-up and milestones as
``fit``, the direction update, cross-entropy on the causal-norm logits), training only (no evaluation):
  eager      ``train_one_epoch`` over the ``TensorLoader``, default SGD: ``fit``'s path;
  fast       ``FastStep`` (``fast_step=true``): the whole step on static buffers, a CUDA graph on CUDA;
  fast_bf16  the same with bf16 autocast on the backbone (head and features float32);
  bound      one batch already on the device, forward + backward + fused SGD captured (CUDA) and replayed
             N * steps times: no input path, no direction update, no bookkeeping;
  eager_bf16, bound_bf16   eager and bound with the backbone under bf16 autocast (any device).
Each figure is a measured wall time (``torch.cuda.synchronize`` before and after), never a projection.

    python bench/fast_paths.py --check --device cuda          # captured == eager, bit for bit (deterministic cuDNN)
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lt_kit.maths.schedule import lr_at, mu_at  # noqa: E402
from lt_kit.methods import make_criterion  # noqa: E402
from lt_kit.models import LTModel  # noqa: E402
from lt_kit.precision import autocast  # noqa: E402
from lt_kit.training.fast_step import FastStep, make_optimizer  # noqa: E402
from lt_kit.training.fit import train_one_epoch  # noqa: E402

PATHS = ("eager", "fast", "fast_bf16", "bound", "eager_bf16", "bound_bf16")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _schedule(params: dict, epochs: int):
    keys = ("lr", "schedule", "warmup_epochs", "milestones", "lr_factor")
    for e in range(1, epochs + 1):
        lr = lr_at(e, epochs=params["epochs"], **{k: params[k] for k in keys})
        yield e, lr, mu_at(lr, mu=params["mu"], mu_schedule=params["mu_schedule"])


def _model(params, device, channels_last):
    torch.manual_seed(0)
    return LTModel("resnet32", 10).to(device, memory_format=torch.channels_last if channels_last
                                      else torch.preserve_format)


def solo(path: str, params: dict, loader, counts, device, epochs: int) -> dict:
    """Train ``epochs`` epochs on ``path``; returns seconds, images/s and the last epoch's loss."""
    model = _model(params, device, params["channels_last"])
    crit = make_criterion(params, counts, 1, device)
    steps, bs = len(loader), loader.batch_size
    _sync(device)
    t0 = time.perf_counter()
    base, bf16 = path.removesuffix("_bf16"), path.endswith("_bf16")
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; valid: {', '.join(PATHS)}")
    if base == "eager":
        opt = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=params["momentum"],
                              weight_decay=params["weight_decay"])
        for e, lr, mu in _schedule(params, epochs):
            for g in opt.param_groups:
                g["lr"] = lr
            loader.set_epoch(e)
            stats = train_one_epoch(model, loader, opt, mu=mu, epoch=e, criterion=crit, bf16=bf16)
    elif base == "fast":
        runner = FastStep(model, loader, make_optimizer(model, params, device), bf16=bf16)
        for e, lr, mu in _schedule(params, epochs):
            stats = runner.run_epoch(e, lr, mu, crit, phase=("ce",))
    else:
        stats = _bound(model, params, loader, crit, device, epochs, bf16)
    _sync(device)
    dt = time.perf_counter() - t0
    return {"seconds": round(dt, 2), "img_s": round(epochs * steps * bs / dt, 1), "epochs": epochs,
            "steps_per_epoch": steps, "last_loss": round(stats["loss"], 4)}


def _bound(model, params, loader, crit, device, epochs, bf16=False):
    x, y = next(iter(loader))
    opt = make_optimizer(model, params, device)
    lr_t = opt.param_groups[0]["lr"]
    loss_t = torch.zeros((), device=device)

    def step():
        with autocast(device, bf16, cache_enabled=False):
            logits, _ = model(x)
        loss = crit(logits, y)
        loss.backward()
        opt.step()
        loss_t.copy_(loss.detach())

    graph = None
    if device.type == "cuda":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            step()
    for _e, lr, _ in _schedule(params, epochs):
        lr_t.fill_(lr)
        for _ in range(len(loader)):
            if graph is not None:
                graph.replay()
            else:
                opt.zero_grad(set_to_none=True)
                step()
        loss_t.item()                            # one sync per epoch, as the other paths
    return {"loss": loss_t.item()}


def check_equal(params: dict, loader, counts, device, epochs: int = 2, bf16: bool = False) -> dict:
    """The captured step against the same function run eagerly (same fused SGD, same draws, same bf16 setting),
    bit for bit, with deterministic cuDNN (and, for cuBLAS across streams, CUBLAS_WORKSPACE_CONFIG set by the
    caller); then, for information only, the max abs difference from the eager loop (default SGD, fp32),
    which rounds differently and drifts over epochs."""
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    base = _model(params, device, params["channels_last"])
    out = {"channels_last": params["channels_last"], "bf16": bf16}
    models = {k: copy.deepcopy(base) for k in ("graph", "eager_fn", "loop")}
    runners = {k: FastStep(models[k], loader, make_optimizer(models[k], params, device), bf16=bf16,
                           graph=k == "graph" and device.type == "cuda")          # CPU: both eager (a dry run)
               for k in ("graph", "eager_fn")}
    loop_opt = torch.optim.SGD(models["loop"].parameters(), lr=params["lr"], momentum=params["momentum"],
                               weight_decay=params["weight_decay"])
    crit = make_criterion(params, counts, 1, device)
    for e, lr, mu in _schedule(params, epochs):
        a = runners["graph"].run_epoch(e, lr, mu, crit, phase=("ce",))
        b = runners["eager_fn"].run_epoch(e, lr, mu, crit, phase=("ce",))
        for g in loop_opt.param_groups:
            g["lr"] = lr
        loader.set_epoch(e)
        c = train_one_epoch(models["loop"], loader, loop_opt, mu=mu, epoch=e, criterion=crit)
        out[f"epoch{e}"] = {"graph": a, "eager_fn": b, "loop": c}
    sa, sb, sc = (m.state_dict() for m in (models["graph"], models["eager_fn"], models["loop"]))
    out["graph_equals_eager_fn"] = all(torch.equal(sa[k], sb[k]) for k in sa)
    out["graph_vs_eager_fn_max_abs"] = max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)
    out["graph_vs_loop_max_abs"] = max(float((sa[k].float() - sc[k].float()).abs().max()) for k in sa)
    out["direction_equal"] = torch.equal(sa["direction"], sb["direction"])
    out["captures"] = runners["graph"].captures
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", help="folder holding cifar-10-batches-py (default: fake data, real shapes)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--check", action="store_true", help="the equality check only")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--channels-last", action="store_true", help="--check: model and batches in channels_last")
    ap.add_argument("--bf16", action="store_true", help="--check: bf16 autocast on both step paths")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from speed import prepare_data
    params, data, _, _, tmp = prepare_data(args.data_root, args.device, 256)
    device = data.train.images.device
    if args.check:
        loader = data.train
        if args.channels_last:
            from lt_kit.data.loaders import TensorLoader
            params = {**params, "channels_last": True}
            loader = TensorLoader(loader.images, loader.labels, batch_size=loader.batch_size, mean=loader.mean,
                                  std=loader.std, train=True, pad=loader.pad, seed=loader.seed, channels_last=True)
        res = check_equal(params, loader, data.train_counts, device, args.epochs, bf16=args.bf16)
    else:
        res = {p: solo(p, params, data.train, data.train_counts, device, args.epochs) for p in args.paths.split(",")}
    print(json.dumps(res, indent=1, default=str))
    return res


if __name__ == "__main__":
    main()
