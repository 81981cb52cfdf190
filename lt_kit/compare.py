"""Compare runs: many run dirs grouped by configuration, each group's mean and spread over its seeds.

A **group** is the runs whose resolved parameters (``params.yaml``) are equal except ``seed``, the settings
that cannot change a result (``NO_EFFECT``: where the data lies, where and how fast a run ran; the table
lists them) and the run dir's own path, that drew the same subset (``subset.json``, see
``runs.subset_checksum``) and whose ``tde`` entry was scored at the same alpha. A parameter an older run's
``params.yaml`` lacks counts at today's default (a new parameter defaults to the old behaviour). Each group
reports n, mean and sample standard deviation of many / medium / few / overall and head / tail for every
**evaluation** its runs hold:
``softmax`` (alpha 0), ``tde`` (the run's alpha) and each post-hoc method recorded under ``metrics.json``'s
``methods`` (any dict there holding a ``metrics`` dict, named by its path: ``logit_adjust/rule``). Entries are
told apart by path, never by value: a validation choice that equals the paper rule is still its own row. A row
held by fewer runs than its group has says, under the table, why each other run lacks it.

A folder that cannot be compared (not a run, unfinished, from an lt_kit without what is needed) is named with
the reason and skipped, or refused with ``strict``: it is never averaged in.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import LtKitError
from .runs import read_json, subset_checksum

SPLITS = ("many", "medium", "few", "overall", "head", "tail")
BAR_SPLITS = ("many", "medium", "few", "overall")
IGNORED = ("seed",)                       # what may differ inside a group
# Settings that cannot change a result: where the data lies, where and how fast a run ran. They never split a
# group (``--ignore`` adds more); ``data_root`` does for the image-file data sets, where it names the data.
NO_EFFECT = ("data_root", "download", "device", "num_workers", "cudnn_benchmark", "channels_last", "compile",
             "fast_step", "eval_every")
SAME_AS = {"tde/rule": "tde"}             # TDE's paper rule is the run's own alpha: the tde entry itself
BASE_EVALUATIONS = ("softmax", "tde")     # metrics.json's own entries: alpha 0 and the run's alpha
NEEDS = "from an lt_kit without what compare needs"


class NotComparable(LtKitError):
    """A folder that cannot be compared, with the reason (``reason``) and the folder (``path``)."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


# --------------------------------------------------------------------------- maths (pure)
def mean_std(values: Iterable[float | None]) -> tuple[int, float, float]:
    """``(n, mean, sd)`` of the finite values: sd is the sample standard deviation (divisor n - 1).

    None and NaN (a split with no class) are left out; mean is NaN when n = 0, sd when n < 2."""
    v = np.array([float(x) for x in values if x is not None and math.isfinite(float(x))], dtype=np.float64)
    n = int(v.size)
    return n, float(v.mean()) if n else math.nan, float(v.std(ddof=1)) if n > 1 else math.nan


