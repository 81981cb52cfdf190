"""Causal-norm training: one epoch as a plain function, and ``fit`` that runs a whole job into a run dir.

Recipe (reference-spec.md §5): SGD with momentum and weight decay on every parameter, cross-entropy on the
Eq. 7 logits, a per-epoch lr schedule stepped at the start of each epoch, the last partial batch dropped,
and the momentum direction ``d <- mu*d + mean(features)`` updated every step from the (global) batch.
"""
from __future__ import annotations

import contextlib
import json
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import distributed as D
from .build import build_data, build_model, resolve_device
from .errors import LtKitError, NonFiniteLossError
from .evaluate import FeatureCache, extract_features, format_table, summary
from .runs import RunDir, load_checkpoint, read_json, write_json
from .schedule import lr_at, mu_at
from .tde import check_alpha, update_direction


def train_one_epoch(model, loader, optimizer, *, mu: float, epoch: int, dist=D.DistInfo(), bf16: bool = False,
                    raw_model=None, bar=None) -> dict:
    """Train for one pass over ``loader``; returns mean loss and training accuracy (Eq. 7 logits).

    ``model`` may be DDP-wrapped; ``raw_model`` is the unwrapped ``LTModel`` holding the direction.
    The loss is checked once per epoch (no per-step GPU sync); a non-finite loss raises with its step.
    """
    raw_model = raw_model or model
    model.train()
    dev = raw_model.direction.device
    amp = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 and dev.type == "cuda" else contextlib.nullcontext()
    losses = torch.zeros(len(loader), device=dev)
    correct = torch.zeros((), device=dev)
    seen = 0
    for step, (x, y) in enumerate(loader):
        with amp:
            logits, feats = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            batch_mean = D.mean_across(feats.detach().float().mean(0), dist)
            raw_model.direction.copy_(update_direction(raw_model.direction, batch_mean, mu))
            losses[step] = loss.detach()
            correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if bar is not None:
            bar.update(1)
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        s = int(bad[0])
        raise NonFiniteLossError(f"loss became {losses[s].item()} at epoch {epoch}, step {s + 1}/{len(loader)}; "
                                 "lower lr, check the data for NaN/inf, or resume from the last checkpoint")
    D.mean_across(losses, dist)
    totals = D.sum_across(torch.stack([correct, torch.tensor(float(seen), device=dev)]), dist)
    return {"loss": losses.mean().item(), "train_acc": (totals[0] / totals[1]).item()}


def _evaluate(model, loader, params, data, alpha) -> tuple[FeatureCache, dict]:
    feats, labels = extract_features(model, loader, bf16=params["bf16"])
    cache = FeatureCache.from_model(model, feats, labels, params, data.train_counts, data.class_names)
    return cache, summary(cache, alpha)


