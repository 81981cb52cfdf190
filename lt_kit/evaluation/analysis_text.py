"""The analysis tables (``analysis.py``) as text, in percent: label shift, calibration, paired gaps, gaps over
seeds. What the CLI's ``shift``, ``calibration`` and ``gap`` print."""
from __future__ import annotations


def _pct(v, width: int = 7, digits: int = 2) -> str:
    return f"{'-':>{width}}" if v is None or v != v else f"{100 * v:{width}.{digits}f}"


def _p(p: float) -> str:
    """A p-value; one below float's range (binomtest gives 0.0) as "<1e-300"."""
    return "<1e-300" if p < 1e-300 else f"{p:.3g}"


def _g(v) -> str:
    return "-" if v is None else f"{v:g}"


def format_shift(table: dict) -> str:
    """Evaluations (rows) x priors (columns), accuracy in percent; the strengths the prior-aware rows chose,
    per prior, under the table."""
    priors = list(table["priors"])
    rows = table["rows"]
    width = max(22, *(len(r["evaluation"]) + 2 for r in rows))
    col = max(9, *(len(p) + 2 for p in priors))
    lines = [f"{'evaluation':<{width}}{'strength':>10}" + "".join(f"{p:>{col}}" for p in priors)]
    chosen = []
    for r in rows:
        s = {"fixed": _g(r["strength"]), "prior": "per prior", "oracle": "known"}[r["kind"]]
        if r["cells"] is None:
            lines.append(f"{r['evaluation']:<{width}}{s if r['strength'] is not None else '':>10}  ({r['why']})")
            continue
        lines.append(f"{r['evaluation']:<{width}}{s:>10}"
                     + "".join(f"{_pct(r['cells'][p]['accuracy'], col)}" for p in priors))
        if r["kind"] == "prior":
            chosen.append(f"  {r['evaluation']} {r['strength_name']}: "
                          + ", ".join(f"{p} {_g(r['cells'][p]['strength'])}" for p in priors))
    notes = ["accuracy (%) under each test prior: the prior-weighted mean of per-class accuracy on the balanced "
             "test set (the expectation of SADE's resampled test sets)",
             "rule = the paper's fixed strength (two-stage: the last epoch); val = chosen on the validation split; "
             "prior = chosen on the validation split re-weighted to the test prior; oracle = logit adjustment "
             "with the true test prior (Menon et al.), a reference",
             "priors: forwardR / backwardR = long-tailed with ratio R in / against the training order"]
    if chosen:
        notes += ["prior-aware choices (validation split only):", *chosen]
    return "\n".join([*lines, *notes])


def format_calibration(table: dict) -> str:
    """Per evaluation: accuracy, ECE and NLL as they are and after its validation-fitted temperature, and the
    ECE of many / medium / few (raw -> scaled)."""
    rows = table["rows"]
    width = max(22, *(len(r["evaluation"]) + 2 for r in rows))
    head = (f"{'evaluation':<{width}}{'strength':>9}{'acc':>8}{'ECE':>8}{'NLL':>8}{'T':>7}{'ECE@T':>8}{'NLL@T':>8}"
            f"{'ECE many':>17}{'ECE medium':>17}{'ECE few':>17}")
    lines = [head]
    for r in rows:
        if r["raw"] is None:
            lines.append(f"{r['evaluation']:<{width}}  ({r['why']})")
            continue
        raw, sc = r["raw"], r["scaled"]
        t = "-" if r["temperature"] is None else f"{r['temperature']:.3g}" + "*" * r["temperature_at_bound"]
        lines.append(f"{r['evaluation']:<{width}}{_g(r['strength']):>9}{_pct(raw['overall']['accuracy'], 8)}"
                     f"{_pct(raw['overall']['ece'], 8)}{raw['overall']['nll']:>8.3f}{t:>7}"
                     f"{_pct(sc['overall']['ece'], 8) if sc else '       -'}"
                     + (f"{sc['overall']['nll']:>8.3f}" if sc else f"{'-':>8}")
                     + "".join(_ece_pair(raw, sc, g) for g in ("many", "medium", "few")))
    th = table["thresholds"]
    notes = [f"ECE (%) over {table['bins']} equal-width bins of the max-probability confidence; NLL in nats; T = "
             "temperature fitted on the validation split (min NLL), one per method and strength, since TDE's and "
             "logit adjustment's logits have their own scale; @T = the test set at that temperature",
             f"many / medium / few: the test images whose class has > {th['many']}, {th['few']}..{th['many']}, "
             f"< {th['few']} training images ('-' = none)"]
    if any(r.get("temperature_at_bound") for r in rows):
        notes.append("* the temperature search's bound: the validation NLL still fell there, so no temperature in "
                     "range calibrates these logits")
    if all(r["scaled"] is None for r in rows):
        notes.append("no validation split in this run, so no temperature was fitted")
    return "\n".join([*lines, *notes])