def split_values(entry: dict) -> dict[str, float]:
    """many / medium / few / overall / head / tail of one evaluation entry (NaN where absent)."""
    ht = entry.get("head_tail") or {}
    return {k: _num(ht.get(k) if k in ("head", "tail") else entry.get(k)) for k in SPLITS}


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def method_evaluations(methods: Any, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """``(path, metrics)`` for every dict under ``methods`` that holds a ``metrics`` dict, depth first."""
    if not isinstance(methods, dict):
        return
    for name, node in methods.items():
        if not isinstance(node, dict):
            continue
        path = f"{prefix}{name}"
        if isinstance(node.get("metrics"), dict):
            yield path, node["metrics"]
        yield from method_evaluations({k: v for k, v in node.items() if k != "metrics"}, f"{path}/")


def evaluations(metrics: dict) -> dict[str, dict]:
    """Every evaluation of a ``metrics.json``: ``softmax``, ``tde`` (not for a linear head) and the methods."""
    out = {k: metrics[k] for k in BASE_EVALUATIONS if isinstance(metrics.get(k), dict)}
    for path, entry in method_evaluations(metrics.get("methods")):
        if path in SAME_AS or path in out:  # an older run's copy of the tde entry under methods/tde/rule
            continue
        if any(entry.get(k) is not None for k in ("many", "medium", "few", "overall")):
            out[path] = entry
    return out


def why_missing(run: "RunResult", evaluation: str) -> str:
    """Why ``run`` holds no ``evaluation`` (read from its metrics.json's ``methods``)."""
    if evaluation in BASE_EVALUATIONS:
        return f"its metrics.json has no {evaluation} entry"
    if not isinstance(run.methods, dict):
        return "its metrics.json has no post-hoc methods (written by an older lt_kit)"
    node: Any = run.methods
    for part in evaluation.split("/"):
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            if isinstance(node, dict) and node.get("unavailable"):
                return str(node["unavailable"])
            if part == "val" and isinstance(node, dict) and "val" in node:
                return "no validation split, so no strength was chosen"
            return f"its metrics.json has no {evaluation}"
        node = node[part]
    return f"its {evaluation} entry records no accuracy"


# --------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class RunResult:
    """What compare reads from one finished run dir."""
    path: Path
    params: dict                  # resolved parameters (absent ones at today's default)
    alpha: float                  # the alpha of the ``tde`` entry (metrics.json; ``test --alpha`` changes it)
    subset: dict                  # {"sha256", "n", "files"}
    evaluations: dict             # name -> entry (many/medium/few/overall, head_tail, per_class)
    train_counts: tuple
    thresholds: dict
    version: str = ""             # the lt_kit version that wrote it
    methods: Any = None           # metrics.json's "methods" (why_missing reads it)

    @property
    def seed(self) -> int:
        return self.params["seed"]


def read_run(path: str | Path) -> RunResult:
    """Read one run dir, or raise ``NotComparable`` saying why it cannot be compared."""
    path = Path(path)
    if not path.exists():
        raise NotComparable(path, "does not exist")
    if not path.is_dir():
        raise NotComparable(path, "not a folder")
    if not (path / "params.yaml").is_file():
        inner = sum((d / "params.yaml").is_file() for d in path.iterdir() if d.is_dir())
        hint = f"; it holds {inner} run dir{'s' * (inner != 1)}: pass {path}/*" if inner else ""
        raise NotComparable(path, f"not a run (no params.yaml){hint}")
    try:
        params = yaml.safe_load((path / "params.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        raise NotComparable(path, "not an lt_kit run (params.yaml is not readable YAML)") from None
    if not isinstance(params, dict) or not {"dataset", "seed"} <= set(params):
        raise NotComparable(path, "not an lt_kit run (params.yaml has no dataset and seed)")
    if not (path / "metrics.json").is_file():
        raise NotComparable(path, f"unfinished: no metrics.json ({_progress(path, params)})")
    try:
        metrics = read_json(path / "metrics.json")
    except (OSError, ValueError):
        raise NotComparable(path, "unreadable metrics.json") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("softmax"), dict):
        raise NotComparable(path, f"{NEEDS}: metrics.json has no softmax entry")
    for name in BASE_EVALUATIONS:
        entry = metrics.get(name)
        missing = [k for k in ("many", "medium", "few", "overall", "head_tail", "per_class")
                   if isinstance(entry, dict) and k not in entry]
        if missing:
            raise NotComparable(path, f"{NEEDS}: metrics.json's {name} entry has no {', '.join(missing)}")
    if "train_counts" not in metrics:
        raise NotComparable(path, f"{NEEDS}: metrics.json has no train_counts")
    try:
        subset = subset_checksum(path)
    except LtKitError:
        raise NotComparable(path, f"{NEEDS}: no readable subset_indices.npy") from None
    from .config import DEFAULTS
    thresholds = metrics.get("thresholds") or {"many": params.get("many_threshold"), "few": params.get("few_threshold")}
    return RunResult(path, {**DEFAULTS, **params}, _num(metrics.get("alpha", params.get("alpha"))), subset,
                     evaluations(metrics), tuple(metrics["train_counts"]), thresholds, _version(path),
                     metrics.get("methods"))


def _progress(path: Path, params: dict) -> str:
    """How far an unfinished run got, from history.json."""
    try:
        done = len(read_json(path / "history.json"))
    except (OSError, ValueError, TypeError):
        return "training stopped early or is still running"
    resume = f"`python -m lt_kit train --run-dir {path} --resume`"
    if done == params.get("epochs"):
        return f"all {done} epochs trained, not evaluated: {resume} evaluates it"
    return f"{done} of {params.get('epochs', '?')} epochs in history.json: stopped ({resume} goes on), or still running"


def _version(path: Path) -> str:
    """The lt_kit version that wrote the run (version.json), '' when unknown."""
    try:
        v = read_json(path / "version.json")
    except (OSError, ValueError):
        return ""
    return str(v.get("lt_kit", "")) if isinstance(v, dict) else ""


# --------------------------------------------------------------------------- groups
@dataclass
class Group:
    """Runs that differ only in seed (and the ``ignore`` keys): one configuration, several seeds."""
    runs: list[RunResult]
    label: str = ""

    @property
    def params(self) -> dict:
        return self.runs[0].params

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    @property
    def subset(self) -> str:
        return self.runs[0].subset["sha256"]

    @property
    def alpha(self) -> float:
        return self.runs[0].alpha

    @property
    def train_counts(self) -> np.ndarray:
        return np.asarray(self.runs[0].train_counts)

    def evaluations(self) -> list[str]:
        """Evaluations held by any of its runs: softmax, tde, then methods in the order first seen."""
        return list(dict.fromkeys(name for r in self.runs for name in r.evaluations))

    def holding(self, evaluation: str) -> list[RunResult]:
        return [r for r in self.runs if evaluation in r.evaluations]

    def stats(self, evaluation: str) -> dict[str, tuple[int, float, float]]:
        """split -> (n, mean, sd) over the runs that hold ``evaluation`` (fractions in [0, 1])."""
        vals = [split_values(r.evaluations[evaluation]) for r in self.holding(evaluation)]
        return {k: mean_std(v[k] for v in vals) for k in SPLITS}

    def values(self, evaluation: str, split: str) -> list[float]:
        """The runs' own values of one split (for the dots beside a bar)."""
        return [split_values(r.evaluations[evaluation])[split] for r in self.holding(evaluation)]

    def per_class(self, evaluation: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, mean, sd) per class over the runs that hold ``evaluation`` with per-class accuracy."""
        rows = [r.evaluations[evaluation]["per_class"] for r in self.holding(evaluation)
                if r.evaluations[evaluation].get("per_class") is not None]
        if not rows:
            raise LtKitError(f"no run of {self.label or 'this group'} records per-class accuracy for {evaluation}")
        stats = [mean_std(col) for col in zip(*rows)]
        return tuple(np.array([s[i] for s in stats]) for i in range(3))


def ignored(params: dict, ignore: Sequence[str] = ()) -> set[str]:
    """The parameters that may differ inside a group: seed, ``NO_EFFECT`` (``data_root`` only where the data
    set is built in, not read from image files) and ``ignore``."""
    from .data import DATASETS
    info = DATASETS.get(params.get("dataset"))
    keep = {"data_root"} if info is None or info.kind != "tensor" else set()
    return {*IGNORED, *ignore, *(set(NO_EFFECT) - keep)}


def group_key(run: RunResult, ignore: Sequence[str] = ()) -> str:
    """What a group shares: parameters except seed, ``NO_EFFECT`` and ``ignore``, the subset and the tde alpha."""
    skip = ignored(run.params, ignore)
    params = {k: v for k, v in run.params.items() if k not in skip}
    return json.dumps([params, run.subset["sha256"], run.alpha if "tde" in run.evaluations else None],
                      sort_keys=True, default=str)


def group_runs(runs: Iterable[RunResult], ignore: Sequence[str] = ()) -> list[Group]:
    """Runs grouped by ``group_key`` (groups and their runs in the order first seen), each with a label
    that names what sets it apart from the other groups."""
    groups: dict[str, Group] = {}
    for r in runs:
        groups.setdefault(group_key(r, ignore), Group([])).runs.append(r)
    out = list(groups.values())
    for g, label in zip(out, group_labels(out, ignore)):
        g.label = label
    return out


def group_labels(groups: Sequence[Group], ignore: Sequence[str] = ()) -> list[str]:
    """``dataset rRATIO head`` plus every other parameter whose value differs between the groups; the
    subset and the tde alpha where only they differ."""
    skip = set.intersection(*(ignored(g.params, ignore) for g in groups)) if groups else set()
    keys = sorted({k for g in groups for k in g.params} - {"dataset", "imbalance_ratio", "head", *skip})
    varying = [k for k in keys if len({json.dumps(g.params.get(k), default=str) for g in groups}) > 1]
    labels = []
    for g in groups:
        p = g.params
        extra = "".join(f" {k}={_short(p.get(k))}" for k in varying)
        labels.append(f"{p['dataset']} r{_short(p.get('imbalance_ratio'))} {p.get('head')}{extra}")
    out = []
    for g, label in zip(groups, labels):
        twins = [h for h, other in zip(groups, labels) if other == label]
        subset = f" subset {g.subset[:8]}" if len({h.subset for h in twins}) > 1 else ""
        alpha = f" tde@{g.alpha:g}" if len({h.alpha for h in twins}) > 1 else ""
        out.append(label + subset + alpha)
    return out


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    s = json.dumps(v, default=str) if isinstance(v, (list, dict)) else str(v)
    return s if len(s) <= 40 else "..." + s[-37:]


# --------------------------------------------------------------------------- finding run dirs
def expand(patterns: Sequence[str] | str, base: str | Path | None = None,
           exclude: Sequence[str | Path] = ()) -> tuple[list[Path], list[tuple[str, str]], int]:
    """Folders named by ``patterns`` (globs expanded, ``**`` too; relative ones from ``base``), without
    duplicates or ``exclude``. Returns (folders, [(pattern, reason)] for patterns that match nothing, the
    number of plain files the globs matched, which are left out: a glob such as runs/* also meets notebooks)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    base = Path(base) if base is not None else Path.cwd()
    skip = {(base / Path(e).expanduser()).resolve() for e in exclude if e}
    seen: dict[Path, None] = {}
    missing, files = [], 0
    for pat in patterns:
        if not isinstance(pat, str) or not pat:
            raise LtKitError(f"a run dir must be a non-empty path or glob, got {pat!r}")
        full = Path(pat).expanduser()
        full = full if full.is_absolute() else base / full
        if not glob.has_magic(pat):
            hits = [full]
        else:
            hits = sorted(Path(h) for h in glob.glob(str(full), recursive=True))
            files += sum(not h.is_dir() for h in hits)
            hits = [h for h in hits if h.is_dir()]
            if not hits:
                missing.append((pat, "no folder matches this glob"))
        for h in hits:
            if h.resolve() not in skip:
                seen.setdefault(_shown(h) if not Path(pat).expanduser().is_absolute() else h, None)
    return list(seen), missing, files


def _shown(path: Path) -> Path:
    """``path`` relative to the current directory when it lies below it (as the user typed it)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


# --------------------------------------------------------------------------- the comparison
@dataclass
class Comparison:
    """Groups of runs and the folders left out; ``text()``, ``markdown()``, ``csv()`` and the figures."""
    groups: list[Group]
    skipped: list[tuple[str, str]] = field(default_factory=list)     # (folder or pattern, reason)
    ignored_files: int = 0
    ignore: tuple = ()                                               # the caller's own --ignore keys

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
                out.append({"group": g.label, "evaluation": f"tde a={g.alpha:g}" if e == "tde" else e, "key": e,
                            "alpha": g.alpha, "n": len(held), "seeds": _seeds([r.seed for r in held]),
                            "subset": g.subset[:8], "stats": g.stats(e), "runs": [str(r.path) for r in held]})
        return out

    def notes(self) -> list[str]:
        """What the numbers mean, which subsets differ, repeated seeds, lt_kit versions and skipped folders."""
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
            values = [{_short(r.params.get(k)) for r in g.runs if k in ignored(r.params, self.ignore)}
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
        from .plots import per_class_band_figure
        self.check_evaluation(evaluation)
        curves = [(f"{g.label} (n={len(g.holding(evaluation))})", g.train_counts, *g.per_class(evaluation)[1:])
                  for g in self.groups if g.holding(evaluation)]
        return per_class_band_figure(curves, title=f"per-class accuracy, {evaluation}: mean ± sd over seeds")

    def splits_figure(self, evaluation: str):
        """many / medium / few / overall bars per group, error bars ± one sd, each seed as a dot."""
        from .plots import split_bars_figure
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


def read_runs(folders: Iterable[str | Path]) -> tuple[list[RunResult], list[tuple[str, str]]]:
    """Every folder read: (the comparable runs, [(folder, reason)] for the others)."""
    runs, skipped = [], []
    for f in folders:
        try:
            runs.append(read_run(f))
        except NotComparable as e:
            skipped.append((e.path, e.reason))
    return runs, skipped


def compare_runs(patterns: Sequence[str] | str, *, strict: bool = False, ignore: Sequence[str] = (),
                 base: str | Path | None = None, exclude: Sequence[str | Path] = ()) -> Comparison:
    """Read the run dirs ``patterns`` name (globs welcome) and group them; see the module docstring.

    ``strict``: a folder that cannot be compared (or a glob that matches nothing) is an error instead of
    a skipped line. ``ignore``: parameters that may also differ inside a group (``seed`` always may)."""
    from .config import PARAMS
    unknown = [k for k in ignore if k not in PARAMS]
    if unknown:
        raise LtKitError(f"unknown parameter {unknown[0]!r} to ignore; parameters: {', '.join(PARAMS)}")
    folders, missing, files = expand(patterns, base, exclude)
    runs, skipped = read_runs(folders)
    skipped = missing + skipped
    if strict and skipped:
        raise LtKitError(f"{len(skipped)} of the run dirs given cannot be compared (strict): "
                         + "; ".join(f"{p}: {reason}" for p, reason in skipped))
    if not runs:
        why = "; ".join(f"{p}: {reason}" for p, reason in skipped[:3]) or "no folder given"
        raise LtKitError(f"no run to compare among {len(folders) + len(missing)} given ({why})")
    return Comparison(group_runs(runs, ignore), skipped, files, tuple(ignore))


def compare_command(args) -> int:
    """``python -m lt_kit compare``: print the text table, or with ``--markdown FILE`` / ``--csv FILE`` also
    write those (``-``: print that format instead of the text)."""
    c = compare_runs(args.run_dirs, strict=args.strict, ignore=args.ignore)
    chosen = args.evaluation or None
    printed, written = False, []
    for fmt, dest in (("markdown", args.markdown), ("csv", args.csv)):
        if dest is None:
            continue
        out = getattr(c, fmt)(chosen)
        if dest == "-":
            print(out, end="")
            printed = True
        else:
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            Path(dest).write_text(out)
            written.append(dest)
    if not printed:
        print(c.text(chosen))
    for dest in written:
        print(f"wrote {dest}")
    return 0
