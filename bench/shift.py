"""The cost of a run's label-shift table (every evaluation x every protocol prior) and calibration table, from
its feature caches (``evaluation/analysis.py``). Goal: under 2 s for a CIFAR-10 run's caches.

Timed per repeat, each on a fresh ``Analysis`` (nothing kept from the repeat before):
  build: ``analyse(params, caches)``: every evaluation's logits, cRT and LWS fitted on the training-feature cache
      (each epoch scored on the validation and test caches) -- the one-off part a notebook pays once per run;
  shift: ``shift_table(a, ["all"])``: 12 priors, the prior-aware choice of every method on the validation split;
  calibration: ``calibration_table(a)``: ECE / NLL / reliability overall and many / medium / few, a temperature
      fitted on the validation split per evaluation;
  gaps (for reading): ``paired_gaps(a, "tde")`` with 10,000 resamples;
  adapt (``--adapt``): ``adaptation_table(a)`` (``python -m lt_kit adapt``'s table, ``evaluation/adaptation.py``):
      the five default priors x 10 sub-sampled test sets, EM and BBSE on each, every method adapted;
  explorer (``--explorer``): the live explorer on the same caches (``views.explorer.AlphaExplorer.benchmark``):
      median and worst of 20 strength moves and of 20 test-prior changes (along the control, "estimated"
      included), each the maths, the redraw and the PNG; goal: a prior change under 50 ms (median).

The caches: ``--run-dir`` (loaded, or rebuilt from ``evaluated.pt``, once, before timing); by default a made run:
synthetic caches shaped like a CIFAR-10-LT (ratio 100) ResNet-32 causal-norm run with a 50-per-class validation
split (10,000 test, 500 validation, 12,406 training images, 128 features); ``--smoke`` trains params/smoke.yaml
(digits, 3 epochs, 5 validation images per class) in a temporary folder instead, whose figure is small because the
run is (500 test images).

Prints progress to stderr and one JSON line to stdout last.

    python bench/shift.py [--run-dir RUN | --smoke] [--adapt] [--explorer] [--repeat 5] [--out bench/results]
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CpuLoad, contention_note, machine_info, machine_lines, median, write_results  # noqa: E402

from lt_kit.config import resolve  # noqa: E402
from lt_kit.data.datasets import long_tail_counts  # noqa: E402
from lt_kit.evaluation.adaptation import adaptation_table  # noqa: E402
from lt_kit.evaluation.analysis import analyse, calibration_table, paired_gaps, shift_table  # noqa: E402
from lt_kit.evaluation.features import FeatureCache  # noqa: E402

GOAL_S = 2.0
REDRAW_GOAL_MS = 50.0


def made_caches(dim: int = 128, classes: int = 10, ratio: float = 100.0, val_per_class: int = 50,
                test_per_class: int = 1000, seed: int = 0) -> tuple[dict, dict]:
    """Parameters and {"test", "val", "train"} caches shaped like a CIFAR-10-LT causal-norm run: ReLU-positive
    class-clustered features, a shared component the head leans on the more a class was trained, a momentum
    direction near the features' mean (``bench/alpha.py``'s recipe)."""
    g = torch.Generator().manual_seed(seed)
    counts = long_tail_counts(classes, 5000, ratio)
    centres = torch.randn(classes, dim, generator=g).abs() * (torch.rand(classes, dim, generator=g) < 0.3)
    shared = torch.rand(dim, generator=g)
    headness = torch.tensor(counts, dtype=torch.float32).log() / torch.tensor(float(max(counts))).log()
    weight = centres + 0.5 * headness[:, None] * shared + 0.3 * torch.randn(classes, dim, generator=g)
    params = resolve({"dataset": "cifar10_lt", "val_per_class": val_per_class})

    def cache(per_class) -> FeatureCache:
        labels = torch.arange(classes).repeat_interleave(torch.as_tensor(per_class))
        feats = torch.relu(0.6 * centres[labels] + shared + torch.randn(len(labels), dim, generator=g))
        return FeatureCache(feats, labels, weight, feats.mean(0) * 10, "causal_norm", params["num_heads"],
                            params["tau"], params["gamma"], counts, [f"c{i}" for i in range(classes)],
                            params["many_threshold"], params["few_threshold"])
    caches = {"test": cache([test_per_class] * classes), "val": cache([val_per_class] * classes),
              "train": cache(counts)}
    caches["test"].direction = caches["val"].direction = caches["train"].direction = caches["train"].features.mean(0)
    return params, caches


def explorer_bench(params: dict, caches: dict) -> dict:
    """``AlphaExplorer.benchmark(20)`` on the caches (the figure built first, not timed), with its priors."""
    from lt_kit.views.explorer import AlphaExplorer
    ex = AlphaExplorer(caches["test"], preset_alpha=params["alpha"], val_cache=caches["val"],
                       train_cache=caches["train"], params=params)
    ex.render()
    b = ex.benchmark(20)
    return {**b, "priors": list(ex.priors), "meets_goal": b["prior_median_ms"] < REDRAW_GOAL_MS}


def smoke_run(folder: Path) -> Path:
    from lt_kit.config import load_params_file
    from lt_kit.training.fit import fit
    run = folder / "smoke"
    root = Path(__file__).resolve().parents[1]
    fit(resolve({**load_params_file(root / "params" / "smoke.yaml"), "val_per_class": 5}), run, progress=False)
    return run


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", help="a finished run (default: made CIFAR-10-LT-shaped caches)")
    p.add_argument("--smoke", action="store_true", help="train params/smoke.yaml in a temporary folder and time it")
    p.add_argument("--adapt", action="store_true", help="also time adaptation_table (lt_kit adapt: the default "
                   "priors x 10 draws)")
    p.add_argument("--explorer", action="store_true", help="also time the explorer's strength moves and test-prior "
                   "changes on the same caches (median of 20 each)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="write shift.json and shift.md into this folder")
    p.add_argument("--note", default="", help="load note for the markdown")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.run_dir or args.smoke:
            from lt_kit.training.score import run_caches
            run = Path(args.run_dir) if args.run_dir else smoke_run(Path(tmp))
            params, caches = run_caches(run)
            what = f"run dir {run.name}" if args.run_dir else "smoke run (digits, 3 epochs, 5 val images per class)"
        else:
            params, caches = made_caches()
            what = "made caches shaped like CIFAR-10-LT r100 (ResNet-32, 50 val images per class)"
        sizes = {k: (0 if c is None else len(c.labels)) for k, c in caches.items()}
        print(f"shift bench: {what}; images {sizes}", file=sys.stderr, flush=True)
        times: dict[str, list] = {"build": [], "shift": [], "calibration": [], "gaps": [],
                                  **({"adapt": []} if args.adapt else {})}
        with CpuLoad() as load:
            for i in range(args.repeat):
                t = time.perf_counter()
                a = analyse(params, caches)
                times["build"].append(time.perf_counter() - t)
                ref = "tde" if "tde" in a.evaluations else "softmax"
                for key, fn, arg in (("shift", shift_table, ["all"]), ("calibration", calibration_table, None),
                                     ("gaps", paired_gaps, ref),
                                     *((("adapt", adaptation_table, None),) if args.adapt else ())):
                    t = time.perf_counter()
                    fn(a) if arg is None else fn(a, arg)
                    times[key].append(time.perf_counter() - t)
                print(f"repeat {i + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()),
                      file=sys.stderr, flush=True)
            redraw = explorer_bench(params, caches) if args.explorer else None
    sec = {k: round(median(v), 4) for k, v in times.items()}
    tables = round(sec["shift"] + sec["calibration"], 4)
    res = {"what": what, "images": sizes, "classes": int(caches["test"].weight.shape[0]),
           "evaluations": len(a.evaluations), "priors": len(shift_table(a, ["all"])["priors"]),
           "seconds": sec, "shift_and_calibration_s": tables, "with_build_s": round(tables + sec["build"], 4),
           "goal_s": GOAL_S, "meets_goal": tables < GOAL_S, "repeat": args.repeat, "threads": args.threads,
           "others_cores": load.others_cores, **({"explorer": redraw} if redraw else {})}
    if args.out:
        command = shlex.join(["python", "bench/shift.py", *(sys.argv[1:] if argv is None else argv)])
        info = machine_info(torch.device("cpu"))
        md = "\n".join([
            "# Label-shift and calibration tables from a run's caches", "",
            f"{what}: {sizes['test']:,} test, {sizes['val']:,} validation, {sizes['train']:,} training images, "
            f"{res['classes']} classes; {res['evaluations']} evaluations x {res['priors']} priors. Median of "
            f"{args.repeat} repeats, each on a fresh `Analysis`.", "",
            *machine_lines(info, contention_note(load.others_cores, args.note)), f"- Command: `{command}`", "",
            "| part | seconds |", "|---|---:|",
            f"| `analyse` (logits; cRT / LWS fitted, each epoch scored) | {sec['build']:.3f} |",
            f"| `shift_table(a, ['all'])` | {sec['shift']:.3f} |",
            f"| `calibration_table(a)` | {sec['calibration']:.3f} |",
            f"| shift + calibration (goal < {GOAL_S:g} s) | {tables:.3f} |",
            f"| `paired_gaps(a, 'tde')`, 10,000 resamples (for reading) | {sec['gaps']:.3f} |",
            *([f"| `adaptation_table(a)`: 5 priors x 10 draws, EM + BBSE, every method adapted | "
               f"{sec['adapt']:.3f} |"] if args.adapt else []),
            *(["", f"The explorer on these caches (`AlphaExplorer.benchmark(20)`, {len(redraw['priors'])} entries on "
               "the prior control): each update is the maths, the redraw and the PNG.", "",
               "| update | median ms | worst ms | median CPU ms |", "|---|---:|---:|---:|",
               f"| strength move | {redraw['median_ms']} | {redraw['max_ms']} | {redraw['median_cpu_ms']} |",
               f"| test-prior change (goal < {REDRAW_GOAL_MS:g} ms) | {redraw['prior_median_ms']} | "
               f"{redraw['prior_max_ms']} | {redraw['prior_median_cpu_ms']} |"] if redraw else [])])
        for path in write_results(args.out, "shift", {**res, "machine": info, "command": command}, md):
            print(f"wrote {path}", file=sys.stderr)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
