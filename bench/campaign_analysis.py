"""The analysis a researcher needs to trust a gap, on the 200-epoch campaign's recorded rows that keep their
weights (``bench/results/campaign_e200/runs/<row>/evaluated.pt``): for each one,

1. **re-score**: the run dir is copied to a work folder (never into the repository), its feature caches are
   rebuilt from ``evaluated.pt`` and the data (``--data-root``), and ``metrics.json`` is recomputed
   (``evaluation.summary.summary``, what ``fit`` wrote) and compared with the recorded one, value by value:
   "identical" when every number is bit for bit the same, else the largest difference and where, and the
   largest change of an overall accuracy (on another CPU kind, or bf16 emulated, kernels round differently);
2. **label shift**: ``shift_table`` over every protocol prior (each method at its rule, its validation choice and
   its prior-aware choice, logit adjustment's oracle), and how far TDE's prior-aware alpha moves;
3. **calibration**: ``calibration_table`` (15-bin ECE, NLL, before and after a validation-fitted temperature);
4. **paired gaps**: ``paired_gaps`` against the row's reference, TDE at its rule on a causal-norm head, else logit
   adjustment at its rule (10,000 paired-bootstrap resamples, McNemar's exact p);
5. **the unknown prior**: ``adaptation_table`` (EM and BBSE on ``--draws`` drawn test sets per prior; a row
   without a validation split has none, and says so);

and saves the label-shift, adaptation and reliability figures. Rows of two models that share the seed, subset,
ratio and precision (a causal-norm row and a row without TDE) are then paired image by image: TDE's rule on the one
against every evaluation of the other (``paired_gaps(..., other=...)``). A table that cannot be made for a row is
replaced by one line saying why; the other rows go on.

Across each seed group (``lt_kit compare``'s groups: every parameter but the seed equal, the same subset), every
recorded row counts, weights or not: each evaluation's overall accuracy minus the reference's (TDE at its rule on a
causal-norm head, else logit adjustment at its rule) from the recorded ``metrics.json``, seed by seed, with mean ±
sample sd and whether its sign holds in every seed (``maths.paired.seed_gaps``); and across two models' groups
(:func:`across_seed_groups`), TDE's rule on the one against every evaluation of the other, seed by seed.

Rows without weights (recorded before ``evaluated.pt`` was kept) are listed as such: they have no caches, so
none of this can be run on them. Writes ``analysis.json`` and ``analysis.md`` (the tables as the CLI prints
them) to ``--out`` and the label-shift and adaptation figures to ``--out``/analysis/; prints progress to stderr.

    python bench/campaign_analysis.py --data-root $CIFAR [--rows r100_causal_norm_s2] [--draws 10]
"""
from __future__ import annotations

import argparse
import filecmp
import json
import math
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CpuLoad, contention_note, machine_info, machine_lines, write_results  # noqa: E402

from lt_kit.errors import LtKitError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "campaign_e200"
SKIP = {"seconds", "epochs_trained", "best_epoch", "world_size", "loss"}      # fit's bookkeeping, not scores
MISSING = "missing"                     # a recorded value the recomputed metrics lack


