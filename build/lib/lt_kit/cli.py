"""``python -m lt_kit train|test|params``: the reference's ``main.py --cfg ... [--test --model_dir ...]``."""
from __future__ import annotations

import argparse
import sys

from .config import PARAMS, load_params_file, parse_sets, resolve
from .errors import LtKitError


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
    e = sub.add_parser("test", help="evaluate a run dir at any alpha (from the feature cache when present)")
    e.add_argument("--run-dir", required=True)
    e.add_argument("--alpha", type=float, help="TDE strength (default: the run's alpha)")
    e.add_argument("--checkpoint", help="evaluate this checkpoint instead of the run's own")
    e.add_argument("--device", help="override the run's device")
    sub.add_parser("params", help="list every parameter with its default and help")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "params":
            for k, (default, typ, help_) in PARAMS.items():
                print(f"{k:<16} {typ.__name__:<6} {default!r:<22} {help_}")
            return 0
        from .evaluate import format_table
        from .train import fit, test_run
        if args.cmd == "train":
            overrides = load_params_file(args.params) if args.params else {}
            overrides.update(parse_sets(args.set))
            params = resolve(overrides, f" in {args.params}" if args.params else "")
            if args.resume:             # a resumed run keeps its own parameters unless --set changes them
                from .runs import RunDir
                params = resolve({**RunDir(args.run_dir).params(), **overrides})
            metrics = fit(params, args.run_dir, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
            if metrics.get("world_size", 1) > 1 and __import__("os").environ.get("RANK", "0") != "0":
                return 0
        else:
            metrics = test_run(args.run_dir, alpha=args.alpha, checkpoint=args.checkpoint, device=args.device)
        print(format_table(metrics))
        print(f"run dir: {args.run_dir}")
        return 0
    except LtKitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last complete epoch is in checkpoint.pt (resume with --resume)", file=sys.stderr)
        return 130
