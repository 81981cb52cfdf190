"""Scoring a finished run: any post-hoc method at any strength, from its feature cache (``python -m lt_kit test``).

The cache is rebuilt from ``evaluated.pt`` (the weights and direction ``fit`` evaluated) when it is missing.
Each call appends one line to the run's ``evaluations.jsonl``; ``metrics.json`` is never rewritten.
"""
from __future__ import annotations

import json
import time
import warnings

from lt_kit.errors import LtKitError
from lt_kit.evaluation.decoupled import decoupled_summary
from lt_kit.evaluation.features import FeatureCache, cache_features, cache_train_features
from lt_kit.evaluation.summary import MethodEvaluator, format_rows, row_name, summary, two_stage_note
from lt_kit.methods import DECOUPLED, POSTHOC, applies, get_method
from lt_kit.runs.rundir import EVALUATED, RunDir, load_checkpoint
from lt_kit.training.build import build_data, build_model, resolve_device, train_pass_loaders


def score_run(run_dir, *, method: str | None = None, strength: float | None = None, alpha: float | None = None,
              checkpoint=None, device: str | None = None, overrides: dict | None = None,
              data_root: str | None = None) -> dict:
    """Score a run dir with a post-hoc ``method`` (``methods.POSTHOC``: tde, logit_adjust, tau_norm) at
    ``strength`` (default: the method's paper rule); ``alpha`` is ``method="tde", strength=alpha``. A two-stage
    ``method`` (``methods.DECOUPLED``: crt, lws) has no strength: it is fitted on the training-feature cache
    (built from ``evaluated.pt`` when missing) with the run's settings, or ``overrides`` of its own keys.

    Uses the feature cache; a missing cache is rebuilt from ``evaluated.pt``, the weights and direction that
    ``fit`` evaluated (never from another epoch). ``checkpoint``: score that file instead (one backbone pass,
    its cache is not kept). ``data_root``: where the run's data lies on this machine, for a rebuild (the run's
    ``params.yaml`` names where it was trained). The run's ``metrics.json`` is its own evaluation and is never
    rewritten; each call appends one line to ``evaluations.jsonl`` saying which method, strength and checkpoint gave it.
    Returns ``{"method", "strength", "head", "metrics", ...}``.
    """
    run = RunDir(run_dir)
    params = {**run.params(), **({"data_root": str(data_root)} if data_root else {})}   # where the data is here
    if method in DECOUPLED:
        if strength is not None or alpha is not None:
            raise LtKitError(f"{method} has no strength (it re-trains a classifier on the training-feature cache); "
                             f"set its epochs, lr and batch with --set {', '.join(DECOUPLED[method].keys)}")
        return _score_decoupled(run, params, method, checkpoint, device, overrides or {})
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
           else None, "metrics": metrics, "thresholds": cache.thresholds()}
    with open(run / "evaluations.jsonl", "a") as f:
        f.write(json.dumps({**out, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    run.log(f"test method={method} strength={strength}" + (f" checkpoint={checkpoint}" if checkpoint else ""))
    return out


def test_run(run_dir, **kwargs) -> dict:
    """The name of :func:`score_run` before lt_kit 0.2.0: the same call (every keyword of ``score_run``), with a
    FutureWarning; removed in lt_kit 0.3.0."""
    warnings.warn("test_run() is now score_run() (renamed in lt_kit 0.2.0); test_run still works but is removed in "
                  "lt_kit 0.3.0", FutureWarning, stacklevel=2)
    return score_run(run_dir, **kwargs)


test_run.__test__ = False       # not a test for pytest, wherever a test module imports it


def run_caches(run_dir, *, passes: int | None = None, device: str | None = None,
               data_root: str | None = None) -> tuple[dict, dict]:
    """A finished run's parameters (defaults filled in) and its {"test", "val", "train"} feature caches ("val":
    None without a validation split), each loaded or built from ``evaluated.pt``. ``passes``: a training cache
    of that many passes instead of the run's own (built, not kept)."""
    from lt_kit.config import DEFAULTS
    run = RunDir(run_dir)
    params = {**DEFAULTS, **run.params(), **({"data_root": str(data_root)} if data_root else {})}
    fresh = passes is not None and passes != params["train_feature_passes"]
    if passes is not None:
        params["train_feature_passes"] = passes
    return params, _load_or_rebuild(run, params, None, device, train=True, fresh_train=fresh)


def run_analysis(run_dir, *, device: str | None = None, data_root: str | None = None):
    """A finished run's ``evaluation.analysis.Analysis`` (every evaluation's test and validation logits, the
    two-stage methods fitted on the training-feature cache) for ``shift_table``, ``calibration_table`` and
    ``paired_gaps``; the caches are loaded, or built from ``evaluated.pt`` as :func:`run_caches` does."""
    from lt_kit.evaluation.analysis import analyse
    return analyse(*run_caches(run_dir, device=device, data_root=data_root))


def run_summary(run_dir, *, device: str | None = None, data_root: str | None = None) -> dict:
    """A finished run's ``metrics.json`` content recomputed from its feature caches with the current methods,
    the two-stage ones included (a missing cache, the training one of a run older than them for instance, is
    built from ``evaluated.pt``; ``data_root``: where its data lies here). For tables; the run's own
    ``metrics.json`` is not rewritten."""
    from lt_kit.runs.rundir import read_json
    run = RunDir(run_dir)
    params, caches = run_caches(run_dir, device=device, data_root=data_root)
    m = summary(caches["test"], params["alpha"], caches["val"], caches["train"], params)
    old = read_json(run / "metrics.json") if (run / "metrics.json").is_file() else {}
    keep = ("loss", "epochs_trained", "best_epoch", "seconds", "world_size")
    return {**m, **{k: old[k] for k in keep if k in old}, "loss": params.get("loss", "ce")}


def _score_decoupled(run: RunDir, params: dict, method: str, checkpoint, device, overrides: dict) -> dict:
    """``test --method crt|lws``: the last epoch (lt_kit's fixed rule) and, with a validation split, the epoch chosen
    on it (the authors' procedure)."""
    from lt_kit.config import resolve
    bad = sorted(set(overrides) - set(DECOUPLED[method].keys) - {"train_feature_passes"})
    if bad:
        raise LtKitError(f"--set {', '.join(bad)}: {method} reads only {', '.join(DECOUPLED[method].keys)} and "
                         "train_feature_passes (the run's other parameters are fixed by its training)")
    params = resolve({**params, **overrides})  # checked like any parameter; a run older than a key: its default
    if not params["train_feature_passes"]:
        raise LtKitError(f"{method} re-trains on the training-feature cache, which train_feature_passes=0 turns "
                         "off; add --set train_feature_passes=1")
    caches = _load_or_rebuild(run, params, checkpoint, device, train=True,
                              fresh_train="train_feature_passes" in overrides)
    cache, train, val = caches["test"], caches["train"], caches["val"]
    entry = decoupled_summary(method, train, cache, params, val)
    out = {"method": method, "strength": entry["rule"]["strength"], "head": cache.head,
           "loss": params.get("loss", "ce"), "checkpoint": str(checkpoint) if checkpoint else None,
           "metrics": entry["rule"]["metrics"], "val": entry["val"], "settings": entry["settings"],
           "passes": entry["passes"], "seconds": entry["seconds"], "prior_check": entry.get("prior_check"),
           "thresholds": cache.thresholds()}
    with open(run / "evaluations.jsonl", "a") as f:
        f.write(json.dumps({**out, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    run.log(f"test method={method} settings={entry['settings']} passes={entry['passes']}"
            + (f" checkpoint={checkpoint}" if checkpoint else ""))
    return out


def _load_or_rebuild(run: RunDir, params: dict, checkpoint, device, *, train: bool = False,
                     fresh_train: bool = False):
    """The test cache (``train=False``), or {"test", "val", "train"} caches (``train=True``), from the run's
    cache files; missing ones are rebuilt from ``evaluated.pt`` (or ``checkpoint``: then nothing is kept).
    ``fresh_train``: rebuild the training cache (another ``train_feature_passes``) and do not keep it."""
    files = {"test": run / "features.pt", "val": run / "val_features.pt", "train": run / "train_features.pt"}
    from lt_kit.config import DEFAULTS, val_split_source
    has_val = val_split_source({**DEFAULTS, **params}) is not None   # a run older than a key: its default
    passes = params.get("train_feature_passes", 1)
    splits = ("test", "val", "train") if train and passes else ("test", "val") if train else ("test",)

    def kept(split):                    # read from and written to the run's file (else built and dropped)
        return checkpoint is None and not (split == "train" and fresh_train)

    def present(split):
        return kept(split) and (files[split].is_file() or (split == "val" and not has_val))

    if all(present(s) for s in splits):
        out = {"train": None, **{s: FeatureCache.load(files[s]) if files[s].is_file() else None for s in splits}}
        return out if train else out["test"]
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
    def make(split):
        if split == "train":
            return cache_train_features(model, train_pass_loaders(params, dev, data), params, data.train_counts,
                                        data.class_names, data.group_counts)
        loader = data.test if split == "test" else data.val
        return None if loader is None else cache_features(model, loader, params, data.train_counts, data.class_names,
                                                          data.group_counts)
    out = {"train": None}                   # train_feature_passes=0: no training cache, no two-stage method
    for split in splits:
        if kept(split) and files[split].is_file():
            out[split] = FeatureCache.load(files[split])
            continue
        out[split] = make(split)
        if kept(split) and out[split] is not None:
            out[split].save(files[split])
    if not train and checkpoint is None and data.val is not None and not files["val"].is_file():
        make("val").save(files["val"])
    return out if train else out["test"]


def format_test(result: dict) -> str:
    """One `test` call's result in the run table's format (a two-stage method: its last-epoch row, then the
    epoch chosen on the validation split, then the note that names the two rows as the run table names them,
    its settings and how long the fit took)."""
    head, method, loss = result["head"], result["method"], result.get("loss", "ce")
    rows = [(row_name(head, method, result["strength"], loss=loss), result["metrics"])]
    notes = ()
    if method in DECOUPLED:
        if result.get("val"):
            rows.append((row_name(head, method, result["val"]["strength"], "val", loss=loss), result["val"]["metrics"]))
        s = result["settings"]
        notes = (*two_stage_note({method: {"rule": result["metrics"], "val": result.get("val")}}),
                 f"{DECOUPLED[method].label}: {s['epochs']} epochs, lr {s['lr']:g}, batch {s['batch']}, "
                 f"weight decay {s['weight_decay']:g}, cosine, "
                 f"class-aware sampling; {result['passes']} pass(es) over the training subset; "
                 f"fit {result['seconds']:.2f} s",)
        pc = result.get("prior_check")
        if pc:
            notes += (f"logit adjustment on top, tau chosen on the validation split: {pc['la_tau_chosen_on_val']:g} "
                      f"(val {100 * pc['val_overall_at_chosen']:.2f}% vs {100 * pc['val_overall_at_0']:.2f}% at 0)",)
    return format_rows(rows, result["thresholds"], notes)
