"""``fit``: one whole training job into a run dir, then its evaluation (the feature caches and ``metrics.json``).

Recipe (the reference's ``run_networks.py`` and ``config/CIFAR10_LT/causal_norm_32.yaml``): SGD with momentum and
weight decay on every parameter, the lr schedule stepped at the start of each epoch (``maths/schedule.py``), the
step of ``loop.train_one_epoch`` (or the fast step), a checkpoint after every epoch, then the test split (and
the validation split) scored by every method from one cached backbone pass.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

import lt_kit.training.distributed as D
from lt_kit.config import fast_step_blockers
from lt_kit.data.augment import make_mixer
from lt_kit.errors import LtKitError, on_every_rank
from lt_kit.evaluation.features import FeatureCache, cache_features, cache_train_features
from lt_kit.evaluation.summary import AlphaEvaluator, format_table, summary
from lt_kit.maths.schedule import lr_at, mu_at
from lt_kit.methods import applies, criterion_phase, make_criterion
from lt_kit.precision import resolve_bf16
from lt_kit.pretrained import describe, load_pretrained
from lt_kit.runs.guard import env_rank
from lt_kit.runs.lock import RunLock
from lt_kit.runs.rundir import EVALUATED, PRETRAINED, RunDir, load_checkpoint, write_json
from lt_kit.training.build import build_data, build_model, resolve_device, train_pass_loaders
from lt_kit.training.fast_step import FastStep, make_optimizer
from lt_kit.training.loop import train_one_epoch


def _cache(model, loader, params, data) -> FeatureCache:
    return cache_features(model, loader, params, data.train_counts, data.class_names, data.group_counts)


def _evaluate(model, params, data, alpha) -> tuple[list[tuple[str, FeatureCache]], dict]:
    """The test, validation (when the run has that split) and training-subset feature caches, as
    (file name, cache), and the run's metrics (the two-stage methods fit on the training cache)."""
    cache = _cache(model, data.test, params, data)
    val = _cache(model, data.val, params, data) if data.val is not None else None
    train = cache_train_features(model, train_pass_loaders(params, next(model.parameters()).device, data), params,
                                 data.train_counts, data.class_names, data.group_counts) \
        if params["train_feature_passes"] else None
    caches = [("features.pt", cache)] + ([("train_features.pt", train)] if train else []) \
        + ([("val_features.pt", val)] if val else [])
    return caches, summary(cache, alpha, val, train, params)


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


@dataclass
class Job:
    """What one run holds while it trains (built by :func:`_setup`)."""
    params: dict
    run: RunDir
    device: torch.device
    dist: D.DistInfo
    data: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    start: int = 1
    history: list = field(default_factory=list)
    best: dict | None = None


def _fit(params: dict, run_dir, *, resume: bool, overwrite: bool, progress: bool) -> dict:
    t0 = time.time()
    job = _setup(params, run_dir, resume=resume, overwrite=overwrite)
    step = _step(job)
    sched = {k: job.params[k] for k in ("lr", "schedule", "epochs", "warmup_epochs", "milestones", "lr_factor")}
    bar = tqdm(total=(job.params["epochs"] - job.start + 1) * len(job.data.train), desc="train", unit="step",
               disable=not (progress and job.dist.is_main), mininterval=1.0)
    for epoch in range(job.start, job.params["epochs"] + 1):
        lr = lr_at(epoch, **sched)
        mu = mu_at(lr, mu=job.params["mu"], mu_schedule=job.params["mu_schedule"])
        te = time.time()
        stats = step(epoch, lr, mu, bar)
        _end_epoch(job, {"epoch": epoch, "lr": lr, "mu": mu, **stats, "seconds": round(time.time() - te, 3)}, bar)
    bar.close()
    return _finish(job, t0)


def _setup(params: dict, run_dir, *, resume: bool, overwrite: bool) -> Job:
    """Device and processes, the run dir's checks (before any work), data, model, optimiser, and the resumed
    state when there is one."""
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
    weights = None if resume else load_pretrained(model, params)     # resumed: the checkpoint holds them
    if dist.is_main:
        run.prepare(params, resume=resume, overwrite=overwrite)
        if weights is not None:         # provenance: the weights' source, checksum and key mapping
            write_json(run / PRETRAINED, weights)
            run.log(describe(weights))
    D.barrier(dist)
    if params["sync_bn"]:               # torch's SyncBatchNorm is CUDA-only; D's version also runs over gloo
        model = D.convert_sync_bn(model, dist, device)
    model = model.to(device, memory_format=torch.channels_last if params["channels_last"] else torch.preserve_format)
    if params["fast_step"]:
        optimizer = make_optimizer(model, params, device)
    else:
        optimizer = torch.optim.SGD(model.trainable_parameters(), lr=params["lr"], momentum=params["momentum"],
                                    weight_decay=params["weight_decay"])
    job = Job(params, run, device, dist, data, model, optimizer)
    if resume:
        ckpt = load_checkpoint(run / "checkpoint.pt", model.signature())
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if not params["fast_step"]:      # a fast run's checkpoint carries fused=True and a tensor lr: back to eager
            for g in optimizer.param_groups:
                g["fused"], g["foreach"], g["lr"] = None, None, float(g["lr"])
        job.start, job.history, job.best = ckpt["epoch"] + 1, ckpt["history"], ckpt.get("best")
    if dist.is_main:
        run.save_indices(data.subset_indices, data.val_indices)
        run.log(f"{'resume at' if resume else 'start'} epoch {job.start}: {params['dataset']} {params['arch']} "
                f"{params['head']} on {device} x{dist.world_size}, {len(data.train)} steps/epoch")
    return job


