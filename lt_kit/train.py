"""Causal-norm training: one epoch as a plain function, and ``fit`` that runs a whole job into a run dir.

Recipe (reference-spec.md §5): SGD with momentum and weight decay on every parameter, cross-entropy on the
Eq. 7 logits, a per-epoch lr schedule stepped at the start of each epoch, the last partial batch dropped,
and the momentum direction ``d <- mu*d + mean(features)`` updated every step from the (global) batch.
"""
from __future__ import annotations

import json
import time

import torch
from tqdm.auto import tqdm

from . import distributed as D
from . import sam
from .augment import Mixer, make_mixer
from .build import build_data, build_model, resolve_device
from .errors import LtKitError, check_losses, on_every_rank
from .guard import env_rank
from .lock import RunLock
from .precision import autocast, resolve_bf16
from .evaluate import AlphaEvaluator, FeatureCache, MethodEvaluator, extract_features, format_table, summary
from .runs import RunDir, load_checkpoint, write_json
from .fast_step import FastStep, fast_step_blockers, make_optimizer
from .methods import LOSSES, applies, criterion_phase, make_criterion
from .schedule import lr_at, mu_at

EVALUATED = "evaluated.pt"          # the weights and direction that metrics.json and the feature caches come from
from .tde import check_alpha, update_direction


def train_one_epoch(model, loader, optimizer, *, mu: float, epoch: int, dist=D.DistInfo(), bf16: bool = False,
                    raw_model=None, bar=None, criterion=None, mixer=None, sam_rho: float = 0.0) -> dict:
    """Train for one pass over ``loader``; returns mean loss and training accuracy (the head's logits).

    ``criterion(logits, y)`` is the epoch's loss from ``methods.make_criterion`` (default: cross-entropy).
    ``mixer`` (``augment.Mixer``, mixup/CutMix) mixes each batch; the loss is then the lambda-weighted pair of
    criteria, training accuracy counts the first label, and the direction sees the mixed batch's features.
    ``sam_rho`` > 0: each step is a SAM step (``sam.py``); the loss, accuracy and direction are the first pass's.
    ``model`` may be DDP-wrapped; ``raw_model`` is the unwrapped ``LTModel`` holding the direction.
    The loss is checked once per epoch (no per-step GPU sync); a non-finite loss raises with its step.
    """
    raw_model = raw_model or model
    criterion = criterion or LOSSES["ce"].make({}, [], epoch)
    model.train()
    dev = raw_model.direction.device
    amp = autocast(dev, resolve_bf16(bf16, dev))
    losses = torch.zeros(len(loader), device=dev)
    correct = torch.zeros((), device=dev)
    seen = 0
    if mixer is not None:
        mixer.set_epoch(epoch)
    for step, (x, y) in enumerate(loader):
        x, mix = mixer.mix(x, y) if mixer is not None else (x, None)
        with amp:
            logits, feats = model(x)
        loss = Mixer.loss(criterion, logits.float(), y, mix)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if sam_rho > 0:                 # the gradient at the sharpest nearby weights (sam.py), then step from here
            moves = sam.ascend(raw_model.parameters(), sam_rho)
            optimizer.zero_grad(set_to_none=True)
            with sam.frozen_bn_stats(raw_model), amp:
                second = model(x)[0]
            Mixer.loss(criterion, second.float(), y, mix).backward()
            sam.descend_back(moves)
        optimizer.step()
        with torch.no_grad():
            batch_mean = D.mean_across(feats.detach().float().mean(0), dist)
            raw_model.direction.copy_(update_direction(raw_model.direction, batch_mean, mu))
            losses[step] = loss.detach()
            correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if bar is not None:
            bar.update(1)
    D.mean_across(losses, dist)         # first: a NaN on any rank is then seen by every rank, and all stop
    check_losses(losses, epoch)
    totals = D.sum_across(torch.stack([correct, torch.tensor(float(seen), device=dev)]), dist)
    return {"loss": losses.mean().item(), "train_acc": (totals[0] / totals[1]).item()}


def _cache(model, loader, params, data) -> FeatureCache:
    feats, labels = extract_features(model, loader, bf16=params["bf16"])
    return FeatureCache.from_model(model, feats, labels, params, data.train_counts, data.class_names)


def _evaluate(model, params, data, alpha) -> tuple[FeatureCache, FeatureCache | None, dict]:
    """Test (and validation, when the run has that split) feature caches and the run's metrics."""
    cache = _cache(model, data.test, params, data)
    val = _cache(model, data.val, params, data) if data.val is not None else None
    return cache, val, summary(cache, alpha, val)


def _val_score(model, params, data) -> float:
    """Overall accuracy on the validation split at the run's preset alpha (TDE) or the head's own logits."""
    ev = AlphaEvaluator(_cache(model, data.val, params, data))
    return ev.overall(params["alpha"] if applies("tde", params["head"]) else 0.0)


