"""Compare's output: a ``Comparison`` of run groups as text, markdown, CSV and figures, and the
``python -m lt_kit compare`` command. The grouping itself (what makes a group, mean and sample sd over seeds,
why a run lacks a row) is ``runs/compare.py``."""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lt_kit.errors import LtKitError
from lt_kit.runs.compare import (
    BAR_SPLITS,
    IGNORED,
    NO_EFFECT,
    SPLITS,
    Group,
    drop_repeats,
    expand,
    group_runs,
    ignored,
    read_runs,
    short_value,
    why_missing,
)


@dataclass
class Comparison:
    """Groups of runs and the folders left out; ``text()``, ``markdown()``, ``csv()`` and the figures."""
    groups: list[Group]
    skipped: list[tuple[str, str]] = field(default_factory=list)     # (folder or pattern, reason)
    ignored_files: int = 0
    ignore: tuple = ()                                               # the caller's own --ignore keys
    repeats: list[tuple[str, str]] = field(default_factory=list)     # (a name dropped, the kept name of that folder)

    def evaluations(self) -> list[str]:
        return list(dict.fromkeys(e for g in self.groups for e in g.evaluations()))

    def check_evaluation(self, evaluation: str) -> str:
        """``evaluation`` if some group holds it, else an error that lists those held."""
        if evaluation not in self.evaluations():
            raise LtKitError(f"no run holds the evaluation {evaluation!r}; these runs hold: "
                             f"{', '.join(self.evaluations())}")
        return evaluation

    def rows(self, evaluations: Sequence[str] | None = None) -> list[dict]:
        """One row per group and evaluation: label, evaluation (shown and ``key``), the tde alpha, n, seeds,
        subset, split -> (n, mean, sd) as ``stats`` and the run dirs."""
        for e in evaluations or ():
            self.check_evaluation(e)
        out = []
        for g in self.groups:
            for e in g.evaluations():
                if evaluations and e not in evaluations:
                    continue
                held = g.holding(e)
                out.append({"group": g.label, "evaluation": g.shown(e), "key": e,
                            "alpha": g.alpha, "n": len(held), "seeds": _seeds([r.seed for r in held]),
                            "subset": g.subset[:8], "stats": g.stats(e), "runs": [str(r.path) for r in held]})
        return out

    def notes(self) -> list[str]:
        """What the numbers mean, which subsets differ, repeated seeds, lt_kit versions, folders named twice and
        skipped folders."""
        t = {(r.thresholds.get("many"), r.thresholds.get("few")) for g in self.groups for r in g.runs}
        (many, few), = t if len(t) == 1 else ((None, None),)
        rule = f"many > {many}, few < {few} training images" if len(t) == 1 else "each group's many/few thresholds"
        out = [f"percent: mean ± sample standard deviation over seeds (n - 1); {rule}; head/tail: above / at or "
               "below the median training count; '-' = no class in that split"]
        subsets: dict[str, list[str]] = {}
        for g in self.groups:
            subsets.setdefault(g.subset[:8], []).append(g.label)
        if len(subsets) == 1:
            (sub, _), = subsets.items()
            out.append(f"subset: every group drew the same training subset ({sub}, "
                       f"{self.groups[0].runs[0].subset['n']} images)")
        else:
            out.append("SUBSETS DIFFER, the groups were trained on different data: "
                       + "; ".join(f"{s}: {', '.join(labels)}" for s, labels in subsets.items()))
        for g in self.groups:
            dup = sorted({s for s in g.seeds if g.seeds.count(s) > 1})
            if dup:
                out.append(f"{g.label} holds seed {', '.join(map(str, dup))} more than once (copies of one run?): "
                           + ", ".join(str(r.path) for r in g.runs if r.seed in dup))
        out += self.short_rows()
        out.append(self.not_told_apart())
        versions = sorted({r.version for g in self.groups for r in g.runs if r.version})
        if len(versions) > 1:
            out.append(f"written by lt_kit {' / '.join(versions)}")
        if self.repeats:                  # one folder named twice is one run, never two seeds
            out.append("named more than once, counted once (the first name kept): " + "; ".join(
                f"{d} (named twice)" if str(d) == str(k) else f"{d} (= {k})" for d, k in self.repeats))
        if self.ignored_files:
            out.append(f"{self.ignored_files} plain file{'s' * (self.ignored_files > 1)} matched by the globs "
                       "left out")
        if self.skipped:
            out.append(f"skipped {len(self.skipped)} folder{'s' * (len(self.skipped) > 1)}:")
            out += [f"  {p}: {reason}" for p, reason in self.skipped]
        return out

    def short_rows(self) -> list[str]:
        """One note per row that fewer runs hold than its group has, naming each other run and why."""
        out = []
        for g in self.groups:
            for e in g.evaluations():
                lacking = [r for r in g.runs if e not in r.evaluations]
                if lacking:
                    out.append(f"{g.label} {e}: n={len(g.runs) - len(lacking)} of {len(g.runs)}; "
                               + "; ".join(f"{r.path} lacks it ({why_missing(r, e)})" for r in lacking))
        return out

    def not_told_apart(self) -> str:
        """The parameters a group does not split on (seed aside), with the values where they differ inside one."""
        keys = sorted({k for g in self.groups for r in g.runs for k in ignored(r.params, self.ignore)} - set(IGNORED),
                      key=lambda k: (k not in NO_EFFECT, k))
        parts = []
        for k in keys:
            values = [{short_value(r.params.get(k)) for r in g.runs if k in ignored(r.params, self.ignore)}
                      for g in self.groups]
            differ = sorted(set().union(*(v for v in values if len(v) > 1)))
            parts.append(k + (f" ({', '.join(differ)})" if differ else ""))
        return ("not told apart (settings that cannot change a result, and --ignore KEY; values shown where they "
                "differ inside a group): " + ", ".join(parts))

    def _cells(self, evaluations, cell) -> tuple[list[str], list[list[str]]]:
        head = ["group", "evaluation", "n", "seeds", "subset", *SPLITS]
        body = [[r["group"], r["evaluation"], str(r["n"]), r["seeds"], r["subset"],
                 *(cell(*r["stats"][k]) for k in SPLITS)] for r in self.rows(evaluations)]
        return head, body

    def text(self, evaluations: Sequence[str] | None = None) -> str:
        """The table as aligned text, then the notes."""
        head, body = self._cells(evaluations, _cell)
        width = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, width)))
                 for row in [head, *body]]
        return "\n".join([*lines, *self.notes()]).rstrip()

    def markdown(self, evaluations: Sequence[str] | None = None) -> str:
        """The table as a markdown pipe table, then the notes as a list."""
        head, body = self._cells(evaluations, _cell)
        rows = [head, ["---"] * 2 + ["---:"] * (len(head) - 2), *body]
        md = ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        notes = [f"{'  ' if n.startswith('  ') else ''}- {n.strip()}" for n in self.notes()]
        return "\n".join(md + [""] + notes) + "\n"

    def csv(self, evaluations: Sequence[str] | None = None) -> str:
        """One row per group and evaluation: percent means and standard deviations, the run dirs."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["group", "evaluation", "alpha", "n", "seeds", "subset",
                    *(f"{k}_{s}" for k in SPLITS for s in ("mean", "sd")), "runs"])
        for r in self.rows(evaluations):
            nums = [f"{100 * v:.4f}" if math.isfinite(v) else "" for k in SPLITS for v in r["stats"][k][1:]]
            w.writerow([r["group"], r["key"], f"{r['alpha']:g}" if r["key"] == "tde" else "", r["n"], r["seeds"],
                        r["subset"], *nums, ";".join(r["runs"])])
        return buf.getvalue()

    def save(self, folder: str | Path) -> list[Path]:
        """Write ``compare.md`` and ``compare.csv`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "compare.md").write_text(self.markdown())
        (folder / "compare.csv").write_text(self.csv())
        return [folder / "compare.md", folder / "compare.csv"]

    # ------------------------------------------------------------------ figures
    def per_class_figure(self, evaluation: str):
        """Per-class accuracy against training count: one line per group, a band of ± one sd over seeds."""
        from lt_kit.views.plots import per_class_band_figure
        self.check_evaluation(evaluation)
        curves = [(f"{g.label} (n={len(g.holding(evaluation))})", g.train_counts, *g.per_class(evaluation)[1:])
                  for g in self.groups if g.holding(evaluation)]
        return per_class_band_figure(curves, title=f"per-class accuracy, {evaluation}: mean ± sd over seeds")

    def splits_figure(self, evaluation: str):
        """many / medium / few / overall bars per group, error bars ± one sd, each seed as a dot."""
        from lt_kit.views.plots import split_bars_figure
        self.check_evaluation(evaluation)
        bars = [(f"{g.label} (n={len(g.holding(evaluation))})", {k: g.stats(evaluation)[k] for k in BAR_SPLITS},
                 {k: g.values(evaluation, k) for k in BAR_SPLITS}) for g in self.groups if g.holding(evaluation)]
        return split_bars_figure(bars, title=f"{evaluation}: mean ± sd over seeds")

    def figures(self, evaluation: str) -> dict:
        """The notebook's two figures, by the PNG name they are saved under."""
        return {"compare_per_class": self.per_class_figure(evaluation),
                "compare_splits": self.splits_figure(evaluation)}


def _cell(n: int, mean: float, sd: float) -> str:
    if not n:
        return "-"
    return f"{100 * mean:.2f}" + (f" ± {100 * sd:.2f}" if math.isfinite(sd) else "")


def _seeds(seeds: list[int]) -> str:
    s = sorted(seeds)
    return ",".join(map(str, s)) if len(s) <= 6 else f"{s[0]}..{s[-1]} ({len(s)})"


def compare_runs(patterns: Sequence[str] | str, *, strict: bool = False, ignore: Sequence[str] = (),
                 base: str | Path | None = None, exclude: Sequence[str | Path] = ()) -> Comparison:
    """Read the run dirs ``patterns`` name (globs welcome) and group them; see the module docstring.

    ``strict``: a folder that cannot be compared (or a glob that matches nothing) is an error instead of
    a skipped line. ``ignore``: parameters that may also differ inside a group (``seed`` always may)."""
    from lt_kit.config import PARAMS
    unknown = [k for k in ignore if k not in PARAMS]
    if unknown:
        raise LtKitError(f"unknown parameter {unknown[0]!r} to ignore; parameters: {', '.join(PARAMS)}")
    folders, missing, files = expand(patterns, base, exclude)
    folders, repeats = drop_repeats(folders)
    runs, skipped = read_runs(folders)
    skipped = missing + skipped
    if strict and skipped:
        raise LtKitError(f"{len(skipped)} of the run dirs given cannot be compared (strict): "
                         + "; ".join(f"{p}: {reason}" for p, reason in skipped))
    if not runs:
        why = "; ".join(f"{p}: {reason}" for p, reason in skipped[:3]) or "no folder given"
        raise LtKitError(f"no run to compare among {len(folders) + len(missing)} given ({why})")
    return Comparison(group_runs(runs, ignore), skipped, files, tuple(ignore), [(str(d), str(k)) for d, k in repeats])


def compare_command(args) -> int:
    """``python -m lt_kit compare``: print the text table, or with ``--markdown FILE`` / ``--csv FILE`` also
    write those (``-``: print that format instead of the text). ``--against`` and ``--shift`` add their tables
    (from each run's caches) after the text and the markdown; the CSV stays compare's own table."""
    check_analysis_args(args)
    c = compare_runs(args.run_dirs, strict=args.strict, ignore=args.ignore)
    chosen = args.evaluation or None
    if chosen:
        for e in chosen:
            c.check_evaluation(e)
    sections = analysis_sections(c, args, chosen)
    printed, written = False, []
    for fmt, dest in (("markdown", args.markdown), ("csv", args.csv)):
        if dest is None:
            continue
        out = getattr(c, fmt)(chosen)
        if fmt == "markdown":
            out += "".join("\n" + section(True) for section in sections)
        if dest == "-":
            print(out, end="")
            printed = True
        else:
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            Path(dest).write_text(out)
            written.append(dest)
    if not printed:
        print(c.text(chosen))
        for section in sections:
            print("\n" + section(False), end="")
    for dest in written:
        print(f"wrote {dest}")
    return 0


def check_analysis_args(args) -> None:
    """``--prior`` goes with ``--shift`` and names priors: refused in one line before any run is read."""
    from lt_kit.maths.shift import check_prior_name
    priors = getattr(args, "prior", None) or ()
    if priors and not args.shift:
        raise LtKitError("--prior goes with --shift (the label-shift table over each group's seeds)")
    for name in priors:
        if name != "all":
            check_prior_name(name)


def analysis_sections(c: Comparison, args, chosen: Sequence[str] | None) -> list:
    """The ``--against`` and ``--shift`` tables of ``c``'s groups, each a function of ``markdown`` (bool) giving
    its text; none without those options. The runs' caches are read once for both."""
    from lt_kit.views.analysis import gap_section, seed_group_tables, shift_section
    against, shift = getattr(args, "against", None), getattr(args, "shift", False)
    if against is None and not shift:
        return []
    tables = seed_group_tables(c, against=against, shift=shift, priors=args.prior, device=args.device,
                               data_root=args.data_root)
    out = []
    if against is not None:
        out.append(lambda markdown: gap_section(tables, against.strip(), chosen, markdown))
    if shift:
        out.append(lambda markdown: shift_section(tables, markdown))
    return out
