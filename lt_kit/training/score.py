"""Scoring a finished run: any post-hoc method at any strength, from its feature cache (``python -m lt_kit test``).

The cache is rebuilt from ``evaluated.pt`` (the weights and direction ``fit`` evaluated) when it is missing.
Each call appends one line to the run's ``evaluations.jsonl``; ``metrics.json`` is never rewritten.
"""
from __future__ import annotations

import json
import time

from lt_kit.errors import LtKitError
from lt_kit.evaluation.features import FeatureCache, cache_features
from lt_kit.evaluation.summary import MethodEvaluator, format_rows, row_name
from lt_kit.methods import POSTHOC, applies, get_method
from lt_kit.runs.rundir import EVALUATED, RunDir, load_checkpoint
from lt_kit.training.build import build_data, build_model, resolve_device


def score_run(run_dir, *, method: str | None = None, strength: float | None = None, alpha: float | None = None,
             checkpoint=None, device: str | None = None) -> dict:
    """Score a run dir with a post-hoc ``method`` (``methods.POSTHOC``: tde, logit_adjust, tau_norm) at
    ``strength`` (default: the method's paper rule); ``alpha`` is ``method="tde", strength=alpha``.

    Uses the feature cache; a missing cache is rebuilt from ``evaluated.pt``, the weights and direction that
    ``fit`` evaluated (never from another epoch). ``checkpoint``: score that file instead (one backbone pass,
    its cache is not kept). The run's ``metrics.json`` is its own evaluation and is never rewritten; each call
    appends one line to ``evaluations.jsonl`` saying which method, strength and checkpoint gave it.
    Returns ``{"method", "strength", "head", "metrics", ...}``.
    """
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
    out = {"method": method, "strength": strength, "head": cache.head, "loss": params.get("loss", "ce"),
           "checkpoint": str(checkpoint) if checkpoint
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
    cache = cache_features(model, data.test, params, data.train_counts, data.class_names)
    if checkpoint is None:
        cache.save(run / "features.pt")
        if data.val is not None and not (run / "val_features.pt").is_file():
            cache_features(model, data.val, params, data.train_counts, data.class_names).save(run / "val_features.pt")
    return cache


def format_test(result: dict) -> str:
    """One `test` call's result in the run table's format."""
    return format_rows([(row_name(result["head"], result["method"], result["strength"], loss=result.get("loss", "ce")),
                         result["metrics"])],
                       result["thresholds"])
