"""``python -m lt_kit train|test|params|compare|demo|shift|calibration|gap|adapt``: the reference's ``main.py --cfg
... [--test --model_dir ...]``, the analyses that read a run's caches (``views/analysis.py``,
``views/adaptation.py``), and what the CLI tells a user: the parameter table a data set resolves to, where a bad
value came from (``--params`` file or ``--set``), preset names, and what to do after Ctrl-C."""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lt_kit.config import DEFAULTS, PARAMS, load_params_file, parse_sets, resolve
from lt_kit.data.datasets import DATASETS
from lt_kit.errors import LtKitError, on_every_rank
from lt_kit.runs.guard import env_rank

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params"     # the presets of a source checkout
PIPE_CLOSED_STATUS = 141         # 128 + SIGPIPE: what a shell reports for a writer whose reader went away


class ReaderGone(Exception):
    """stdout's reader went away (``| head``): the output was not wanted further, not an error."""


@contextmanager
def to_stdout():
    """A block that prints to stdout, flushed before it ends: a closed pipe raises :class:`ReaderGone` here,
    inside ``main``, rather than a BrokenPipeError traceback at the print or at the interpreter's exit."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        raise ReaderGone from None


def silence_stdout() -> None:
    """Point stdout's file descriptor at devnull, so the interpreter's last flush of what is still buffered
    cannot meet the closed pipe again ("Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):    # no real descriptor (a captured stdout): nothing left to flush into a pipe
        pass


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
    from lt_kit.runs.rundir import read_json
    run = Path(run_dir)
    if not (run / "checkpoint.pt").is_file():
        return ("interrupted before the first epoch completed: nothing to resume; run the same command again "
                "(it starts over)")
    try:
        done: Any = len(read_json(run / "history.json"))
    except (OSError, ValueError):
        done = "the last complete epoch"
    return f"interrupted; checkpoint.pt holds epoch {done}: run the same command with --resume to continue"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lt_kit", description="Causal-TDE long-tailed classification")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train, evaluate, write a run dir")
    t.add_argument("--params", help="YAML file of overrides (see params/)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one parameter")
    t.add_argument("--run-dir", required=True)
    g = t.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue from the run dir's last complete epoch")
    g.add_argument("--overwrite", action="store_true", help="replace an earlier run (it is moved aside, not deleted)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    e = sub.add_parser("test", help="score a run dir with a method (from its feature caches): a post-hoc one at any "
                       "strength, or a two-stage one (cRT, LWS) re-trained on the cached training features")
    e.add_argument("--run-dir", required=True)
    e.add_argument("--method", help="post-hoc method: tde (causal_norm head), logit_adjust (any head), tau_norm "
                   "(linear head); two-stage method (no strength): crt, lws (any head); default: tde on a "
                   "causal_norm run, the head's own logits otherwise")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="crt/lws only: one of their settings (crt_epochs, crt_lr, crt_batch_size, crt_weight_decay, "
                   "lws_epochs, lws_lr, lws_batch_size, lws_weight_decay, train_feature_passes)")
    e.add_argument("--strength", type=float, help="the method's strength (alpha or tau; default: its paper rule)")
    e.add_argument("--alpha", type=float, help="TDE strength: the same as --method tde --strength ALPHA")
    e.add_argument("--checkpoint", help="evaluate this checkpoint instead of the run's own")
    e.add_argument("--device", help="override the run's device")
    e.add_argument("--data-root", help="where the run's data lies on this machine, when a feature cache must be "
                   "rebuilt (default: the run's own data_root)")
    d = sub.add_parser("demo", help="the embedded digits recipe on several seeds: mean ± sd of every method, and "
                       "each seed's gain of TDE and logit adjustment over De-confound (make demo)")
    d.add_argument("--run-dir", default="runs/demo", help="the seeds' runs go into RUN_DIR/seed<N> (default runs/demo)")
    d.add_argument("--seeds", type=int, default=5, help="how many seeds, 0 to N-1 (default 5)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one parameter")
    pp = sub.add_parser("params", help="every parameter: the value a data set's recipe resolves it to, and its help")
    pp.add_argument("--dataset", help="show this data set's recipe (default: the default data set, digits_lt)")
    c = sub.add_parser("compare", help="group run dirs by configuration: mean and spread over seeds")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders; globs are expanded (quote them)")
    c.add_argument("--evaluation", action="append", help="only this one (softmax, tde, a method such as "
                   "logit_adjust/rule); repeatable")
    c.add_argument("--markdown", metavar="FILE", help="also write the table as markdown ('-': print it instead)")
    c.add_argument("--csv", metavar="FILE", help="also write the table as CSV ('-': print it instead)")
    c.add_argument("--strict", action="store_true", help="refuse (exit 2) a folder that cannot be compared")
    c.add_argument("--ignore", action="append", default=[], metavar="KEY",
                   help="a parameter that may also differ inside a group, as seed does (e.g. weight_decay); "
                   "settings that cannot change a result (device, data_root, ...) always may")
    c.add_argument("--against", metavar="EVALUATION", help="also each evaluation's paired gap to this one, per seed "
                   "with its 95%% bootstrap interval and over each group's seeds (mean ± sd, sign held): tde, "
                   "softmax, logit_adjust/val, or a name as the table shows it ('tde a=1'); reads the runs' caches")
    c.add_argument("--shift", action="store_true", help="also every evaluation under test label distributions, "
                   "mean ± sd over each group's seeds (reads the runs' caches)")
    c.add_argument("--prior", action="append", metavar="NAME", help="with --shift: a prior, as `shift --prior` "
                   "takes it; repeatable")
    c.add_argument("--device", help="with --against / --shift: the device for a cache rebuild")
    c.add_argument("--data-root", help="with --against / --shift: where the runs' data lies on this machine, when "
                   "a cache must be rebuilt")
    _analysis_parsers(sub)
    from lt_kit.views.adaptation import add_adapt_parser
    add_adapt_parser(sub)               # adapt: the test prior estimated, every method adapted (views/adaptation.py)
    return p


