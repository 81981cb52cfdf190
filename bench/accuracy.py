"""Real-data accuracy against the paper's Table 3, through the same code users run (``lt_kit.train.fit``).

For each ratio and seed it trains two models: the softmax baseline (bias-free linear head, plain
cross-entropy) and the causal-norm model, which gives De-confound (alpha = 0) and De-confound-TDE (the
preset alpha) from one training. ``--epochs`` below 200 compresses the reference schedule's shape
(at least 3 warm-up epochs, and the x0.01 milestones at 60% and 80% of training). Writes JSON + markdown after every run.

    python bench/accuracy.py --data-root /path/holding/cifar-10-batches-py --ratios 100 --epochs 15
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
from lt_kit.train import fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Paper Table 3 (reference-spec.md §7.2): overall top-1 %, ResNet-32, mean of 2 runs.
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


def run_name(dataset: str, ratio: float, head: str, seed: int, epochs: int, tag: str = "") -> str:
    """The run dir's name under ``--runs`` (bench/accuracy_parallel.py finds runs by it)."""
    return f"{dataset}_r{ratio:g}_{head}{tag}_s{seed}_e{epochs}"


def markdown(rows: list[dict], meta: dict) -> str:
    out = [f"# CIFAR-LT accuracy, ResNet-32 ({meta['machine']})", "",
           f"Command: `{meta['command']}`  ", f"Epochs: {meta['epochs']} (schedule: {meta['schedule']}), "
           f"seeds: {meta['seeds']}, lt_kit {meta['version']}", "",
           "| dataset | ratio | method | seed | many | medium | few | overall | paper overall | train s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: "–" if v != v else f"{100 * v:.1f}"  # noqa: E731
    for r in rows:
        m = r["metrics"]
        out.append(f"| {r['dataset']} | {r['ratio']:g} | {r['method']} | {r['seed']} | {pct(m['many'])} | "
                   f"{pct(m['medium'])} | {pct(m['few'])} | {pct(m['overall'])} | {r['paper'] or '–'} | {r['seconds']:.0f} |")
    out += ["", "many: >100 training images, few: <20 (CIFAR-10-LT has no few-shot class: '–'). "
            "Paper numbers: Table 3 of Tang et al. 2020 (200 epochs, mean of 2 runs); the softmax baseline is not in it."]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, help="folder holding cifar-10-batches-py / cifar-100-python")
    ap.add_argument("--datasets", nargs="+", default=["cifar10_lt"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[100, 50, 10])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", action="append", default=[], help="extra key=value for every run")
    ap.add_argument("--heads", nargs="+", default=["linear", "causal_norm"], help="which models to train")
    ap.add_argument("--baseline-set", action="append", default=[],
                    help="extra key=value for the linear (softmax) baseline only, e.g. lr=0.05")
    ap.add_argument("--out", default="bench/results/accuracy", help="prefix of the .json/.md results")
    ap.add_argument("--runs", default="bench/out/accuracy", help="where the run dirs go")
    args = ap.parse_args()
    from lt_kit.config import parse_sets
    extra, baseline_extra = parse_sets(args.set), parse_sets(args.baseline_set)
    meta = {"machine": machine(), "epochs": args.epochs, "schedule": schedule(args.epochs), "seeds": args.seeds,
            "command": "python " + " ".join(sys.argv), "version": __import__("lt_kit").__version__,
            "torch": torch.__version__, "started": time.strftime("%Y-%m-%d %H:%M")}
    rows = []
    for ds in args.datasets:
        preset = load_params_file(ROOT / "params" / f"{ds}_resnet32.yaml")
        for ratio in args.ratios:
            for seed in args.seeds:
                for head in args.heads:
                    own = baseline_extra if head == "linear" else {}
                    params = resolve({**preset, **schedule(args.epochs), "data_root": args.data_root, "head": head,
                                      "imbalance_ratio": ratio, "seed": seed, "device": args.device, **extra, **own})
                    tag = "".join(f"_{k}{v}" for k, v in own.items())
                    run = Path(args.runs) / run_name(ds, ratio, head, seed, args.epochs, tag)
                    t = time.time()
                    m = fit(params, run, overwrite=True, progress=False)
                    secs = time.time() - t
                    paper = PAPER.get((ds, int(ratio)), {})
                    entries = [(f"Softmax (linear, lr {params['lr']:g})", m["softmax"], None)] if head == "linear" else [
                        ("De-confound", m["softmax"], paper.get("De-confound")),
                        (f"De-confound-TDE (a={params['alpha']:g})", m["tde"], paper.get("De-confound-TDE"))]
                    for name, met, ref in entries:
                        rows.append({"dataset": ds, "ratio": ratio, "method": name, "seed": seed, "paper": ref,
                                     "metrics": {k: met[k] for k in ("many", "medium", "few", "overall")},
                                     "head_tail": met["head_tail"], "seconds": secs, "run_dir": str(run)})
                    print(f"{run.name}: {secs:.0f}s", json.dumps({e[0]: round(100 * e[1]['overall'], 2) for e in entries}),
                          flush=True)
                    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
                    Path(args.out + ".md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
