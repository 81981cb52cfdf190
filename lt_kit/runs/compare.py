"""Compare runs: many run dirs grouped by configuration, each group's mean and spread over its seeds.

A **group** is the runs whose resolved parameters (``params.yaml``) are equal except ``seed``, the settings
that cannot change a result (``NO_EFFECT``: where the data lies, where and how fast a run ran; the table
lists them) and the run dir's own path, that drew the same subset (``subset.json``, see
``runs.subset_checksum``) and whose ``tde`` entry was scored at the same alpha. A parameter an older run's
``params.yaml`` lacks counts at the current default (a new parameter defaults to the earlier behaviour). Each group
reports n, mean and sample standard deviation of many / medium / few / overall and head / tail for every
**evaluation** its runs hold:
``softmax`` (alpha 0), ``tde`` (the run's alpha) and each post-hoc method recorded under ``metrics.json``'s
``methods`` (any dict there holding a ``metrics`` dict, named by its path: ``logit_adjust/rule``). Entries are
told apart by path, never by value: a validation choice that equals the paper rule is still its own row. A row
held by fewer runs than its group has says, under the table, why each other run lacks it.

A folder that cannot be compared (not a run, unfinished, from an lt_kit without what is needed) is named with
the reason and skipped, or refused with ``strict``: it is never averaged in. A folder named more than once (relative
and absolute, through a symlink, matched by two globs) is one run: it counts once, and a note names the name dropped.
"""
from __future__ import annotations

import glob
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lt_kit.errors import LtKitError
from lt_kit.runs.rundir import read_json, subset_checksum

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
                what = "epoch" if node.get("kind") == "two-stage" else "strength"
                return f"no validation split, so no {what} was chosen"
            from lt_kit.methods import DECOUPLED
            if evaluation.split("/")[0] in DECOUPLED:
                return (f"its metrics.json has no {evaluation} (a run older than the two-stage methods: `python -m "
                        f"lt_kit test --run-dir {run.path} --method {evaluation.split('/')[0]}` scores it)")
            return f"its metrics.json has no {evaluation}"
        node = node[part]
    return f"its {evaluation} entry records no accuracy"


# --------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class RunResult:
    """What compare reads from one finished run dir."""
    path: Path
    params: dict                  # resolved parameters (absent ones at the current default)
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
    from lt_kit.config import DEFAULTS
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

    def shown(self, evaluation: str) -> str:
        """``evaluation`` as compare's table shows it in this group (``tde a=1``)."""
        return shown_name(evaluation, self.alpha)

    def find(self, name: str) -> str | None:
        """The evaluation ``name`` means in this group, by its path (``logit_adjust/val``) or as the table shows
        it (``tde a=1``, which names ``tde`` only where the group's alpha is 1); None when the group holds none."""
        name = name.strip()
        return next((e for e in self.evaluations() if name in (e, self.shown(e))), None)

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
    from lt_kit.data.datasets import DATASETS
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
        extra = "".join(f" {k}={short_value(p.get(k))}" for k in varying)
        labels.append(f"{p['dataset']} r{short_value(p.get('imbalance_ratio'))} {p.get('head')}{extra}")
    out = []
    for g, label in zip(groups, labels):
        twins = [h for h, other in zip(groups, labels) if other == label]
        subset = f" subset {g.subset[:8]}" if len({h.subset for h in twins}) > 1 else ""
        alpha = f" tde@{g.alpha:g}" if len({h.alpha for h in twins}) > 1 else ""
        out.append(label + subset + alpha)
    return out


def shown_name(evaluation: str, alpha: float) -> str:
    """An evaluation as compare's table shows it: ``tde`` with its alpha (``tde a=1``), any other by its path."""
    return f"tde a={alpha:g}" if evaluation == "tde" else evaluation


def short_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    s = json.dumps(v, default=str) if isinstance(v, (list, dict)) else str(v)
    return s if len(s) <= 40 else "..." + s[-37:]


# --------------------------------------------------------------------------- finding run dirs
def expand(patterns: Sequence[str] | str, base: str | Path | None = None,
           exclude: Sequence[str | Path] = ()) -> tuple[list[Path], list[tuple[str, str]], int]:
    """Folders named by ``patterns`` (globs expanded, ``**`` too; relative ones from ``base``), in the order
    named, without ``exclude``; a folder named twice stays twice (:func:`drop_repeats` keeps one, and says so).
    Returns (folders, [(pattern, reason)] for patterns that match nothing, the number of plain files the globs
    matched, which are left out: a glob such as runs/* also meets notebooks)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    base = Path(base) if base is not None else Path.cwd()
    skip = {(base / Path(e).expanduser()).resolve() for e in exclude if e}
    found: list[Path] = []
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
                found.append(_shown(h) if not Path(pat).expanduser().is_absolute() else h)
    return found, missing, files


def drop_repeats(folders: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """``folders`` with each folder once, by its resolved path: named relative and absolute, through a symlink,
    or matched by two globs, one run is still one seed. The first name is kept. Returns (the folders kept,
    [(a name dropped, the kept name of the same folder)])."""
    first: dict[Path, Path] = {}
    kept, dropped = [], []
    for f in folders:
        key = Path(f).resolve()
        if key in first:
            dropped.append((f, first[key]))
        else:
            first[key] = f
            kept.append(f)
    return kept, dropped


def _shown(path: Path) -> Path:
    """``path`` relative to the current directory when it lies below it (as the user typed it)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def read_runs(folders: Iterable[str | Path]) -> tuple[list[RunResult], list[tuple[str, str]]]:
    """Every folder read: (the comparable runs, [(folder, reason)] for the others)."""
    runs, skipped = [], []
    for f in folders:
        try:
            runs.append(read_run(f))
        except NotComparable as e:
            skipped.append((e.path, e.reason))
    return runs, skipped
