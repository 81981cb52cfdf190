"""``python -m lt_kit shift | calibration | gap``: a run's accuracy under label shift, its calibration, and the
paired gaps between its evaluations (``evaluation/analysis.py``), printed as text. ``gap`` given several run
dirs of one configuration (differing only in seed) adds each evaluation's gap over the seeds."""
from __future__ import annotations

from lt_kit.errors import LtKitError


def parse_weights(text: str) -> list[float]:
    """``--weights 1,2,3`` as floats; an ``LtKitError`` for anything that is not a comma-separated number list
    (their count and sign are checked against the run: ``maths.shift.weights_prior``)."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise LtKitError(f"--weights must be comma-separated numbers (one per class), got {text!r}") from None


def analysis_command(args) -> int:
    """The ``shift``, ``calibration`` and ``gap`` commands: print the table; bad input raises ``LtKitError``."""
    from lt_kit.evaluation.analysis import calibration_table, paired_gaps, seed_gap_table, shift_table
    from lt_kit.evaluation.analysis_text import format_calibration, format_gaps, format_seed_gaps, format_shift
    from lt_kit.maths.shift import check_prior_name
    from lt_kit.training.score import run_analysis
    where = {"device": args.device, "data_root": args.data_root}
    if args.cmd == "shift":
        for name in args.prior or ():             # a misspelt name is refused before the run is read
            if name != "all":
                check_prior_name(name)
        weights = parse_weights(args.weights) if args.weights else None
        print(format_shift(shift_table(run_analysis(args.run_dir, **where), args.prior, weights)))
    elif args.cmd == "calibration":
        print(format_calibration(calibration_table(run_analysis(args.run_dir, **where))))
    else:
        run_dirs = list(dict.fromkeys(args.run_dir))
        if len(run_dirs) > 1:
            check_one_group(run_dirs)
        results = []
        for run_dir in run_dirs:
            results.append(paired_gaps(run_analysis(run_dir, **where), args.against, seed=args.seed,
                                       n_resamples=args.resamples))
            print(f"run dir: {run_dir}")
            print(format_gaps(results[-1]))
        if len(results) > 1:
            print(format_seed_gaps(seed_gap_table(results), args.against))
    return 0


def check_one_group(run_dirs: list[str]) -> None:
    """Refuse run dirs that compare would not group together (they differ in more than the seed)."""
    from lt_kit.runs.compare import group_key, read_run
    runs = [read_run(d) for d in run_dirs]          # NotComparable (an LtKitError) says why a folder is not a run
    first = group_key(runs[0])
    other = next((r for r in runs[1:] if group_key(r) != first), None)
    if other is not None:
        raise LtKitError(f"gaps over seeds need runs that differ only in seed: {run_dirs[0]} and {other.path} "
                         "differ in more (`python -m lt_kit compare` shows how)")
    seeds = [r.seed for r in runs]
    if len(set(seeds)) < len(seeds):
        raise LtKitError(f"gaps over seeds need one run per seed; seeds given: {', '.join(map(str, seeds))}")
