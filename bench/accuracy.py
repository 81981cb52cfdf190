"""Real-data accuracy against the paper's Table 3 and the usual post-hoc peers, through the same code users run
(``lt_kit.training.fit.fit``, then every post-hoc method in ``lt_kit.methods.POSTHOC`` from the run's feature cache).

For each ratio and seed it trains two models: the softmax baseline (bias-free linear head, plain
cross-entropy) and the causal-norm model. Each run's table rows (``lt_kit.evaluation.summary.table_rows``) are: the
head's
own logits (Softmax / De-confound), then every post-hoc method that applies to the head (TDE, logit
adjustment, tau-normalisation) at its paper rule and, with ``--val-per-class N``, at the strength chosen on the
run's balanced validation split (N images per class held out of the training pool first; the head class then
has 5000 - N images). Without it the runs are the reference's (no validation split: Table 3). Published figures
(docs/results.md, with their papers) stand beside each row. ``--epochs`` below 200 compresses the reference
schedule's shape (at least 3 warm-up epochs, and the x0.01 milestones at 60% and 80% of training). Writes JSON +
markdown after every run; ``--table-only`` rebuilds them from the run dirs' feature caches without training.

    python bench/accuracy.py --data-root $CIFAR --ratios 100 --epochs 45 --val-per-class 50
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lt_kit.config import load_params_file, resolve  # noqa: E402
from lt_kit.methods import chosen_by  # noqa: E402
from lt_kit.training.fit import fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Tang et al., NeurIPS 2020, Table 3: overall top-1 %, ResNet-32.
PAPER = {("cifar10_lt", 100): {"De-confound": 71.7, "De-confound-TDE": 80.6},
         ("cifar10_lt", 50): {"De-confound": 77.8, "De-confound-TDE": 83.6},
         ("cifar10_lt", 10): {"De-confound": 86.8, "De-confound-TDE": 88.5},
         ("cifar100_lt", 100): {"De-confound": 40.5, "De-confound-TDE": 44.1},
         ("cifar100_lt", 50): {"De-confound": 46.2, "De-confound-TDE": 50.3},
         ("cifar100_lt", 10): {"De-confound": 58.9, "De-confound-TDE": 59.6}}


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
                 platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return f"CPU {model}, {torch.get_num_threads()} threads"


def schedule(epochs: int) -> dict:
    if epochs >= 200:
        return {"epochs": epochs}
    # At least 3 warm-up epochs: the schedule is stepped at the start of each epoch, so 1 warm-up epoch would
    # start straight at lr 0.2 (seen here: ResNet-32 then never learnt CIFAR-10-LT's six smallest classes).
    return {"epochs": epochs, "warmup_epochs": max(3, round(5 * epochs / 200)),
            "milestones": [round(0.6 * epochs), round(0.8 * epochs)]}


# Published 200-epoch figures (sources in docs/results.md), CIFAR-10-LT, by (ratio, head, method, how) for
# cross-entropy runs and by (ratio, loss, method, how) for the other losses.
PUBLISHED = {
    (100, "logit_adjusted", None, ""): "77.67 (Menon et al., LA loss tau=1); 77.54 (BS, BagofTricks-LT)",
    (50, "logit_adjusted", None, ""): "81.11 (BS, BagofTricks-LT)",
    (100, "ldam_drw", None, ""): "77.0 (TDE paper, from BBN); re-runs 77.7-78.0",
    (50, "ldam_drw", None, ""): "81.0 (TDE paper, from BBN)",
    (10, "ldam_drw", None, ""): "88.2 (TDE paper, from BBN)",
    (100, "linear", None, ""): "70.36 (CE, LDAM-DRW paper)",
    (50, "linear", None, ""): "74.81 (CE, LDAM-DRW paper)",
    (100, "linear", "logit_adjust", "rule"): "77.40 (Menon et al., tau=1)",
    (100, "linear", "logit_adjust", "val"): "80.92 (Menon et al., tau chosen on test)",
    # BagofTricks-LT's tau-norm is a tau = 1 figure: its CIFAR-10 configs (configs/cao_cifar/two_stage/
    # classifier_balance/tau_norm/cifar10_im100.yaml and cifar10_im50.yaml, one family) both set TEST.TAU_NORM.TAU
    # 1.0, and its trick gallery reports errors 27.30 (ratio 100) and 20.22 (ratio 50). So both stand beside the
    # tau = 1 ("rule") row, never beside a validation-chosen tau.
    (100, "linear", "tau_norm", "rule"): "72.70 (BagofTricks-LT, tau=1)",
    (50, "linear", "tau_norm", "rule"): "79.78 (BagofTricks-LT, tau=1)",
    # cRT / LWS: BagofTricks-LT tests the epoch best on validation data (TEST.MODEL_FILE best_model.pth), as Kang
    # et al.'s run_networks.py does, so the figures stand beside the validation-chosen epoch, not lt_kit's last
    # epoch ("rule")
    (100, "linear", "crt", "val"): "74.99 (cRT, BagofTricks-LT)",
    (100, "linear", "lws", "val"): "72.63 (LWS, BagofTricks-LT)",
    **{(r, "causal_norm", None, ""): f"{PAPER[('cifar10_lt', r)]['De-confound']} (TDE paper)" for r in (100, 50, 10)},
    **{(r, "causal_norm", "tde", "rule"): f"{PAPER[('cifar10_lt', r)]['De-confound-TDE']} (TDE paper)"
       for r in (100, 50, 10)},
}


def run_rows(metrics: dict, *, dataset: str, ratio: float, seed: int, seconds: float, run_dir: str) -> list[dict]:
    """One table row per result a run's ``metrics.json`` holds (``lt_kit.evaluation.summary.table_rows``' order)."""
    from lt_kit.evaluation.summary import row_name, rule_metrics
    head, loss = metrics["head"], metrics.get("loss", "ce")
    entries = [(None, "", None, metrics["softmax"])]
    for name, e in (metrics.get("methods") or {}).items():
        if "rule" not in e:                     # unavailable on this run
            continue
        entries.append((name, "rule", e["rule"]["strength"], rule_metrics(metrics, name)))
        if e.get("val"):
            entries.append((name, "val", e["val"]["strength"], e["val"]["metrics"]))
    rows = []
    for method, how, strength, met in entries:
        row = {"dataset": dataset, "ratio": ratio, "head": head, "loss": loss, "method": method, "how": how,
               "strength": strength, "name": row_name(head, method, strength, "val" if how == "val" else "", loss=loss),
               "seed": seed, "metrics": {k: met[k] for k in ("many", "medium", "few", "overall")},
               "head_tail": met["head_tail"], "seconds": seconds, "run_dir": run_dir}
        rows.append({**row, "paper": published(row)})
    return rows


def published(row: dict) -> str | None:
    """The published 200-epoch figure that stands beside a result row (its dataset, ratio, head or loss, method
    and how its strength was chosen), or None."""
    dataset, ratio, head, loss = row["dataset"], int(row["ratio"]), row["head"], row.get("loss", "ce")
    method, how = row["method"], row["how"]
    if dataset == "cifar10_lt":
        return PUBLISHED.get((ratio, head if loss == "ce" else loss, method, how))
    if method in (None, "tde") and head == "causal_norm" and how != "val":
        return PAPER.get((dataset, ratio), {}).get("De-confound" if method is None else "De-confound-TDE")
    return None


def run_name(dataset: str, ratio: float, head: str, seed: int, epochs: int, tag: str = "") -> str:
    """The run dir's name under ``--runs``."""
    return f"{dataset}_r{ratio:g}_{head}{tag}_s{seed}_e{epochs}"


