"""``python -m lt_kit shift | calibration | gap``: a run's accuracy under label shift, its calibration, and the
paired gaps between its evaluations (``evaluation/analysis.py``), printed as text. ``gap`` given several run
dirs of one configuration (differing only in seed) adds each evaluation's gap over the seeds; with
``--other-run`` it pairs another model's evaluations, image by image, with the first run's reference.

``compare --against EVALUATION`` and ``compare --shift``: the same over each of compare's seed groups
(:func:`seed_group_tables`), as text or markdown beside compare's table."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lt_kit.errors import LtKitError


def parse_weights(text: str) -> list[float]:
    """``--weights 1,2,3`` as floats; an ``LtKitError`` for anything that is not a comma-separated number list
    (their count and sign are checked against the run: ``maths.shift.weights_prior``)."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise LtKitError(f"--weights must be comma-separated numbers (one per class), got {text!r}") from None


def analysis_command(args) -> int:
    """The ``shift``, ``calibration`` and ``gap`` commands: print the table; bad input raises ``LtKitError``."""
    from lt_kit.evaluation.analysis import calibration_table, paired_gaps, seed_gap_table, shift_table
    from lt_kit.evaluation.analysis_text import format_calibration, format_gaps, format_seed_gaps, format_shift
    from lt_kit.maths.shift import check_prior_name
    from lt_kit.training.score import run_analysis
    where = {"device": args.device, "data_root": args.data_root}
    if args.cmd == "shift":
        for name in args.prior or ():             # a misspelt name is refused before the run is read
            if name != "all":
                check_prior_name(name)
        weights = parse_weights(args.weights) if args.weights else None
        print(format_shift(shift_table(run_analysis(args.run_dir, **where), args.prior, weights)))
    elif args.cmd == "calibration":
        table = calibration_table(run_analysis(args.run_dir, **where))
        print(format_calibration(table))
        if args.figure:
            from lt_kit.views.plots import reliability_figure, save_figure
            print(f"figure: {save_figure(reliability_figure(table), args.figure)}")
    else:
        run_dirs = list(dict.fromkeys(args.run_dir))
        if args.other_run:
            if len(run_dirs) > 1:
                raise LtKitError("--other-run compares two runs: give one --run-dir (the reference's run) with it")
            result = paired_gaps(run_analysis(run_dirs[0], **where), args.against,
                                 other=run_analysis(args.other_run, **where), seed=args.seed,
                                 n_resamples=args.resamples)
            print(f"run dir: {run_dirs[0]}\nother run: {args.other_run}")
            print(format_gaps(result))
            return 0
        if len(run_dirs) > 1:
            check_one_group(run_dirs)
        results = []
        for run_dir in run_dirs:
            results.append(paired_gaps(run_analysis(run_dir, **where), args.against, seed=args.seed,
                                       n_resamples=args.resamples))
            print(f"run dir: {run_dir}")
            print(format_gaps(results[-1]))
        if len(results) > 1:
            print(format_seed_gaps(seed_gap_table(results), args.against))
    return 0


def check_one_group(run_dirs: list[str]) -> None:
    """Refuse run dirs that compare would not group together (they differ in more than the seed)."""
    from lt_kit.runs.compare import group_key, read_run
    runs = [read_run(d) for d in run_dirs]          # NotComparable (an LtKitError) says why a folder is not a run
    first = group_key(runs[0])
    other = next((r for r in runs[1:] if group_key(r) != first), None)
    if other is not None:
        raise LtKitError(f"gaps over seeds need runs that differ only in seed: {run_dirs[0]} and {other.path} "
                         "differ in more (`python -m lt_kit compare` shows how)")
    seeds = [r.seed for r in runs]
    if len(set(seeds)) < len(seeds):
        raise LtKitError(f"gaps over seeds need one run per seed; seeds given: {', '.join(map(str, seeds))}")


# --------------------------------------------------------------------------- compare --against / --shift
@dataclass
class GroupTables:
    """One compare group's gap and shift tables over the seeds whose caches could be read (or rebuilt)."""
    label: str
    shown: Callable[[str], str]             # an evaluation as compare's table shows it (tde a=1)
    evaluations: list[str]                  # the group's evaluations, compare's order
    reference: str | None = None            # what --against names in this group; None: it holds none
    runs: list[tuple[int, str]] = field(default_factory=list)      # (seed, run dir) analysed
    lost: list[tuple[str, str]] = field(default_factory=list)      # (run dir, why it was left out)
    gaps: list[dict] | None = None          # evaluation.analysis.group_gaps
    shift: dict | None = None               # evaluation.analysis.group_shift