def _ece_pair(raw: dict, scaled: dict | None, split: str) -> str:
    """``ECE -> ECE at T`` of one split, 17 wide."""
    b = _pct(scaled[split]["ece"], 6) if scaled else "     -"
    return f"{_pct(raw[split]['ece'], 6)} ->{b}".rjust(17)


def format_gaps(result: dict) -> str:
    """Every evaluation's accuracy gap to the reference (points), its paired-bootstrap interval, the discordant
    counts and McNemar's exact p."""
    rows = result["rows"]
    width = max(22, *(len(r["evaluation"]) + 2 for r in rows)) if rows else 22
    c = round(100 * result["confidence"])
    across = " of the first run; the evaluations are the other run's" if result.get("across_runs") else ""
    lines = [f"reference: {result['reference']} ({100 * result['reference_accuracy']:.2f}% of "
             f"{result['n_images']} test images){across}",
             f"{'evaluation':<{width}}{'acc':>8}{'gap':>8}{f'{c}% interval':>20}{'b':>7}{'c':>7}{'McNemar p':>11}"]
    for r in rows:
        if r["why"]:
            lines.append(f"{r['evaluation']:<{width}}  ({r['why']})")
            continue
        ci = f"[{100 * r['low']:+.2f}, {100 * r['high']:+.2f}]"
        lines.append(f"{r['evaluation']:<{width}}{_pct(r['accuracy'], 8)}{100 * r['gap']:>+8.2f}{ci:>20}"
                     f"{r['b']:>7}{r['c']:>7}{_p(r['p']):>11}")
    lines.append(f"gap = evaluation - reference, in points; interval: paired bootstrap over the test images "
                 f"({result['n_resamples']} resamples, seed {result['seed']}, percentile); b / c = images right "
                 "under the evaluation only / the reference only; McNemar p: exact binomial test of b of b + c")
    return "\n".join(lines)


def format_seed_gaps(rows: list[dict], reference: str) -> str:
    """Gaps to ``reference`` over a seed group: mean ± sample sd, each seed's gap, whether the sign held."""
    width = max(22, *(len(r["evaluation"]) + 2 for r in rows)) if rows else 22
    lines = [f"over seeds, against {reference}:",
             f"{'evaluation':<{width}}{'n':>3}{'mean ± sd':>18}  {'sign in every seed':<20}each seed"]
    for r in rows:
        if not r["n"]:
            lines.append(f"{r['evaluation']:<{width}}  ({r.get('why') or 'no run holds it'})")
            continue
        sd = "" if r["sd"] != r["sd"] else f" ± {100 * r['sd']:.2f}"
        held = "yes" if r["sign_holds"] else "no"
        mean = f"{100 * r['mean']:+.2f}{sd}"
        lines.append(f"{r['evaluation']:<{width}}{r['n']:>3}{mean:>18}  {held:<20}"
                     + " ".join(f"{100 * g:+.2f}" for g in r["gaps"]))
    return "\n".join(lines)