def fit(params: dict, run_dir, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Train with ``params`` (already resolved by ``config.resolve``) into ``run_dir``; evaluate the test
    split; write the feature cache and ``metrics.json``. Returns the metrics dict (on every rank).

    The writer (rank 0) holds the run dir's lock (``lock.py``) throughout: a second ``train`` on the same
    folder is refused with the first one's pid and host."""
    with RunLock(run_dir, enabled=env_rank() == 0):
        return _fit(params, run_dir, resume=resume, overwrite=overwrite, progress=progress)


def _run_bf16(value, run: RunDir, device, resume: bool) -> bool:
    """The run's precision: ``auto`` resolves for this device, except that a resumed run keeps the one it
    started with (a CPU bf16 run resumed on CUDA goes on in bf16)."""
    if value == "auto" and resume and run.exists():
        recorded = run.params().get("bf16")
        if isinstance(recorded, bool):
            return recorded
    return resolve_bf16(value, device)


def _fit(params: dict, run_dir, *, resume: bool, overwrite: bool, progress: bool) -> dict:
    t0 = time.time()
    device = resolve_device(params["device"])
    dist = D.setup(device)
    device = D.local_device(device, dist)
    blockers = fast_step_blockers(params, dist.world_size) if params["fast_step"] else []
    if blockers:                        # before the run dir is checked or written, on every rank alike
        raise on_every_rank(LtKitError(f"fast_step=true cannot run this job ({'; '.join(blockers)}); set "
                                       "fast_step=false"))
    run = RunDir(run_dir)
    params = {**params, "bf16": _run_bf16(params["bf16"], run, device, resume)}
    run.check(params, resume=resume, overwrite=overwrite)     # refuse before any work, write after the data loads
    resume = resume and (run / "checkpoint.pt").is_file()      # no complete epoch yet: start again (guard.py)
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
    if params["fast_step"]:
        optimizer = make_optimizer(model, params, device)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=params["momentum"],
                                    weight_decay=params["weight_decay"])
    start, history, best = 1, [], None
    if resume:
        ckpt = load_checkpoint(run / "checkpoint.pt", model.signature())
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if not params["fast_step"]:      # a fast run's checkpoint carries fused=True and a tensor lr: back to eager
            for g in optimizer.param_groups:
                g["fused"], g["foreach"], g["lr"] = None, None, float(g["lr"])
        start, history, best = ckpt["epoch"] + 1, ckpt["history"], ckpt.get("best")
    if dist.is_main:
        run.save_indices(data.subset_indices, data.val_indices)
        run.log(f"{'resume at' if resume else 'start'} epoch {start}: {params['dataset']} {params['arch']} "
                f"{params['head']} on {device} x{dist.world_size}, {len(data.train)} steps/epoch")
    fwd = model
    if params["compile"]:
        model.backbone.compile()        # in place: forward() is compiled, state-dict keys stay the same
    if dist.enabled:
        fwd = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    mixer = make_mixer(params)          # None unless mixup_alpha or cutmix_alpha is set
    runner = FastStep(model, data.train, optimizer, bf16=params["bf16"]) if params["fast_step"] else None
    if dist.is_main:
        run.log("step: " + ("fast (one function on static buffers" + (", captured as a CUDA graph)" if
                runner.graph_on else ", eager)") if runner else "eager loop"))
    sched = {k: params[k] for k in ("lr", "schedule", "epochs", "warmup_epochs", "milestones", "lr_factor")}
    bar = tqdm(total=(params["epochs"] - start + 1) * len(data.train), disable=not (progress and dist.is_main),
               desc="train", unit="step", mininterval=1.0)
    for epoch in range(start, params["epochs"] + 1):
        lr = lr_at(epoch, **sched)
        mu = mu_at(lr, mu=params["mu"], mu_schedule=params["mu_schedule"])
        criterion = make_criterion(params, data.train_counts, epoch, device)
        te = time.time()
        if runner is not None:
            stats = runner.run_epoch(epoch, lr, mu, criterion, criterion_phase(params, epoch), bar)
        else:
            for g in optimizer.param_groups:
                g["lr"] = lr
            data.train.set_epoch(epoch)
            stats = train_one_epoch(fwd, data.train, optimizer, mu=mu, epoch=epoch, dist=dist, bf16=params["bf16"],
                                    criterion=criterion, mixer=mixer, raw_model=model, bar=bar,
                                    sam_rho=params["sam_rho"])
        rec = {"epoch": epoch, "lr": lr, "mu": mu, **stats, "seconds": round(time.time() - te, 3)}
        if params["eval_every"] and epoch % params["eval_every"] == 0 or params["select_best"]:
            rec["val_acc"] = _val_score(model, params, data)     # config.check_val_split: never the test set
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
    cache, val_cache, metrics = _evaluate(model, params, data, params["alpha"])
    metrics["loss"] = params["loss"]
    metrics["epochs_trained"] = len(history)
    metrics["best_epoch"] = best["epoch"] if best else None
    metrics["seconds"] = round(time.time() - t0, 2)
    metrics["world_size"] = dist.world_size
    if dist.is_main:                    # the evaluated weights + direction, so `test` can rebuild exactly these
        run.save_checkpoint({"model": model.state_dict(), "epoch": best["epoch"] if best else len(history),
                             "signature": model.signature()}, EVALUATED)
        cache.save(run / "features.pt")
        if val_cache is not None:
            val_cache.save(run / "val_features.pt")
        write_json(run / "metrics.json", metrics)
        run.log("test:\n" + format_table(metrics))
    D.barrier(dist)
    D.teardown(dist)
    return metrics


