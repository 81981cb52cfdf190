"""cRT and LWS from the feature caches of finished runs: what the number of training-feature passes (K) changes,
and the seconds one fit takes on this machine (the backbone never runs for the fit itself).

For each run dir and each K: the training-feature cache is built (K = 1: the subset's images as they are;
K > 1: K passes with the training crop and flip) and timed, then cRT and LWS are fitted with the run's settings
(Kang et al.'s by default) and scored on the test split at their last epoch (lt_kit's rule) and at the epoch
chosen on the run's validation split (the authors' procedure); logit adjustment on top is chosen on the
validation split as a check of the prior.

    python bench/decoupled.py --runs RUN_DIR [RUN_DIR ...] --passes 1 2 4 --out bench/results/decoupled_NAME
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from accuracy import machine  # noqa: E402

from lt_kit.evaluation.decoupled import decoupled_summary  # noqa: E402
from lt_kit.evaluation.summary import row_name  # noqa: E402
from lt_kit.methods import DECOUPLED, chosen_by, decoupled_for  # noqa: E402
from lt_kit.training.score import run_caches  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="finished run dirs")
    ap.add_argument("--passes", nargs="+", type=int, default=[1, 2, 4], help="K values to try")
    ap.add_argument("--methods", nargs="+", default=None, help="crt and/or lws (default: both)")
    ap.add_argument("--out", required=True, help="results path without extension (.json and .md are written)")
    args = ap.parse_args(argv)
    rows = []
    for run in args.runs:
        for k in args.passes:
            t = time.time()
            params, caches = run_caches(run, passes=k)
            build = time.time() - t
            for m in decoupled_for(caches["test"].head):
                if args.methods and m.name not in args.methods:
                    continue
                e = decoupled_summary(m.name, caches["train"], caches["test"], params, caches["val"])
                head, loss = caches["test"].head, params.get("loss", "ce")
                row = {"run": Path(run).name, "bf16": params["bf16"], "seed": params["seed"], "method": m.name,
                       "passes": k, "name": row_name(head, m.name, e["rule"]["strength"], loss=loss),
                       "rule_overall": e["rule"]["metrics"]["overall"],
                       "rule_tail": e["rule"]["metrics"]["head_tail"]["tail"],
                       "val_epoch": e["val"]["strength"] if e["val"] else None,
                       "val_overall": e["val"]["metrics"]["overall"] if e["val"] else None,
                       "la_tau_on_val": (e.get("prior_check") or {}).get("la_tau_chosen_on_val"),
                       "fit_seconds": e["seconds"], "cache_seconds": round(build, 1),
                       "train_images": e["train_images"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    meta = {"machine": machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "command": "python " + " ".join(sys.argv), "time": time.strftime("%Y-%m-%d %H:%M")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    md = markdown(rows, meta)
    Path(args.out + ".md").write_text(md)
    print(md, end="")


def markdown(rows: list[dict], meta: dict) -> str:
    """The results page: the rows' two-stage figures under the labels the run tables give them
    (``lt_kit.methods.chosen_by``: the last epoch is lt_kit's rule, the validation-chosen epoch the authors'
    procedure)."""
    method = rows[0]["method"] if rows else next(iter(DECOUPLED))      # cRT and LWS name their rows alike
    last, val = chosen_by(method, "rule"), chosen_by(method, "val")
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    md = [f"# cRT and LWS from the feature cache ({meta['machine']})", "", f"Command: `{meta['command']}`", "",
          "K: passes over the training subset in the training-feature cache (1 = the images as they are; K > 1 = "
          f"K passes with the training crop and flip). 'last epoch': the last epoch's classifier (Kang et al.'s "
          f"schedule), the run tables' '{last}' row; 'val epoch': the epoch chosen on the run's validation split, "
          f"the run tables' '{val}' row (Kang et al.'s code keeps the epoch best on validation data); 'LA tau on "
          "val': logit adjustment on top, its tau chosen on the validation split over -1..2 (near 0: the "
          "class-balanced stage already removed the prior). Fit seconds: the second stage alone, from the cache; "
          "cache seconds: the K backbone passes that build it.", "",
          "| run | method | K | overall (last epoch) | tail (last epoch) | val epoch | overall (val epoch) | "
          "LA tau on val | fit s | cache s | train images |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['run']} | {r['name']} | {r['passes']} | {pct(r['rule_overall'])} | "
                  f"{pct(r['rule_tail'])} | {r['val_epoch'] or '–'} | {pct(r['val_overall'])} | {r['la_tau_on_val']} | "
                  f"{r['fit_seconds']:.2f} | {r['cache_seconds']:.1f} | {r['train_images']} |")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
