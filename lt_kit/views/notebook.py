"""The notebooks' side of lt_kit: strict parameter checking, paths, and display helpers.

papermill only *warns* about a parameter the notebook does not declare, and injects any value of any type.
Each notebook therefore calls one ``check_*`` function right after its parameters cell; it fails with an
``LtKitError`` on an unknown or ill-typed parameter before anything runs. Unknown names are read from the
cell papermill injected (IPython keeps every executed cell's source in ``In``); types are checked against
``config.PARAMS`` and the notebook-only tables below, which ``tests/test_notebooks.py`` keeps in step with
each notebook's parameters cell.
"""
from __future__ import annotations

import ast
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lt_kit.config import DEFAULTS, PARAMS, resolve
from lt_kit.errors import LtKitError

# Parameters a notebook has besides lt_kit's own (config.PARAMS): name -> (type, help).
TRAIN_ONLY: dict[str, tuple[type, str]] = {
    "run_dir": ((str, type(None)), "run folder (relative paths: from the repository root when run from notebooks/); "
                                    "None: runs/train for the default data set, runs/train_<dataset> for another"),
    "overwrite": (bool, "replace an earlier run in run_dir (it is moved aside, not deleted)"),
    "resume": (bool, "continue the run in run_dir from its last complete epoch"),
}
EXPLORER_PARAMS: dict[str, tuple[type, str]] = {
    "run_dir": (str, "a run folder written by train.ipynb or `python -m lt_kit train`"),
    "method": (str, "the slider's first method: tde, logit_adjust, tau_norm; empty: tde, else the head's first"),
    "alpha_max": (float, "right end of the TDE slider and sweep (the other methods use their own range)"),
    "sweep_step": (float, "strength spacing of the static sweep"),
    "test_prior": (str, "test label distribution: uniform, forward2..forward50, backward2..backward50 (LADE / SADE "
                        "protocol), or estimated (from a drawn test set's unlabelled images)"),
    "estimate_from": (str, "the 'estimated' prior's drawn test set follows this prior (forward50 .. backward50)"),
    "estimator": (str, "how the 'estimated' prior is read from the drawn images: em or bbse"),
    "draws": (int, "sub-sampled test sets per prior in the 'prior unknown' table (0: skip that section)"),
}
DIRECTION_PARAMS: dict[str, tuple[type, str]] = {
    "run_dir": (str, "a run folder written by train.ipynb or `python -m lt_kit train`"),
    "alpha": ((float, type(None)), "TDE strength for the logit shift; None: the run's alpha"),
    "max_points": (int, "test features drawn in the 2-D projection"),
}
COMPARE_PARAMS: dict[str, tuple[type, str]] = {
    "runs": ((list, str), "run folders or globs (relative paths: from the repository root)"),
    "evaluation": (str, "what the figures show: softmax (alpha 0), tde (the run's alpha) or a post-hoc method"),
    "strict": (bool, "stop at a folder that cannot be compared instead of skipping it"),
    "out_dir": (str, "folder for the table (compare.md, compare.csv) and the figures"),
}
NON_NEGATIVE = ("draws",)                    # counts a notebook parameter gives, 0 meaning "skip"
# Path-valued parameters: resolved with base_dir() so a notebook finds the same files as the CLI.
PATH_PARAMS = ("run_dir", "data_root", "train_list", "val_list", "test_list", "test_root", "val_root")
_PAPERMILL_HEADER = "# Parameters"           # first line of the cell papermill injects


def train_parameters() -> dict[str, type]:
    """Every parameter train.ipynb declares, with its type: all of lt_kit's plus the notebook-only ones."""
    return {**{k: v[1] for k, v in PARAMS.items()}, **{k: v[0] for k, v in TRAIN_ONLY.items()}}


def injected_names(namespace: dict) -> list[str] | None:
    """Names assigned in the cell papermill injected, or None when no such cell ran (an interactive session)."""
    history = namespace.get("In")
    if not isinstance(history, list):
        return None
    for src in reversed(history):
        if isinstance(src, str) and src.lstrip().startswith(_PAPERMILL_HEADER):
            try:
                tree = ast.parse(src)
            except SyntaxError:
                return None
            return [t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(t, ast.Name)]
    return None


def _check_unknown(namespace: dict, declared) -> None:
    unknown = [n for n in injected_names(namespace) or [] if n not in declared]
    if unknown:
        near = {n: difflib.get_close_matches(n, declared, n=1) for n in unknown}
        hints = "".join(f" (did you mean {near[n][0]!r}?)" if near[n] else "" for n in unknown[:1])
        raise LtKitError(f"unknown notebook parameter{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}"
                         f"{hints}; this notebook declares: {', '.join(declared)}")