def markdown(rows: list[dict], meta: dict) -> str:
    val = meta.get("val_per_class") or 0
    out = [f"# CIFAR-LT accuracy, ResNet-32 ({meta['machine']})", "",
           f"Command: `{meta['command']}`  ", f"Epochs: {meta['epochs']} (schedule: {meta['schedule']}), "
           f"seeds: {meta['seeds']}, lt_kit {meta['version']}", "",
           *(["Rebuilt from the run dirs' feature caches (`--table-only`); the runs were trained by the same command "
              "without it ('train s': each run's own fit time).", ""] if meta.get("table_only") else []),
           ("Validation split: " + (f"{val} images per class held out of the training pool before the long-tailed "
            f"subset is drawn (head class {5000 - val:,} images at CIFAR-10 scale); 'val split' rows chose their "
            "strength on it (cRT / LWS: their epoch, the authors' procedure), 'paper rule' rows use the paper's "
            "fixed strength, 'last epoch (lt_kit rule)' rows score cRT's / LWS's last epoch." if val else
            "none (the reference's set-up, Table 3); no strength was chosen on data.")), "",
           "| dataset | ratio | method | chosen by | seed | many | medium | few | overall | head | tail | "
           "published (200 epochs) | train s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: "–" if v != v else f"{100 * v:.1f}"  # noqa: E731
    for r in rows:
        m, ht = r["metrics"], r["head_tail"]
        how = chosen_by(r["method"], r["how"])
        out.append(f"| {r['dataset']} | {r['ratio']:g} | {r['name']} | {how} | {r['seed']} | {pct(m['many'])} | "
                   f"{pct(m['medium'])} | {pct(m['few'])} | {pct(m['overall'])} | {pct(ht['head'])} | "
                   f"{pct(ht['tail'])} | {r['paper'] or '–'} | {r['seconds']:.0f} |")
    out += ["", "many: >100 training images, few: <20 (CIFAR-10-LT has no few-shot class: '–'); head / tail: the "
            "classes above / at or below the median training count. Published numbers are their sources' (200 epochs, "
            "other subsets and codebases: docs/results.md); 'Menon et al., tau chosen on test' is their best tau, "
            "chosen on the test set. Test-chosen strengths are in each run's metrics.json as 'for reading, chosen "
            "on test'."]
    if meta.get("ms_per_strength"):
        out += ["", "Time for one strength from the feature cache (logits + metrics, test split, median of "
                "20): " + ", ".join(f"{k} {v:.1f} ms" for k, v in meta["ms_per_strength"].items())]
    return "\n".join(out) + "\n"


def ms_per_strength(run_dirs: list[Path]) -> dict:
    """Median milliseconds for one strength of each post-hoc method (logits + all metrics) from a run's cache."""
    import statistics

    from lt_kit.evaluation.features import FeatureCache
    from lt_kit.evaluation.summary import MethodEvaluator
    from lt_kit.methods import methods_for
    out = {}
    for run in run_dirs:
        cache = FeatureCache.load(run / "features.pt")
        for m in methods_for(cache.head):
            ev = MethodEvaluator(cache, m.name)
            ts = []
            for s in m.grid()[:20]:
                t = time.perf_counter()
                ev.metrics(s)
                ts.append(1000 * (time.perf_counter() - t))
            out[f"{m.name} ({cache.head})"] = statistics.median(ts)
    return out


RECIPE_KEYS = ("augment", "randaugment_ops", "randaugment_magnitude", "cutout", "mixup_alpha", "cutmix_alpha",
               "label_smoothing", "weight_decay")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, help="folder holding cifar-10-batches-py / cifar-100-python")
    ap.add_argument("--datasets", nargs="+", default=["cifar10_lt"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[100, 50, 10])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", action="append", default=[], help="extra key=value for every run")
    ap.add_argument("--heads", nargs="+", default=["linear", "causal_norm"],
                    help="which models to train: HEAD or HEAD:LOSS, e.g. linear causal_norm linear:logit_adjusted "
                         "norm_linear:ldam_drw")
    ap.add_argument("--baseline-set", action="append", default=[],
                    help="extra key=value for the linear (softmax) baseline only, e.g. lr=0.05")
    ap.add_argument("--recipe", default="",
                    help="a params/ preset whose recipe switches (augment, cutout, mixup_alpha, cutmix_alpha, "
                         "label_smoothing, weight_decay) go on every run, e.g. cifar10_lt_resnet32_strong; runs are "
                         "tagged with its last word")
    ap.add_argument("--out", default="bench/results/accuracy", help="prefix of the .json/.md results")
    ap.add_argument("--runs", default="bench/out/accuracy", help="where the run dirs go")
    ap.add_argument("--val-per-class", type=int, default=0,
                    help="balanced validation split per class, drawn first from the training pool (0 = none)")
    ap.add_argument("--table-only", action="store_true",
                    help="no training: rebuild the table from the run dirs' feature caches (same arguments)")
    args = ap.parse_args()
    from lt_kit.config import parse_sets
    extra, baseline_extra = parse_sets(args.set), parse_sets(args.baseline_set)
    recipe = {k: v for k, v in load_params_file(ROOT / "params" / f"{args.recipe}.yaml").items() if k in RECIPE_KEYS} \
        if args.recipe else {}
    meta = {"machine": machine(), "epochs": args.epochs, "schedule": schedule(args.epochs), "seeds": args.seeds,
            "command": "python " + " ".join(a.replace(args.data_root, "$CIFAR") for a in sys.argv),
            "version": __import__("lt_kit").__version__,
            "val_per_class": args.val_per_class, "table_only": args.table_only, "recipe": recipe,
            "torch": torch.__version__, "started": time.strftime("%Y-%m-%d %H:%M")}
    rows, run_dirs = [], []
    for ds in args.datasets:
        preset = load_params_file(ROOT / "params" / f"{ds}_resnet32.yaml")
        for ratio in args.ratios:
            for seed in args.seeds:
                for spec in args.heads:
                    head, _, loss = spec.partition(":")
                    loss = loss or "ce"
                    own = baseline_extra if head == "linear" and loss == "ce" else {}
                    params = resolve({**preset, **schedule(args.epochs), "data_root": args.data_root, "head": head,
                                      "loss": loss,
                                      "imbalance_ratio": ratio, "seed": seed, "device": args.device,
                                      "val_per_class": args.val_per_class, **recipe, **extra, **own})
                    tag = ("" if loss == "ce" else f"_{loss}") \
                        + (f"_{args.recipe.rsplit('_', 1)[-1]}" if recipe else "") \
                        + "".join(f"_{k}{v}" for k, v in own.items()) + (
                        f"_val{args.val_per_class}" if args.val_per_class else "")
                    run = Path(args.runs) / run_name(ds, ratio, head, seed, args.epochs, tag)
                    if args.table_only:
                        m, secs = rescore(run)
                    else:
                        t = time.time()
                        m = fit(params, run, overwrite=True, progress=False)
                        secs = time.time() - t
                    new = run_rows(m, dataset=ds, ratio=ratio, seed=seed, seconds=secs, run_dir=str(run))
                    rows += new
                    run_dirs.append(run)
                    print(f"{run.name}: {secs:.0f}s", json.dumps({r["name"]: round(100 * r["metrics"]["overall"], 2)
                                                                 for r in new}), flush=True)
                    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
                    Path(args.out + ".md").write_text(markdown(rows, meta))
    meta["ms_per_strength"] = ms_per_strength(run_dirs)
    # groups over seeds (same parameters but the seed, same subset): lt_kit's one implementation of mean ± sd
    from lt_kit.views.report import compare_runs
    groups = compare_runs([str(p) for p in run_dirs])
    md = markdown(rows, meta) + "\n## Mean ± sample sd over seeds (`python -m lt_kit compare`)\n\n" + groups.markdown()
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    Path(args.out + ".md").write_text(md)
    print(md)


def rescore(run: Path) -> tuple[dict, float]:
    """A finished run's metrics recomputed from its feature caches with the current methods (cRT and LWS
    included: the training cache is built from evaluated.pt when the run predates it), and its train time."""
    from lt_kit.training.score import run_summary
    m = run_summary(run)
    return m, float(m.get("seconds", float("nan")))


if __name__ == "__main__":
    main()