def differences(recorded, again, path: str = "") -> list[tuple[str, float]]:
    """(path, |difference|) of every number that differs between ``recorded`` and ``again`` (NaN equals NaN;
    a value that is not a number and differs counts as inf, and so does a recorded key (outside ``SKIP``) that
    ``again`` lacks); keys only ``again`` has (added since) are not compared."""
    if isinstance(recorded, dict) and isinstance(again, dict):
        out = []
        for k in recorded:
            if k in SKIP:
                continue
            where = f"{path}.{k}" if path else k
            out += differences(recorded[k], again[k], where) if k in again else [(f"{where} ({MISSING})", math.inf)]
        return out
    if isinstance(recorded, list) and isinstance(again, list) and len(recorded) == len(again):
        return [d for i, (x, y) in enumerate(zip(recorded, again)) for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(recorded, (int, float)) and isinstance(again, (int, float)) and not isinstance(recorded, bool):
        if recorded == again or (math.isnan(recorded) and math.isnan(again)):
            return []
        return [(path, abs(float(recorded) - float(again)))]
    return [] if recorded == again else [(path, math.inf)]


def rescore(results: Path, row: str, work: Path, data_root: str) -> tuple[dict, dict, dict]:
    """Copy the recorded row to ``work/row``, rebuild its caches from ``evaluated.pt`` and compare the recomputed
    metrics with the recorded ones. A copy made earlier from the same weights and metrics keeps its caches (built
    once); any other is replaced. Returns (params, caches, check)."""
    from lt_kit.evaluation.summary import summary
    from lt_kit.training.score import run_caches
    src, dst = results / "runs" / row, work / row
    same = dst.is_dir() and all((dst / f).is_file() and filecmp.cmp(src / f, dst / f, shallow=False)
                                for f in ("evaluated.pt", "metrics.json", "params.yaml"))
    if not same:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
    t = time.perf_counter()
    params, caches = run_caches(dst, data_root=data_root)          # built from evaluated.pt when missing, once
    built = time.perf_counter() - t
    # what fit wrote as metrics.json (its bookkeeping keys aside: SKIP), from the caches just read
    again = json.loads(json.dumps(summary(caches["test"], params["alpha"], caches["val"], caches["train"], params)))
    recorded = json.loads((src / "metrics.json").read_text())
    diff = differences(recorded, again)
    worst = max(diff, key=lambda d: d[1]) if diff else None
    check = {"identical": not diff, "numbers_differing": len(diff), "largest": worst,
             "largest_overall": largest_overall(diff),
             "bf16_emulated": bf16_emulated(params),
             "caches": "loaded from an earlier rebuild of the same weights" if same else "rebuilt",
             "cache_seconds": round(built, 1), "compared": sorted(k for k in recorded if k not in SKIP)}
    return params, caches, check


def bf16_emulated(params: dict) -> bool:
    """Whether a row trained in bf16 is re-scored here (on the CPU) without native bf16: oneDNN then emulates
    bfloat16 and rounds otherwise than the machine that trained it, so its numbers need not come back."""
    from lt_kit.precision import native_bf16_cpu
    return params.get("bf16") is True and not native_bf16_cpu()


def largest_overall(diff: list[tuple[str, float]]) -> tuple[str, float] | None:
    """Of ``differences``' output, the largest change of an overall accuracy (what a reader compares; a count of
    predictions moves by whole images and says less), or None when none moved."""
    moved = [d for d in diff if d[0].rsplit(".", 1)[-1] == "overall"]
    return max(moved, key=lambda d: d[1]) if moved else None


def overall_change(largest: tuple[str, float] | None) -> str:
    """How far the recomputed overall accuracies moved: the largest change, in points, and where."""
    if largest is None:
        return "every overall accuracy came back the same"
    return f"the largest change of an overall accuracy {100 * largest[1]:.2f} points, at `{largest[0]}`"


def reference_of(evaluations) -> str:
    """The evaluation a row's gaps are measured against: TDE at its rule where it applies, else logit
    adjustment at its rule."""
    return "tde" if "tde" in evaluations else "logit_adjust/rule"


def run_tables(params: dict, caches: dict, draws: int) -> tuple[dict, dict, object]:
    """Every analysis table of one row (``None`` for one that cannot be made), why each missing one is, and the
    row's ``Analysis`` (for the comparisons across models)."""
    from lt_kit.evaluation.adaptation import adaptation_table
    from lt_kit.evaluation.analysis import analyse, calibration_table, paired_gaps, shift_table
    from lt_kit.views.plots import protocol_priors
    a = analyse(params, caches)
    makers = {"shift": lambda: shift_table(a, protocol_priors()), "calibration": lambda: calibration_table(a),
              "gaps": lambda: paired_gaps(a, reference_of(a.evaluations)),
              "adaptation": lambda: adaptation_table(a, None, draws=draws)}
    tables, why = {}, {}
    for name, make in makers.items():
        try:
            tables[name] = make()
        except LtKitError as e:         # a linear head has no TDE, a run without a validation split no adaptation
            tables[name], why[name] = None, str(e)
    return tables, why, a


ACROSS_KEYS = ("dataset", "imbalance_ratio", "bf16", "epochs")      # what two models compared must share


def pairable(x, y) -> bool:
    """Whether run ``y`` (a ``runs.compare.RunResult``) is compared with TDE on run ``x`` across models: ``x``
    holds TDE (a causal-norm head), ``y`` does not (a linear head: plain softmax, the logit-adjusted loss,
    LDAM-DRW), and both share the subset and ``ACROSS_KEYS`` (so the headline's precisions and ratios never mix)."""
    return ("tde" in x.evaluations and "tde" not in y.evaluations and x.subset["sha256"] == y.subset["sha256"]
            and all(x.params.get(k) == y.params.get(k) for k in ACROSS_KEYS))


def model_pairs(runs: dict) -> list[tuple[str, str]]:
    """(reference row, other row) pairs of ``runs`` (row -> ``runs.compare.RunResult``) of one seed that are
    :func:`pairable`."""
    return [(x, y) for x, rx in runs.items() for y, ry in runs.items() if rx.seed == ry.seed and pairable(rx, ry)]


def across_seed_groups(groups: list) -> list[dict]:
    """TDE at its rule on one model against every evaluation of another model, seed by seed, from the recorded
    metrics: every pair of ``lt_kit compare`` groups (``runs.compare.group_runs``) that is :func:`pairable`, over
    the seeds both have (two or more). Each gap's mean ± sd and whether its sign held in every seed
    (``maths.paired.seed_gaps``)."""
    from lt_kit.maths.paired import seed_gaps
    out = []
    for g in groups:
        for h in groups:
            if not pairable(g.runs[0], h.runs[0]):          # a group's runs share all of it but the seed
                continue
            mine, theirs = ({r.seed: r for r in x.runs} for x in (g, h))
            seeds = sorted(set(mine) & set(theirs))
            if len(seeds) < 2:
                continue
            names = [n for n in dict.fromkeys(n for s in seeds for n in theirs[s].evaluations)
                     if "test_chosen" not in n]
            gaps = [{"evaluation": n, **seed_gaps([theirs[s].evaluations[n]["overall"] -
                                                   mine[s].evaluations["tde"]["overall"]
                                                   for s in seeds if n in theirs[s].evaluations]), "why": None}
                    for n in names]
            out.append({"reference_group": g.label, "other_group": h.label, "seeds": seeds,
                        "reference": "tde", "rows": [[mine[s].path.name, theirs[s].path.name] for s in seeds],
                        "gaps": gaps})
    return out


def seed_groups(groups: list) -> list[dict]:
    """The recorded rows' groups of ``lt_kit compare`` (``runs.compare.group_runs``: all but the seed equal) with
    two seeds or more, each with every evaluation's per-seed gap in overall accuracy to the group's reference
    (:func:`reference_of`; ``maths.paired.seed_gaps``). Evaluations chosen on the test set are left out."""
    from lt_kit.maths.paired import seed_gaps
    out = []
    for g in groups:
        if len(g.runs) < 2:
            continue
        runs = sorted(g.runs, key=lambda r: r.seed)
        overall = [{k: e["overall"] for k, e in r.evaluations.items() if "test_chosen" not in k} for r in runs]
        reference = reference_of(overall[0])
        names = [n for n in dict.fromkeys(n for o in overall for n in o) if n != reference]
        gaps = [{"evaluation": n, **seed_gaps([o[n] - o[reference] for o in overall if n in o and reference in o]),
                 "why": None} for n in names]
        out.append({"group": g.label, "params": {k: g.params.get(k) for k in ("dataset", "imbalance_ratio", "head",
                                                                              "loss", "bf16", "epochs")},
                    "rows": [r.path.name for r in runs], "seeds": [r.seed for r in runs], "reference": reference,
                    "reference_overall": [o.get(reference) for o in overall], "gaps": gaps})
    return out


def recovery(adapt: dict) -> list[str]:
    """Markdown rows: per adapted method and prior, the mean accuracy unadapted, with the EM and BBSE estimates and
    with the true prior (oracle), and the share of the oracle's gain over unadapted each estimator recovers
    ("-" where the oracle gains less than 0.1 point: nothing to recover)."""
    out = ["| adapted method | test prior | unadapted | EM | BBSE | oracle | EM recovers | BBSE recovers |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in adapt["rows"]:
        if r["kind"] != "adapted":
            continue
        for p, cells in r["cells"].items():
            m = {c: 100 * cells[c]["mean"] for c in ("unadapted", "em", "bbse", "oracle")}
            gain = m["oracle"] - m["unadapted"]
            share = {c: "-" if gain < 0.1 else f"{100 * (m[c] - m['unadapted']) / gain:.0f} %" for c in ("em", "bbse")}
            out.append(f"| {r['name']} | {p} | {m['unadapted']:.2f} | {m['em']:.2f} | {m['bbse']:.2f} | "
                       f"{m['oracle']:.2f} | {share['em']} | {share['bbse']} |")
    return out


def tde_alpha_moves(shift: dict) -> dict | None:
    """TDE's prior-aware alpha (validation split re-weighted) at each prior: where it goes, backward50 .. forward50."""
    row = next((r for r in shift["rows"] if r["evaluation"] == "tde/prior" and r["cells"]), None)
    return None if row is None else {p: c["strength"] for p, c in row["cells"].items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True, help="where CIFAR-10 lies (torchvision's layout)")
    ap.add_argument("--rows", nargs="+", help="recorded rows (default: every one that keeps its weights)")
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "lt_kit" / "campaign_analysis"),
                    help="where the rows are copied and their caches built (not the repository)")
    ap.add_argument("--draws", type=int, default=10, help="drawn test sets per prior for the adaptation table")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: as the campaign trained)")
    ap.add_argument("--results", default=str(RESULTS), help="the campaign's results folder (its runs/<row>)")
    ap.add_argument("--out", help="where analysis.md / .json and the figures go (default: --results)")
    ap.add_argument("--note", default="", help="load note for the markdown")
    args = ap.parse_args(argv)
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _analyse(args, argv)
    finally:
        torch.set_num_threads(before)         # a caller in the same process (a test) keeps its thread count