def references(comparison, name: str) -> list[str | None]:
    """What ``--against name`` means in each group (None where the group holds none); an ``LtKitError`` listing
    every evaluation's names when no group holds it."""
    found = [g.find(name) for g in comparison.groups]
    if not any(found):
        valid = []
        for e in comparison.evaluations():
            shown = sorted({g.shown(e) for g in comparison.groups if e in g.evaluations()} - {e})
            valid.append(e + (f" (shown as {', '.join(shown)})" if shown else ""))
        raise LtKitError(f"--against {name!r}: no group holds this evaluation; valid: {', '.join(valid)}")
    return found


def seed_group_tables(comparison, *, against: str | None = None, shift: bool = False,
                      priors: Sequence[str] | None = None, device: str | None = None,
                      data_root: str | None = None) -> list[GroupTables]:
    """Per compare group: each run's ``paired_gaps`` to ``against`` and / or ``shift_table`` at ``priors``, then
    over its seeds (``group_gaps``, ``group_shift``). A run whose caches are lost and cannot be rebuilt (or that
    lacks the reference) is left out with its reason; one run's analysis is dropped before the next is read."""
    refs = references(comparison, against) if against is not None else [None] * len(comparison.groups)
    return [_group_tables(g, ref, against is not None, shift, priors, {"device": device, "data_root": data_root})
            for g, ref in zip(comparison.groups, refs)]


def _group_tables(group, reference: str | None, gaps: bool, shift: bool, priors, where: dict) -> GroupTables:
    from lt_kit.evaluation.analysis import group_gaps, group_shift, paired_gaps, shift_table
    from lt_kit.training.score import run_analysis
    out = GroupTables(group.label, group.shown, group.evaluations(), reference)
    if not shift and reference is None:      # nothing to compute: the group says it lacks the reference
        return out
    gap_results, shift_results = [], []
    for run in group.runs:
        try:
            a = run_analysis(run.path, **where)
            if reference is not None:
                gap_results.append((run.seed, paired_gaps(a, reference)))
        except LtKitError as e:              # caches lost with no data to rebuild them, or no such evaluation
            out.lost.append((str(run.path), str(e)))
            continue
        if shift:
            shift_results.append((run.seed, shift_table(a, priors)))
        out.runs.append((run.seed, str(run.path)))
    if reference is not None:
        out.gaps = group_gaps(gap_results, out.evaluations)
    if shift:
        out.shift = group_shift(shift_results)
    return out


def _signed(v: float) -> str:
    return f"{100 * v:+.2f}"


def _spread(mean: float, sd: float, sign: Callable[[float], str]) -> str:
    """``mean ± sd`` in percent (just the mean for one seed)."""
    return sign(mean) + (f" ± {100 * sd:.2f}" if math.isfinite(sd) else "")


def _render(head: list[str], body: list[list[str]], left: set[int], markdown: bool) -> list[str]:
    """A table as aligned text (``left``: left-aligned columns) or as a markdown pipe table."""
    if markdown:
        rule = [":---" if i in left else "---:" for i in range(len(head))]
        return ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in [head, rule, *body]]
    width = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    return ["  " + "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, width)))
            .rstrip() for row in [head, *body]]


def _group_head(t: GroupTables, markdown: bool) -> str:
    seeds = ",".join(str(s) for s, _ in t.runs) or "none"
    return f"**{t.label}** (seeds {seeds})" if markdown else f"{t.label} (seeds {seeds})"


def _group_foot(t: GroupTables) -> list[str]:
    """Which run each seed is, and the runs left out with why."""
    out = ["runs: " + "; ".join(f"seed {s} = {p}" for s, p in t.runs)] if t.runs else []
    out += [f"{p}: left out ({why})" for p, why in t.lost]
    if t.lost:              # the usual cause: a copied run keeps evaluated.pt but not its caches, nor its data
        out.append("a run's lost caches are rebuilt from its evaluated.pt where its data can be read: --data-root "
                   "DIR names where it lies on this machine")
    if not t.runs:
        out.append("no run of this group could be analysed")
    return out


def _lines(head: str, table: list[str], notes: list[str], markdown: bool) -> list[str]:
    if markdown:
        return [head, "", *table, "", *(f"- {n}" for n in notes), ""]
    return [head, *table, *(f"  {n}" for n in notes)]


