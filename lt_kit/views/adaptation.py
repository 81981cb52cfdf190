"""``python -m lt_kit adapt``: the test prior estimated from the unlabelled test images (EM, BBSE), every method
adapted to the estimate, on test sets sub-sampled to each prior (``evaluation/adaptation.py``), printed as text."""
from __future__ import annotations

from lt_kit.errors import LtKitError


def add_adapt_parser(sub) -> None:
    """The ``adapt`` subcommand's arguments (registered by ``cli._parser``)."""
    from lt_kit.maths.draws import DEFAULT_DRAWS
    ad = sub.add_parser("adapt", help="estimate the test prior from the unlabelled test images (EM, BBSE), adapt "
                        "every method to it, on test sets sub-sampled to each prior: how close to knowing it")
    ad.add_argument("--run-dir", required=True, help="the run (it needs a validation split)")
    ad.add_argument("--prior", action="append", metavar="NAME", help="forward50..forward2, uniform, backward2.."
                    "backward50 (any forwardR / backwardR), train, or all; repeatable (default: forward50, "
                    "forward10, uniform, backward10, backward50)")
    ad.add_argument("--draws", type=int, default=DEFAULT_DRAWS,
                    help=f"sub-sampled test sets per prior (default {DEFAULT_DRAWS})")
    ad.add_argument("--seed", type=int, default=0, help="draw k is seeded SEED + k (default 0)")
    ad.add_argument("--device", help="override the run's device (for a cache rebuild)")
    ad.add_argument("--data-root", help="where the run's data lies on this machine, when a cache must be rebuilt")


def adaptation_command(args) -> int:
    """The ``adapt`` command: print the table; bad input raises ``LtKitError`` (one line), checked before the
    run's caches are read where it can be."""
    from lt_kit.evaluation.adaptation import NEEDS_VAL, adaptation_table, format_adaptation
    from lt_kit.evaluation.analysis import analyse
    from lt_kit.maths.shift import check_prior_name
    from lt_kit.training.score import run_caches
    for name in args.prior or ():
        if name != "all":
            check_prior_name(name)
    if args.draws < 1:
        raise LtKitError(f"--draws must be >= 1, got {args.draws}")
    if args.seed < 0:
        raise LtKitError(f"--seed must be >= 0, got {args.seed}")
    params, caches = run_caches(args.run_dir, device=args.device, data_root=args.data_root)
    if caches["val"] is None:
        raise LtKitError(NEEDS_VAL)
    table = adaptation_table(analyse(params, caches), args.prior, draws=args.draws, seed=args.seed)
    print(format_adaptation(table))
    return 0
