"""``python -m lt_kit adapt``: the test prior estimated from the unlabelled test images (EM, BBSE), every method
adapted to the estimate, on test sets sub-sampled to each prior (``evaluation/adaptation.py``), printed as text,
and its figure (accuracy against the prior: unadapted, EM, BBSE and oracle, one panel per adapted method)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from lt_kit.errors import LtKitError

# column -> (colour, line style, marker): unadapted grey, the estimators in colour, the oracle black dashed
_STYLE = {"unadapted": ("#8c8c8c", "-", "o"), "em": ("#1f77b4", "-", "s"), "bbse": ("#ff7f0e", "-.", "^"),
          "oracle": ("black", "--", "")}
_LEGEND = {"unadapted": "unadapted (rule, or val-chosen for a balanced test set)",
           "em": "EM estimate (calibrated on val)", "bbse": "BBSE estimate (val confusion matrix)",
           "oracle": "oracle: the drawn set's true prior"}


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
    ad.add_argument("--figure", metavar="PNG", help="also save the figure (accuracy against the prior: unadapted, "
                    "EM, BBSE, oracle, one panel per adapted method) to this file")


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
    if args.figure:
        from lt_kit.views.plots import save_figure
        print(f"figure: {save_figure(adaptation_figure(table), Path(args.figure))}")
    return 0


def adaptation_figure(table: dict) -> Figure:
    """Accuracy (mean over the draws, a band of ± 1 sd) against the test prior, tail-heavy to head-heavy, for each
    adapted method (``evaluation.adaptation.adaptation_table``'s ``adapted`` rows): unadapted, adapted to the EM
    and BBSE estimates, and to the true prior (oracle). Priors outside the protocol (``train``) are not drawn."""
    from lt_kit.views.plots import new_figure, protocol_priors
    order = [p for p in protocol_priors() if p in table["priors"]]
    rows = [r for r in table["rows"] if r["kind"] == "adapted"]
    if not rows or not order:
        raise LtKitError("nothing to draw: the table has no adapted method or no protocol prior")
    x = np.arange(len(order))
    fig, axes = new_figure(len(rows), width=3.6, height=3.4)
    for ax, r in zip(axes, rows):
        for col, (color, ls, marker) in _STYLE.items():
            mean = np.array([100 * r["cells"][p][col]["mean"] for p in order])
            sd = np.nan_to_num(np.array([100 * r["cells"][p][col]["sd"] for p in order]))
            ax.plot(x, mean, color=color, ls=ls, marker=marker, ms=4, lw=1.6, label=_LEGEND[col])
            ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.12, lw=0)
        ax.set_xticks(x, order, rotation=45, ha="right", fontsize=7)
        ax.set_title(r["name"], fontsize=9)
        ax.grid(alpha=0.3)
    lo = min(a.get_ylim()[0] for a in axes)
    hi = max(a.get_ylim()[1] for a in axes)
    for ax in axes:                        # one scale: the panels compare methods as well as columns
        ax.set_ylim(lo, min(hi, 100.0))
    axes[0].set_ylabel("accuracy % of the drawn test sets")
    d = table["draws"]
    fig.suptitle(f"when the test prior is unknown: adapted to its estimate ({d} draw{'s' * (d != 1)} per prior, "
                 "mean ± sd)", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncols=4)
    return fig
