"""``python -m lt_kit demo`` (``make demo``): a new user's first look, made so that its table is not a draw.

One run on the embedded digits is a draw: its long-tailed training split holds a few hundred images (the
smallest class a handful) and its test split 500, so the seed alone moves overall accuracy by several points
and can flip the sign of TDE's gain over De-confound. The demo trains the digits recipe once per seed, prints
each run's headline figures as it finishes, then every method's mean ± sample sd over the seeds (``lt_kit
compare``'s table) and the per-seed gains of TDE and of logit adjustment over De-confound, paired by seed:
a reader sees the spread beside the effect. The runs are ordinary run folders (``<run_dir>/seed<N>``); the
notebooks open any of them.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

DEMO_SEEDS = (0, 1, 2, 3, 4)
# The evaluations the demo prints: De-confound, TDE at its rule, the post-hoc peer at its rule, the decoupled
# classifiers at lt_kit's fixed rule (the digits demo has no validation split, so nothing is chosen on one).
SHOWN = ("softmax", "tde", "logit_adjust/rule", "crt/rule", "lws/rule")


def _pct(metrics: dict, *path: str) -> float:
    node = metrics
    for p in path:
        node = (node or {}).get(p) if isinstance(node, dict) else None
    return 100 * node if isinstance(node, (int, float)) else math.nan


def run_line(seed: int, metrics: dict, seconds: float) -> str:
    """One finished seed: De-confound, TDE and logit adjustment overall, and its wall time."""
    return (f"seed {seed}: De-confound {_pct(metrics, 'softmax', 'overall'):.1f}  "
            f"TDE {_pct(metrics, 'tde', 'overall'):.1f}  "
            f"logit adj. {_pct(metrics, 'methods', 'logit_adjust', 'rule', 'metrics', 'overall'):.1f}  "
            f"({seconds:.0f} s)")


def paired_gains(per_seed: dict[int, dict]) -> list[str]:
    """TDE − De-confound and logit adjustment − De-confound, overall, seed by seed, with their mean and sd."""
    from lt_kit.runs.compare import mean_std
    out = []
    for name, path in (("TDE", ("tde", "overall")),
                       ("logit adj.", ("methods", "logit_adjust", "rule", "metrics", "overall"))):
        gains = {s: _pct(m, *path) - _pct(m, "softmax", "overall") for s, m in sorted(per_seed.items())}
        n, mean, sd = mean_std(gains.values())
        if not n:
            continue
        spread = f" ± {sd:.1f} (sd)" if n > 1 else ""
        out.append(f"{name} − De-confound, overall, per seed: "
                   + ", ".join(f"{g:+.1f}" for g in gains.values())
                   + f"; mean {mean:+.1f}{spread}; ahead in {sum(g > 0 for g in gains.values())} of {n} seeds")
    return out


def demo(run_dir: str | Path = "runs/demo", seeds: Sequence[int] = DEMO_SEEDS, overrides: dict | None = None,
         say: Callable[[str], None] = print) -> str:
    """Train the embedded digits recipe (``overrides`` on top) once per seed into ``run_dir/seed<N>`` (an
    earlier demo's folder is moved aside, never deleted), then return the mean ± sd table and the paired gains."""
    from lt_kit.config import resolve
    from lt_kit.training.fit import fit
    from lt_kit.views.report import compare_runs
    if not seeds:
        from lt_kit.errors import LtKitError
        raise LtKitError("the demo needs at least one seed (two or more for a standard deviation)")
    run_dir, per_seed = Path(run_dir), {}
    say(f"training the embedded digits recipe on {len(seeds)} seed(s) into {run_dir}/seed<N> ...")
    for s in seeds:
        params = resolve({"dataset": "digits_lt", **(overrides or {}), "seed": s}, " (demo)")
        t0 = time.perf_counter()
        per_seed[s] = fit(params, run_dir / f"seed{s}", overwrite=True, progress=False)
        say(run_line(s, per_seed[s], time.perf_counter() - t0))
    comp = compare_runs([str(run_dir / f"seed{s}") for s in seeds])
    shown = [e for e in SHOWN if e in comp.groups[0].evaluations()]
    table = [line for line in comp.text(shown).splitlines() if not line.startswith("not told apart")]  # all alike
    return "\n".join([*table, *paired_gains(per_seed)])