def _typed(name: str, value: Any, typ) -> Any:
    """``value`` as ``typ`` (a type or a tuple of types); strings from ``papermill -r`` are parsed as YAML."""
    types = typ if isinstance(typ, tuple) else (typ,)
    if isinstance(value, str) and str not in types:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = any(isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in types)
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        want = " or ".join("None" if t is type(None) else t.__name__ for t in types)
        raise LtKitError(f"notebook parameter {name!r} must be {want}, got {value!r} ({type(value).__name__})")
    return value


def base_dir() -> Path:
    """Where relative paths start: the repository root when the kernel runs in a checkout's ``notebooks/``
    folder (JupyterLab starts kernels beside the notebook), else the current directory (papermill, CLI)."""
    cwd = Path.cwd()
    if cwd.name == "notebooks" and (cwd.parent / "pyproject.toml").is_file() and (cwd.parent / "lt_kit").is_dir():
        return cwd.parent
    return cwd


def resolve_path(path: str) -> str:
    """An absolute path for a path parameter; ``''`` (not set) stays ``''``."""
    if not path:
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base_dir() / p)


@dataclass
class TrainJob:
    """What train.ipynb runs: resolved lt_kit parameters and the run folder."""
    params: dict
    run_dir: Path
    overwrite: bool = False
    resume: bool = False

    def __repr__(self) -> str:
        p = self.params
        mode = " (resume)" if self.resume else " (overwrite)" if self.overwrite else ""
        return (f"{p['dataset']} ratio {p['imbalance_ratio']:g}, {p['arch']} + {p['head']} head, {p['epochs']} epochs "
                f"x batch {p['batch_size']}, lr {p['lr']:g} ({p['schedule']}), alpha {p['alpha']:g}, "
                f"device {p['device']}, seed {p['seed']}\nrun dir: {self.run_dir}{mode}")


def default_run_dir(dataset: Any) -> str:
    """train.ipynb's run folder when ``run_dir`` is None: ``runs/train`` for the default data set (what the
    analysis notebooks open by default), ``runs/train_<dataset>`` for another."""
    return "runs/train" if dataset in (None, DEFAULTS["dataset"]) else f"runs/train_{dataset}"


def check_train_parameters(namespace: dict) -> TrainJob:
    """Validate train.ipynb's parameters (pass ``globals()``) and resolve them with the dataset's recipe.

    ``None`` leaves a value to the recipe, so ``-p dataset cifar10_lt`` alone is the reference recipe.
    Fails before any training when a parameter is unknown or ill-typed, or run_dir holds an earlier run
    and neither ``overwrite`` nor ``resume`` is set."""
    declared = train_parameters()
    _check_unknown(namespace, list(declared))
    missing = [k for k in declared if k not in namespace]
    if missing:
        raise LtKitError(f"parameters not defined: {', '.join(missing)}; run the parameters cell first")
    extra = {k: _typed(k, namespace[k], TRAIN_ONLY[k][0]) for k in TRAIN_ONLY}
    overrides = {k: namespace[k] for k in PARAMS}
    if extra["overwrite"] and extra["resume"]:
        raise LtKitError("set either overwrite or resume, not both")
    if extra["run_dir"] is None:     # named after the data set: the digits demo and a CIFAR run never share one
        extra["run_dir"] = default_run_dir(namespace["dataset"])
    if not extra["run_dir"]:
        raise LtKitError("run_dir is empty; name a folder for the run (for example runs/train)")
    run_dir = Path(resolve_path(extra["run_dir"]))
    from lt_kit.runs.rundir import RunDir
    run = RunDir(run_dir)
    if extra["resume"]:          # as the CLI: a resumed run keeps its own parameters unless set here
        overrides = {**run.params(), **{k: v for k, v in overrides.items() if v is not None}}
    params = resolve(overrides, " (notebook parameter)")
    for k in PATH_PARAMS:             # a resumed run's own paths stay as written, or resume sees a change
        if k in params and not (extra["resume"] and namespace[k] is None):
            params[k] = resolve_path(params[k])
    if params["pretrained"].lower().endswith((".pt", ".pth")) and \
            not (extra["resume"] and namespace["pretrained"] is None):       # a weights file is a path as well
        params["pretrained"] = resolve_path(params["pretrained"])
    run.check(params, resume=extra["resume"], overwrite=extra["overwrite"],
              advice="set overwrite=True to replace it (it is moved aside), resume=True to continue it, "
                     "or choose another run_dir")
    return TrainJob(params, run_dir, extra["overwrite"], extra["resume"])