def _analysis_parsers(sub) -> None:
    """``shift``, ``calibration``, ``gap``: how far to trust a gap (``views/analysis.py``)."""
    sh = sub.add_parser("shift", help="a run's every evaluation under test label distributions (LADE / SADE priors)")
    sh.add_argument("--prior", action="append", metavar="NAME", help="forward50..forward2, uniform, backward2.."
                    "backward50 (any forwardR / backwardR), train, or all; repeatable (default: forward50, "
                    "forward10, uniform, backward10, backward50)")
    sh.add_argument("--weights", metavar="W1,W2,...", help="a prior of your own: one positive weight per class")
    ca = sub.add_parser("calibration", help="a run's ECE, NLL and reliability, before and after a validation "
                        "temperature, overall and many / medium / few")
    ca.add_argument("--figure", metavar="PNG", help="also save the reliability diagrams (one panel per evaluation, "
                    "before and after the temperature) to this file")
    gp = sub.add_parser("gap", help="every evaluation's paired accuracy gap to one: bootstrap interval, McNemar p")
    gp.add_argument("--against", default="tde", metavar="EVALUATION", help="the reference (default: tde; any "
                    "evaluation such as softmax, logit_adjust/val, crt/rule)")
    gp.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (default 0)")
    gp.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples (default 10000)")
    gp.add_argument("--other-run", metavar="DIR", help="another model's run on the same test set: each of its "
                    "evaluations against --against of --run-dir, image by image (e.g. TDE against a softmax model)")
    for q in (sh, ca, gp):
        q.add_argument("--run-dir", required=True, action="append" if q is gp else "store",
                       help="the run" + (" (repeat it for runs that differ only in seed: gaps over seeds)"
                                         if q is gp else ""))
        q.add_argument("--device", help="override the run's device (for a cache rebuild)")
        q.add_argument("--data-root", help="where the run's data lies on this machine, when a cache must be rebuilt")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "params":
            table = params_table(args.dataset)
            with to_stdout():
                print(table)
            return 0
        if args.cmd == "demo":
            from lt_kit.demo import demo
            with to_stdout():                # each seed's line as it finishes, then the table
                print(demo(args.run_dir, range(args.seeds), parse_sets(args.set), say=lambda s: print(s, flush=True)))
            return 0
        if args.cmd == "compare":
            from lt_kit.views.report import compare_command
            with to_stdout():        # it prints the table (or markdown / CSV) and what it wrote
                return compare_command(args)
        if args.cmd in ("shift", "calibration", "gap"):
            from lt_kit.views.analysis import analysis_command
            with to_stdout():
                return analysis_command(args)
        if args.cmd == "adapt":
            from lt_kit.views.adaptation import adaptation_command
            with to_stdout():
                return adaptation_command(args)
        from lt_kit.evaluation.summary import format_table
        from lt_kit.training.fit import fit
        from lt_kit.training.score import format_test, score_run
        if args.cmd == "train":
            try:
                params, overrides = train_params(args.params, args.set)
                if args.resume:         # a resumed run keeps its own parameters unless --set changes them
                    from lt_kit.runs.rundir import RunDir
                    params = resolve({**RunDir(args.run_dir).params(), **overrides})
            except LtKitError as e:     # the same on every torchrun process: rank 0 reports it
                raise on_every_rank(e) from None
            metrics = fit(params, args.run_dir, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
            if metrics.get("world_size", 1) > 1 and __import__("os").environ.get("RANK", "0") != "0":
                return 0
        else:
            sets = parse_sets(args.set)
            if sets and args.method not in ("crt", "lws"):
                raise LtKitError("--set goes with --method crt or lws (their settings); a post-hoc method takes "
                                 "--strength")
            result = score_run(args.run_dir, method=args.method, strength=args.strength, alpha=args.alpha,
                               checkpoint=args.checkpoint, device=args.device, overrides=sets,
                               data_root=args.data_root)
            with to_stdout():
                print(format_test(result))
                print(f"run dir: {args.run_dir} (appended to evaluations.jsonl; metrics.json is the run's own "
                      "result)")
            return 0
        with to_stdout():               # the run is written by now: a closed pipe only loses this table
            print(format_table(metrics))
            print(f"run dir: {args.run_dir}")
        return 0
    except ReaderGone:
        silence_stdout()
        return PIPE_CLOSED_STATUS
    except LtKitError as e:
        if env_rank() == 0 or not e.every_rank:          # one line, once (rank 0) when every rank has it
            print(f"error: {e}" if env_rank() == 0 else f"error (rank {env_rank()}): {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if env_rank() == 0:
            print(interrupted_message(args.run_dir) if args.cmd == "train" else "interrupted", file=sys.stderr)
        return 130
