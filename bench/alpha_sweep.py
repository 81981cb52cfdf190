"""Accuracy against alpha for finished runs, from their feature caches (no backbone pass).

    python bench/alpha_sweep.py bench/out/accuracy/cifar10_lt_r100_causal_norm_s0_e45 [--out FILE.md]

Prints a markdown table per run: overall, many, medium, few and the median head/tail split at each alpha,
plus the reference's rule-of-thumb alpha (from the validation features when the run has them, else from the
test features, labelled "for reading"). Choosing alpha from this table is choosing it on the test set: the
preset alpha is the honest number, the sweep shows the trade-off.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lt_kit.evaluation.summary import AlphaEvaluator, FeatureCache  # noqa: E402
from lt_kit.maths.tde import rule_of_thumb_alpha  # noqa: E402
from lt_kit.runs.rundir import RunDir  # noqa: E402

ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0]


def sweep_markdown(run_dir: Path, alphas=ALPHAS) -> str:
    cache = FeatureCache.load(run_dir / "features.pt")
    ev, preset = AlphaEvaluator(cache), RunDir(run_dir).params()["alpha"]
    has_val = (run_dir / "val_features.pt").is_file()
    src = FeatureCache.load(run_dir / "val_features.pt") if has_val else cache
    where = "on the validation features" if has_val else "on the test features, for reading"
    pct = lambda v: "–" if v != v else f"{100 * v:.1f}"  # noqa: E731
    lines = [f"### {run_dir.name}", "",
             f"Preset alpha {preset:g}; rule-of-thumb alpha (mean alpha*cos(x, d) = 1) {where}: "
             f"{rule_of_thumb_alpha(src.features, src.direction, src.num_heads):.2f}. "
             "head/tail: classes above / at or below the median training count.", "",
             "| alpha | overall | many | medium | few | head | tail |", "|---|---|---|---|---|---|---|"]
    for a in sorted(set(alphas) | {preset}):
        m = ev.metrics(a)
        lines.append(f"| {a:g}{' (preset)' if a == preset else ''} | {pct(m['overall'])} | {pct(m['many'])} | "
                     f"{pct(m['medium'])} | {pct(m['few'])} | {pct(m['head_tail']['head'])} | "
                     f"{pct(m['head_tail']['tail'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = ap.parse_args()
    text = "\n".join(sweep_markdown(r) for r in args.run_dirs)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
