"""What the CLI tells a user: the parameter table a data set resolves to, where a bad value came from
(``--params`` file or ``--set``), preset names, and what to do after Ctrl-C."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import DEFAULTS, PARAMS, load_params_file, parse_sets, resolve
from .data import DATASETS
from .errors import LtKitError

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params"     # the presets of a source checkout


def preset_path(name: str) -> str:
    """``--params smoke`` -> ``params/smoke.yaml`` (the current folder's ``params/``, else the checkout's);
    a path that exists, or anything that does not name a preset, is returned unchanged."""
    p = Path(name)
    if p.is_file() or p.suffix or len(p.parts) != 1:
        return name
    for folder in (Path("params"), REPO_PARAMS):
        if (folder / f"{name}.yaml").is_file():
            return str(folder / f"{name}.yaml")
    return name


def train_params(params_file: str | None, sets: list[str]) -> tuple[dict, dict]:
    """Resolved parameters and the raw overrides of ``train --params FILE --set k=v ...``. An error names
    where the bad value came from: the file, or ``--set`` (which overrides the file)."""
    path = preset_path(params_file) if params_file else None
    if path and not Path(path).is_file():
        names = sorted({p.stem for d in (Path("params"), REPO_PARAMS) if d.is_dir() for p in d.glob("*.yaml")})
        raise LtKitError(f"params file {path} not found; give a path or a preset name"
                         + (f" ({', '.join(names)})" if names else ""))
    from_file = load_params_file(path) if path else {}
    from_sets = parse_sets(sets)
    overrides = {**from_file, **from_sets}
    where_file = f" in {path}" if path else ""
    try:
        return resolve(overrides, " (--set)" if from_sets else where_file), overrides
    except LtKitError:
        if from_sets and path:
            resolve(from_file, where_file)        # the file alone is wrong: its error names the file
        raise


def params_table(dataset: str | None = None) -> str:
    """Every parameter with the value ``dataset``'s recipe resolves it to (``recipe`` marks a value the data
    set's reference recipe sets), its type and help: what a ``train`` with no other setting uses."""
    name = dataset or DEFAULTS["dataset"]
    if name not in DATASETS:
        raise LtKitError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    params = resolve({"dataset": name})
    recipe = DATASETS[name].recipe
    head = (f"# what `train --set dataset={name}` uses" + ("" if dataset else " (the default data set)")
            + "; other data sets: `python -m lt_kit params --dataset NAME` (" + ", ".join(DATASETS) + ")")
    lines = [head, f"{'parameter':<16} {'type':<6} {'value':<22} {'from':<7} help"]
    for k, (_, typ, help_) in PARAMS.items():
        lines.append(f"{k:<16} {typ.__name__:<6} {params[k]!r:<22} {_source(k, recipe, dataset):<7} {help_}")
    return "\n".join(lines)


def _source(key: str, recipe: dict, dataset: str | None) -> str:
    return "recipe" if key in recipe else "given" if key == "dataset" and dataset else "default"


def interrupted_message(run_dir: str | Path) -> str:
    """What Ctrl-C left behind in ``run_dir`` and the one command that continues from it."""
    from .runs import read_json
    run = Path(run_dir)
    if not (run / "checkpoint.pt").is_file():
        return ("interrupted before the first epoch completed: nothing to resume; run the same command again "
                "(it starts over)")
    try:
        done: Any = len(read_json(run / "history.json"))
    except (OSError, ValueError):
        done = "the last complete epoch"
    return f"interrupted; checkpoint.pt holds epoch {done}: run the same command with --resume to continue"