def test_run(run_dir, *, method: str | None = None, strength: float | None = None, alpha: float | None = None,
             checkpoint=None, device: str | None = None) -> dict:
    """Score a run dir with a post-hoc ``method`` (``methods.POSTHOC``: tde, logit_adjust, tau_norm) at
    ``strength`` (default: the method's paper rule); ``alpha`` is ``method="tde", strength=alpha``.

    Uses the feature cache; a missing cache is rebuilt from ``evaluated.pt``, the weights and direction that
    ``fit`` evaluated (never from another epoch). ``checkpoint``: score that file instead (one backbone pass,
    its cache is not kept). The run's ``metrics.json`` is its own evaluation and is never rewritten; each call
    appends one line to ``evaluations.jsonl`` saying which method, strength and checkpoint gave it.
    Returns ``{"method", "strength", "head", "metrics", ...}``.
    """
    from .methods import POSTHOC, get_method
    run = RunDir(run_dir)
    params = run.params()
    if alpha is not None:
        if method not in (None, "tde"):
            raise LtKitError(f"alpha is TDE's strength; with method {method!r} give --strength instead")
        method, strength = "tde", alpha
    if method is None:
        method = "tde" if applies("tde", params["head"]) else None
    cache = _load_or_rebuild(run, params, checkpoint, device)
    m = get_method(method, cache.head) if method else None
    if m is not None:
        strength = m.check(m.rule(params["alpha"]) if strength is None else strength)
    elif strength is not None:
        raise LtKitError(f"--strength needs --method (one of {', '.join(POSTHOC)})")
    metrics = MethodEvaluator(cache, method).metrics(strength or 0.0)
    out = {"method": method, "strength": strength, "head": cache.head, "loss": params.get("loss", "ce"), "checkpoint": str(checkpoint) if checkpoint
           else None, "metrics": metrics, "thresholds": {"many": cache.many_threshold, "few": cache.few_threshold}}
    with open(run / "evaluations.jsonl", "a") as f:
        f.write(json.dumps({**out, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    run.log(f"test method={method} strength={strength}" + (f" checkpoint={checkpoint}" if checkpoint else ""))
    return out


def _load_or_rebuild(run: RunDir, params: dict, checkpoint, device) -> FeatureCache:
    if checkpoint is None and (run / "features.pt").is_file():
        return FeatureCache.load(run / "features.pt")
    source = checkpoint or run / EVALUATED
    if checkpoint is None and not source.is_file():
        if not (run / "checkpoint.pt").is_file():
            raise LtKitError(f"{run.path} has no evaluated model (no {EVALUATED}, no checkpoint.pt): "
                             "the run never finished an epoch; train it again")
        if params.get("select_best") or not (run / "metrics.json").is_file():
            raise LtKitError(f"{run.path} has no {EVALUATED}: the run has not finished (or was evaluated on "
                             "another epoch); `train --resume` finishes it, or pass --checkpoint to score a file")
        source = run / "checkpoint.pt"          # an older finished run: its last epoch is what fit evaluated
    params = {**params, "device": device or params["device"]}
    dev = resolve_device(params["device"])
    data = build_data(params, dev)
    model = build_model(params, len(data.train_counts))
    model.load_state_dict(load_checkpoint(source, model.signature())["model"])
    model.to(dev)
    cache = _cache(model, data.test, params, data)
    if checkpoint is None:
        cache.save(run / "features.pt")
        if data.val is not None and not (run / "val_features.pt").is_file():
            _cache(model, data.val, params, data).save(run / "val_features.pt")
    return cache


def format_test(result: dict) -> str:
    """One `test` call's result in the run table's format."""
    from .evaluate import format_rows, row_name
    return format_rows([(row_name(result["head"], result["method"], result["strength"], loss=result.get("loss", "ce")),
                         result["metrics"])],
                       result["thresholds"])