def choices(name: str) -> list[str] | None:
    """The values a notebook parameter may take when they are a fixed list (None: any value of its type)."""
    from lt_kit.evaluation.adaptation import ESTIMATORS
    from lt_kit.views.explorer import ESTIMATED
    from lt_kit.views.plots import protocol_priors
    if name == "test_prior":
        return [*protocol_priors(), ESTIMATED]
    if name == "estimate_from":
        return protocol_priors()
    if name == "estimator":
        return list(ESTIMATORS)
    return None


def check_parameters(namespace: dict, declared: dict[str, tuple]) -> dict[str, Any]:
    """Validate a notebook's parameters against ``declared`` (name -> (type, help)); returns their values,
    with path parameters made absolute (see :func:`base_dir`). A parameter with a fixed list of values
    (:func:`choices`) outside it stops here with one line naming them."""
    _check_unknown(namespace, list(declared))
    out = {}
    for k, (typ, _) in declared.items():
        if k not in namespace:
            raise LtKitError(f"parameter {k!r} not defined; run the parameters cell first")
        out[k] = _typed(k, namespace[k], typ)
        valid = choices(k)
        if valid is not None and out[k] not in valid:
            raise LtKitError(f"notebook parameter {k!r} must be one of {', '.join(valid)}, got {out[k]!r}")
        if k in NON_NEGATIVE and out[k] < 0:
            raise LtKitError(f"notebook parameter {k!r} must be >= 0, got {out[k]!r}")
        if k in PATH_PARAMS:
            out[k] = resolve_path(out[k])
    return out


def check_run_dir(run_dir: str | Path) -> Path:
    """A run folder that holds a feature cache, or a clear error saying how to make one."""
    path = Path(run_dir)
    if not (path / "features.pt").is_file():
        if not (path / "params.yaml").is_file():
            raise LtKitError(f"{path} is not an lt_kit run (no params.yaml); run train.ipynb or `python -m lt_kit "
                             "train` into it first, or set run_dir to an existing run")
        if not (path / "checkpoint.pt").is_file():
            raise LtKitError(f"{path} holds a run stopped before its first complete epoch; train it again "
                             "(train.ipynb or `python -m lt_kit train` on the same run_dir starts it over)")
        if not (path / "metrics.json").is_file():
            raise LtKitError(f"{path} holds an unfinished training run; finish it with resume=True in train.ipynb "
                             "(or `python -m lt_kit train --run-dir ... --resume`)")
        raise LtKitError(f"{path} has no features.pt; run `python -m lt_kit test --run-dir {path}` to build it")
    return path


@dataclass
class Run:
    """A finished run as the analysis notebooks need it: its folder, parameters and test-feature cache."""
    path: Path
    params: dict
    cache: Any                                  # evaluate.FeatureCache

    @property
    def alpha(self) -> float:
        """The run's own (preset) alpha."""
        return float(self.params["alpha"])

    @property
    def figures(self) -> Path:
        """Where the notebooks save their figures as PNG files."""
        return self.path / "figures"


def load_run(run_dir: str | Path) -> Run:
    from lt_kit.evaluation.features import FeatureCache
    from lt_kit.runs.rundir import RunDir
    path = check_run_dir(run_dir)
    return Run(path, RunDir(path).params(), FeatureCache.load(path / "features.pt"))


def train_figures(run_dir: str | Path) -> dict:
    """Training curves and per-class accuracy vs training count of a finished training run."""
    import lt_kit.views.plots as plots
    from lt_kit.runs.rundir import read_json
    run_dir = Path(run_dir)
    return {"training_curves": plots.training_curves(read_json(run_dir / "history.json")),
            "per_class_accuracy": plots.per_class_vs_count(read_json(run_dir / "metrics.json"))}


def save_and_show(figures: dict, folder: str | Path) -> None:
    """Save each figure as ``folder/<name>.png`` and display it."""
    from lt_kit.views.plots import save_figure
    for name, fig in figures.items():
        save_figure(fig, Path(folder) / f"{name}.png")
    show(*figures.values())


def show(*figures) -> None:
    """Display matplotlib Figures as PNG images (no pyplot, so nothing is shown twice or kept in memory)."""
    from IPython.display import Image, display

    from lt_kit.views.plots import to_png
    for fig in figures:
        display(Image(data=to_png(fig)))
