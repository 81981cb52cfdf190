"""``python -m lt_kit train|test|params``: the reference's ``main.py --cfg ... [--test --model_dir ...]``."""
from __future__ import annotations

import argparse
import sys

from .cli_help import interrupted_message, params_table, train_params
from .config import resolve
from .errors import LtKitError, on_every_rank
from .guard import env_rank


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
    e = sub.add_parser("test", help="score a run dir with a post-hoc method at any strength (from its feature cache)")
    e.add_argument("--run-dir", required=True)
    e.add_argument("--method", help="post-hoc method: tde (causal_norm head), logit_adjust (any head), tau_norm "
                   "(linear head); default: tde on a causal_norm run, the head's own logits otherwise")
    e.add_argument("--strength", type=float, help="the method's strength (alpha or tau; default: its paper rule)")
    e.add_argument("--alpha", type=float, help="TDE strength: the same as --method tde --strength ALPHA")
    e.add_argument("--checkpoint", help="evaluate this checkpoint instead of the run's own")
    e.add_argument("--device", help="override the run's device")
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "params":
            print(params_table(args.dataset))
            return 0
        if args.cmd == "compare":
            from .compare import compare_command
            return compare_command(args)
        from .evaluate import format_table
        from .train import fit, test_run
        if args.cmd == "train":
            try:
                params, overrides = train_params(args.params, args.set)
                if args.resume:         # a resumed run keeps its own parameters unless --set changes them
                    from .runs import RunDir
                    params = resolve({**RunDir(args.run_dir).params(), **overrides})
            except LtKitError as e:     # the same on every torchrun process: rank 0 reports it
                raise on_every_rank(e) from None
            metrics = fit(params, args.run_dir, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
            if metrics.get("world_size", 1) > 1 and __import__("os").environ.get("RANK", "0") != "0":
                return 0
        else:
            from .train import format_test
            result = test_run(args.run_dir, method=args.method, strength=args.strength, alpha=args.alpha,
                              checkpoint=args.checkpoint, device=args.device)
            print(format_test(result))
            print(f"run dir: {args.run_dir} (appended to evaluations.jsonl; metrics.json is the run's own result)")
            return 0
        print(format_table(metrics))
        print(f"run dir: {args.run_dir}")
        return 0
    except LtKitError as e:
        if env_rank() == 0 or not e.every_rank:          # one line, once (rank 0) when every rank has it
            print(f"error: {e}" if env_rank() == 0 else f"error (rank {env_rank()}): {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if env_rank() == 0:
            print(interrupted_message(args.run_dir) if args.cmd == "train" else "interrupted", file=sys.stderr)
        return 130