def fit(params: dict, run_dir, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Train with ``params`` (already resolved by ``config.resolve``) into ``run_dir``; evaluate the test
    split; write the feature cache and ``metrics.json``. Returns the metrics dict (on every rank)."""
    t0 = time.time()
    device = resolve_device(params["device"])
    dist = D.setup(device)
    device = D.local_device(device, dist)
    run = RunDir(run_dir)
    run.check(params, resume=resume, overwrite=overwrite)     # refuse before any work, write after the data loads
    D.barrier(dist)                     # every rank checks before rank 0 creates the run (else rank 1 may refuse it)
    torch.manual_seed(params["seed"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = params["cudnn_benchmark"]
    data = build_data(params, device, dist.rank, dist.world_size)
    model = build_model(params, len(data.train_counts))
    if dist.is_main:
        run.prepare(params, resume=resume, overwrite=overwrite)
    D.barrier(dist)
    if params["sync_bn"]:               # torch's SyncBatchNorm is CUDA-only; D's version also runs over gloo
        model = D.convert_sync_bn(model, dist, device)
    model = model.to(device, memory_format=torch.channels_last if params["channels_last"] else torch.preserve_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=params["momentum"],
                                weight_decay=params["weight_decay"])
    start, history, best = 1, [], None
    if resume:
        ckpt = load_checkpoint(run / "checkpoint.pt", model.signature())
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start, history, best = ckpt["epoch"] + 1, ckpt["history"], ckpt.get("best")
    if dist.is_main:
        run.save_indices(data.subset_indices)
        run.log(f"{'resume at' if resume else 'start'} epoch {start}: {params['dataset']} {params['arch']} "
                f"{params['head']} on {device} x{dist.world_size}, {len(data.train)} steps/epoch")
    fwd = model
    if params["compile"]:
        model.backbone.compile()        # in place: forward() is compiled, state-dict keys stay the same
    if dist.enabled:
        fwd = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    sched = {k: params[k] for k in ("lr", "schedule", "epochs", "warmup_epochs", "milestones", "lr_factor")}
    bar = tqdm(total=(params["epochs"] - start + 1) * len(data.train), disable=not (progress and dist.is_main),
               desc="train", unit="step", mininterval=1.0)
    for epoch in range(start, params["epochs"] + 1):
        lr = lr_at(epoch, **sched)
        for g in optimizer.param_groups:
            g["lr"] = lr
        mu = mu_at(lr, mu=params["mu"], mu_schedule=params["mu_schedule"])
        data.train.set_epoch(epoch)
        te = time.time()
        stats = train_one_epoch(fwd, data.train, optimizer, mu=mu, epoch=epoch, dist=dist, bf16=params["bf16"],
                                raw_model=model, bar=bar)
        rec = {"epoch": epoch, "lr": lr, "mu": mu, **stats, "seconds": round(time.time() - te, 3)}
        if params["eval_every"] and epoch % params["eval_every"] == 0 or params["select_best"]:
            split = data.val or data.test
            _, m = _evaluate(model, split, params, data, params["alpha"])
            key = "tde" if m["tde"] else "softmax"
            rec["val_acc"] = m[key]["overall"]
            if params["select_best"] and (best is None or rec["val_acc"] > best["val_acc"]):
                best = {"epoch": epoch, "val_acc": rec["val_acc"]}
                if dist.is_main:
                    run.save_checkpoint({"model": model.state_dict(), "epoch": epoch, "signature": model.signature()},
                                        "best.pt")
        history.append(rec)
        bar.set_postfix(epoch=epoch, loss=f"{stats['loss']:.3f}", acc=f"{stats['train_acc']:.3f}", lr=f"{lr:.3g}")
        if dist.is_main:
            run.save_checkpoint({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "history": history, "best": best, "signature": model.signature(), "params": params})
            write_json(run / "history.json", history)
            run.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
    bar.close()
    if params["select_best"] and best is not None:      # best weights + last-epoch direction, as the reference
        D.barrier(dist)                                 # rank 0 may still be writing best.pt
        direction = model.direction.clone()
        model.load_state_dict(load_checkpoint(run / "best.pt", model.signature())["model"])
        model.direction.copy_(direction)
    cache, metrics = _evaluate(model, data.test, params, data, params["alpha"])
    metrics["epochs_trained"] = len(history)
    metrics["best_epoch"] = best["epoch"] if best else None
    metrics["seconds"] = round(time.time() - t0, 2)
    metrics["world_size"] = dist.world_size
    if dist.is_main:
        cache.save(run / "features.pt")
        write_json(run / "metrics.json", metrics)
        run.log("test:\n" + format_table(metrics))
    D.barrier(dist)
    D.teardown(dist)
    return metrics


def test_run(run_dir, *, alpha: float | None = None, checkpoint=None, device: str | None = None) -> dict:
    """Evaluate a run dir at ``alpha`` (default: the run's). Uses the cached features when they exist and no
    other checkpoint is given; otherwise loads the checkpoint and makes one backbone pass."""
    run = RunDir(run_dir)
    params = run.params()
    a = params["alpha"] if alpha is None else alpha
    try:
        a = check_alpha(a)
    except ValueError as e:
        raise LtKitError(str(e)) from None
    if checkpoint is None and (run / "features.pt").is_file():
        cache = FeatureCache.load(run / "features.pt")
    else:
        params = {**params, "device": device or params["device"]}
        dev = resolve_device(params["device"])
        data = build_data(params, dev)
        model = build_model(params, len(data.train_counts))
        ckpt = load_checkpoint(checkpoint or run / "checkpoint.pt", model.signature())
        model.load_state_dict(ckpt["model"])
        model.to(dev)
        cache, _ = _evaluate(model, data.test, params, data, a)
        if checkpoint is None:
            cache.save(run / "features.pt")
    metrics = summary(cache, a)
    if checkpoint is None:          # another checkpoint's numbers must not overwrite this run's metrics
        write_json(run / "metrics.json", {**(_read(run / "metrics.json")), **metrics})
    with open(run / "evaluations.jsonl", "a") as f:
        f.write(json.dumps({"checkpoint": str(checkpoint) if checkpoint else None,
                            **{k: metrics[k] for k in ("alpha", "softmax", "tde")}}) + "\n")
    run.log(f"test alpha={a:g}" + (f" checkpoint={checkpoint}" if checkpoint else ""))
    return metrics


def _read(path) -> dict:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}