def _step(job: Job):
    """The epoch function ``(epoch, lr, mu, bar) -> stats``: the fast step, or the eager loop (DDP-wrapped under
    torchrun, compiled with ``compile``, mixing with mixup/CutMix, SAM with ``sam_rho``)."""
    params, model, data = job.params, job.model, job.data
    if params["compile"]:
        model.backbone.compile()        # in place: forward() is compiled, state-dict keys stay the same
    fwd = model
    if job.dist.enabled:
        fwd = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[job.device.index] if job.device.type == "cuda" else None)
    mixer = make_mixer(params)          # None unless mixup_alpha or cutmix_alpha is set
    runner = FastStep(model, data.train, job.optimizer, bf16=params["bf16"]) if params["fast_step"] else None
    if job.dist.is_main:
        job.run.log("step: " + ("fast (one function on static buffers" + (", captured as a CUDA graph)" if
                    runner.graph_on else ", eager)") if runner else "eager loop"))

    def epoch_fn(epoch: int, lr: float, mu: float, bar) -> dict:
        criterion = make_criterion(params, data.train_counts, epoch, job.device)
        if runner is not None:
            return runner.run_epoch(epoch, lr, mu, criterion, criterion_phase(params, epoch), bar)
        for g in job.optimizer.param_groups:
            g["lr"] = lr
        data.train.set_epoch(epoch)
        return train_one_epoch(fwd, data.train, job.optimizer, mu=mu, epoch=epoch, dist=job.dist, bf16=params["bf16"],
                               criterion=criterion, mixer=mixer, raw_model=model, bar=bar, sam_rho=params["sam_rho"])
    return epoch_fn


def _end_epoch(job: Job, rec: dict, bar) -> None:
    """Score the validation split when asked (keeping the best epoch's weights), then checkpoint and log."""
    params, model, epoch = job.params, job.model, rec["epoch"]
    if params["eval_every"] and epoch % params["eval_every"] == 0 or params["select_best"]:
        rec["val_acc"] = _val_score(model, params, job.data)     # config.check_val_split: never the test set
        if params["select_best"] and (job.best is None or rec["val_acc"] > job.best["val_acc"]):
            job.best = {"epoch": epoch, "val_acc": rec["val_acc"]}
            if job.dist.is_main:
                job.run.save_checkpoint({"model": model.state_dict(), "epoch": epoch, "signature": model.signature()},
                                        "best.pt")
    job.history.append(rec)
    bar.set_postfix(epoch=epoch, loss=f"{rec['loss']:.3f}", acc=f"{rec['train_acc']:.3f}", lr=f"{rec['lr']:.3g}")
    if job.dist.is_main:
        job.run.save_checkpoint({"epoch": epoch, "model": model.state_dict(), "optimizer": job.optimizer.state_dict(),
                                 "history": job.history, "best": job.best, "signature": model.signature(),
                                 "params": params})
        write_json(job.run / "history.json", job.history)
        job.run.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))


def _finish(job: Job, t0: float) -> dict:
    """The evaluated weights (the best epoch's with the last direction under select_best, as the reference),
    the test, validation and training caches, ``metrics.json`` and ``evaluated.pt``."""
    params, model, run, best = job.params, job.model, job.run, job.best
    if params["select_best"] and best is not None:
        D.barrier(job.dist)                             # rank 0 may still be writing best.pt
        direction = model.direction.clone()
        model.load_state_dict(load_checkpoint(run / "best.pt", model.signature())["model"])
        model.direction.copy_(direction)
    caches, metrics = _evaluate(model, params, job.data, params["alpha"])
    metrics.update(loss=params["loss"], epochs_trained=len(job.history), best_epoch=best["epoch"] if best else None,
                   seconds=round(time.time() - t0, 2), world_size=job.dist.world_size)
    if job.dist.is_main:                # the evaluated weights + direction, so `test` can rebuild exactly these
        run.save_checkpoint({"model": model.state_dict(), "epoch": best["epoch"] if best else len(job.history),
                             "signature": model.signature()}, EVALUATED)
        for name, cache in caches:
            cache.save(run / name)
        write_json(run / "metrics.json", metrics)
        run.log("test:\n" + format_table(metrics))
    D.barrier(job.dist)
    D.teardown(job.dist)
    return metrics