def gap_section(tables: list[GroupTables], against: str, evaluations: Sequence[str] | None = None,
                markdown: bool = False) -> str:
    """Every group's gaps to ``against``: per seed the paired gap with its 95 % interval, over the seeds mean ±
    sd and whether the sign held; ``evaluations``: only these rows (compare's ``--evaluation``)."""
    title = f"gaps to {against} over each group's seeds (compare --against)"
    out = [f"**{title}**" if markdown else title, *([""] if markdown else [])]
    for t in tables:
        if t.reference is None:
            line = (f"{t.label}: holds no {against!r}; its evaluations: "
                    + ", ".join(t.shown(e) for e in t.evaluations))
            out += [line, ""] if markdown else [line]
            continue
        rows = [r for r in t.gaps or () if not evaluations or r["evaluation"] in evaluations]
        head = ["evaluation", "n", "mean ± sd", "sign held", *(f"seed {s}" for s, _ in t.runs)]
        body = [_gap_cells(t, r) for r in rows] if t.runs else []
        out += _lines(_group_head(t, markdown), _render(head, body, {0, 3}, markdown) if body else [],
                      _gap_notes(t, rows) + _group_foot(t), markdown)
    note = ("gap = evaluation - reference, in points, each seed on its own test images (paired); [95% interval]: "
            "paired bootstrap over those images (10000 resamples, seed 0, percentile); mean ± sample sd over the "
            "seeds; sign held: every seed's gap has the mean's sign, none 0; one run's b, c and McNemar p: "
            "`python -m lt_kit gap --run-dir RUN --against REFERENCE`")
    out.append(f"- {note}" if markdown else note)
    return "\n".join(out).rstrip() + "\n"


def _gap_cells(t: GroupTables, r: dict) -> list[str]:
    name = t.shown(r["evaluation"]) + (" (reference)" if r["reference"] else "")
    if not r["n"]:
        return [name, "0", f"({r['why']})", "", *("-" for _ in t.runs)]
    held = "reference" if r["reference"] else "yes" if r["sign_holds"] else "no"
    seeds = [f"{_signed(s['gap'])} [{_signed(s['low'])}, {_signed(s['high'])}]" if s["why"] is None else "-"
             for s in r["per_seed"]]
    return [name, str(r["n"]), _spread(r["mean"], r["sd"], _signed), held, *seeds]


def _gap_notes(t: GroupTables, rows: list[dict]) -> list[str]:
    """A row that some seeds hold and others lack: which lack it, and why."""
    return [f"{t.shown(r['evaluation'])}: seed {s['seed']} lacks it ({s['why']})"
            for r in rows if r["n"] for s in r["per_seed"] if s["why"] is not None]


def shift_section(tables: list[GroupTables], markdown: bool = False) -> str:
    """Every group's label-shift table: evaluations x priors, accuracy (%) as mean ± sd over its seeds."""
    title = "label shift over each group's seeds (compare --shift)"
    out = [f"**{title}**" if markdown else title, *([""] if markdown else [])]
    for t in tables:
        sh = t.shift or {"priors": [], "rows": []}
        head = ["evaluation", "n", "strength", *sh["priors"]]
        body = [_shift_cells(t, r, sh["priors"]) for r in sh["rows"]]
        out += _lines(_group_head(t, markdown), _render(head, body, {0}, markdown) if body else [],
                      _shift_choices(t, sh) + _group_foot(t), markdown)
    note = ("accuracy (%) under each test prior (the prior-weighted mean of per-class test accuracy), mean ± sample "
            "sd over the group's seeds; strength: each seed's (a/b/...) where they differ; rule / val / prior / "
            "oracle as in `python -m lt_kit shift`")
    out.append(f"- {note}" if markdown else note)
    return "\n".join(out).rstrip() + "\n"


def _shift_cells(t: GroupTables, r: dict, priors: list[str]) -> list[str]:
    name = t.shown(r["evaluation"])
    if r["cells"] is None:
        return [name, "0", "", f"({r['why']})", *("" for _ in priors[1:])]
    n = r["cells"][priors[0]]["n"] if priors else 0
    strength = {"prior": "per prior", "oracle": "known"}.get(r["kind"]) or _strengths(r["strengths"])
    return [name, str(n), strength,
            *(_spread(r["cells"][p]["mean"], r["cells"][p]["sd"], lambda v: f"{100 * v:.2f}") for p in priors)]


def _strengths(values: list) -> str:
    """One strength, or each seed's joined by '/' where they differ ('-': none)."""
    shown = [f"{v:g}" if v is not None else "-" for v in values]
    return shown[0] if len(set(shown)) == 1 else "/".join(shown)


def _shift_choices(t: GroupTables, sh: dict) -> list[str]:
    """The strengths the prior-aware rows chose, per prior, each seed's."""
    return [f"{r['evaluation']} {r['strength_name']} chosen per seed: "
            + ", ".join(f"{p} {_strengths(r['cells'][p]['strengths'])}" for p in sh["priors"])
            for r in sh["rows"] if r["kind"] == "prior" and r["cells"] is not None]