def _analyse(args, argv) -> int:
    from lt_kit.evaluation.adaptation import format_adaptation
    from lt_kit.evaluation.analysis import paired_gaps
    from lt_kit.evaluation.analysis_text import format_calibration, format_gaps, format_seed_gaps, format_shift
    from lt_kit.runs.compare import group_runs, read_run
    from lt_kit.views.adaptation import adaptation_figure
    from lt_kit.views.plots import prior_figure, reliability_figure, save_figure
    results_dir = Path(args.results)
    recorded = sorted(p.name for p in (results_dir / "runs").iterdir() if p.is_dir())
    weighted = [r for r in recorded if (results_dir / "runs" / r / "evaluated.pt").is_file()]
    rows = args.rows or weighted
    for r in rows:
        if r not in weighted:
            raise LtKitError(f"{r}: no recorded run with weights (rows with evaluated.pt: {', '.join(weighted)})")
    work, out = Path(args.work), Path(args.out or args.results)
    work.mkdir(parents=True, exist_ok=True)
    shown = {"shift": ("Label shift", format_shift, prior_figure, "label_shift"),
             "calibration": ("Calibration", format_calibration, reliability_figure, "reliability"),
             "gaps": ("Paired gaps against the reference", format_gaps, None, None),
             "adaptation": ("When the test prior is unknown", format_adaptation, adaptation_figure, "adaptation")}
    results, md, analyses = {}, [], {}
    with CpuLoad() as load:
        for row in rows:
            print(f"{row}: re-scoring from evaluated.pt", file=sys.stderr, flush=True)
            params, caches, check = rescore(results_dir, row, work, args.data_root)
            print(f"{row}: {check}", file=sys.stderr, flush=True)
            t = time.perf_counter()
            tables, why, analyses[row] = run_tables(params, caches, args.draws)
            seconds = round(time.perf_counter() - t, 1)
            results[row] = {"rescore": check, **tables, "why": why, "analysis_seconds": seconds,
                            "tde_prior_alpha": tde_alpha_moves(tables["shift"]) if tables["shift"] else None}
            same = ("identical: every recorded number came back bit for bit" if check["identical"] else
                    f"{check['numbers_differing']} numbers differ, the largest by {check['largest'][1]:.3g} at "
                    f"`{check['largest'][0]}`; " + overall_change(check['largest_overall']))
            emulated = (" This bf16 row was scored on a CPU without native bf16 (oneDNN emulates it), so its caches,"
                        " and the tables below, round differently from the machine that trained it." if
                        check["bf16_emulated"] else "")
            md += [f"## {row}", "",
                   f"Re-scored from `evaluated.pt` (caches {check['caches']}, {check['cache_seconds']} s): {same} "
                   f"(compared: {', '.join(check['compared'])}).{emulated} The tables below took {seconds} s.", ""]
            for key, (title, fmt, figure, name) in shown.items():
                md += [f"### {title}", ""]
                if tables[key] is None:
                    md += [f"Not made: {why[key]}", ""]
                    continue
                md += ["```", fmt(tables[key]), "```", ""]
                if key == "adaptation":
                    md += ["How much of knowing the prior each estimator recovers (mean over the draws, %):", "",
                           *recovery(tables[key]), ""]
                if figure is not None:
                    save_figure(figure(tables[key]), out / "analysis" / row / f"{name}.png")
                    md += [f"Figure: `analysis/{row}/{name}.png`.", ""]
        runs = {r: read_run(results_dir / "runs" / r) for r in recorded}          # each row's files read once
        pairs = model_pairs({r: runs[r] for r in analyses})
        across = []
        if pairs:
            md += ["## Across models on the same seed, image by image", "",
                   "TDE at its rule on the causal-norm row against every evaluation of another model's row of the "
                   "same seed, subset, ratio and precision, on the same test images (paired bootstrap, "
                   "McNemar's exact p): the training's difference and the post-hoc method's together.", ""]
        for ref_row, other_row in pairs:
            gaps = paired_gaps(analyses[ref_row], "tde", other=analyses[other_row])
            across.append({"reference_row": ref_row, "other_row": other_row, "gaps": gaps})
            md += [f"### {other_row} against TDE on {ref_row}", "", "```", format_gaps(gaps), "```", ""]
    given = sys.argv[1:] if argv is None else argv      # the data's place on this machine is no part of it
    grouped = group_runs(runs.values())
    groups = seed_groups(grouped)
    md += ["## Over the seeds, from the recorded metrics", "",
           "Every recorded row, weights or not. Gap = the evaluation's overall accuracy minus the reference's on the "
           "same checkpoint, seed by seed (points); the paired intervals above need a row's caches, so they exist "
           "only for rows that keep their weights.", ""]
    for g in groups:
        ref = ", ".join(f"{100 * v:.2f}" for v in g["reference_overall"])
        md += [f"### {g['group']}: seeds {', '.join(map(str, g['seeds']))}", "",
               f"Rows {', '.join(g['rows'])}; the reference {g['reference']} scored {ref} %.", "",
               "```", format_seed_gaps(g["gaps"], g["reference"]), "```", ""]
    across_groups = across_seed_groups(grouped)
    if across_groups:
        md += ["## Across models, over the seeds, from the recorded metrics", "",
               "Each evaluation of one model minus TDE at its rule on the causal-norm model of the same seed "
               "(points), over the seeds both have, on the same subset, ratio and precision.", ""]
    for x in across_groups:
        pairs_text = "; ".join(" and ".join(p) for p in x["rows"])
        md += [f"### {x['other_group']} against TDE of {x['reference_group']}: seeds "
               f"{', '.join(map(str, x['seeds']))}", "", f"Rows, seed by seed: {pairs_text}.", "",
               "```", format_seed_gaps(x["gaps"], "tde"), "```", ""]
    command = shlex.join(["python", "bench/campaign_analysis.py", *[("CIFAR" if a == args.data_root else a)
                                                                     for a in given]]).replace("CIFAR", "$CIFAR")
    info = machine_info(torch.device("cpu"))
    head = ["# The 200-epoch campaign's rows, analysed from their weights", "",
            "Every number here comes from a recorded row's `evaluated.pt` and the CIFAR-10 test set: the caches are "
            "rebuilt, the recorded metrics checked against them, then the label-shift, calibration, paired-gap and "
            "unknown-prior tables run on them (`bench/campaign_analysis.py`).", "",
            *machine_lines(info, contention_note(load.others_cores, args.note)), f"- Command: `{command}`",
            f"- Rows with weights: {', '.join(weighted) or 'none'}; metrics only (recorded before weights were "
            f"kept, no caches to analyse): {', '.join(r for r in recorded if r not in weighted) or 'none'}", ""]
    for path in write_results(out, "analysis", {"machine": info, "command": command, "rows": results,
                                                "across_models": across, "seed_groups": groups,
                                                "across_seed_groups": across_groups},
                              "\n".join(head + md)):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
