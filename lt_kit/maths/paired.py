"""How far to trust a gap between two evaluations of one checkpoint on one test set: a paired bootstrap
interval (Efron, 1979; Efron & Tibshirani, 1993), McNemar's exact test (McNemar, 1947), and the gap over seeds.

Both evaluations score the same test images, so their difference is measured image by image: ``d_i =
correct_a[i] - correct_b[i]`` in {-1, 0, +1}, and the accuracy gap is ``mean(d)`` (on a balanced test set,
overall accuracy is the mean of per-image correctness, so this is also the gap in balanced accuracy).

- **Paired bootstrap**: resample the test images with replacement, the same images for both evaluations, and
  take the percentile interval of the resampled mean gaps. The mean of a resample depends only on how many of
  its n images have d = +1, 0, -1, which is one multinomial draw of n over the three observed proportions, so
  each resample is drawn as that (the same distribution as resampling n image indices, in O(1) per resample
  instead of O(n); ``tests/test_paired.py`` checks it against ``scipy.stats.bootstrap(paired=True)``).
- **McNemar's exact test**: only the discordant images tell the evaluations apart: b = right under a only, c =
  right under b only. Under "equal accuracy" each discordant image is a fair coin: two-sided
  ``binomtest(b, b + c, 0.5)``; p = 1 when there is no discordant image.
- **Over seeds**: each seed's own gap, their mean and sample sd, and whether the sign held in every seed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _correct(x) -> np.ndarray:
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    return a.astype(bool).ravel()


def _pair(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _correct(correct_a), _correct(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"paired evaluations must score the same images: {a.size} vs {b.size}")
    if a.size == 0:
        raise ValueError("a paired comparison needs at least one image")
    return a, b


def paired_bootstrap(correct_a, correct_b, *, confidence: float = 0.95, n_resamples: int = 10000,
                     seed: int = 0) -> dict:
    """The accuracy gap ``mean(correct_a) - mean(correct_b)`` over the same images, and its ``confidence``
    percentile interval from a paired bootstrap over the images (seeded): ``{"gap", "low", "high", "n",
    "confidence", "n_resamples"}``."""
    a, b = _pair(correct_a, correct_b)
    n = a.size
    up, down = int((a & ~b).sum()), int((~a & b).sum())
    shares = [up / n, down / n, max(0.0, 1 - (up + down) / n)]
    draws = np.random.default_rng(seed).multinomial(n, shares, size=n_resamples)
    gaps = (draws[:, 0] - draws[:, 1]) / n
    tail = (1 - confidence) / 2
    low, high = np.quantile(gaps, [tail, 1 - tail])
    return {"gap": (up - down) / n, "low": float(low), "high": float(high), "n": n, "confidence": confidence,
            "n_resamples": n_resamples}


def mcnemar_exact(correct_a, correct_b) -> dict:
    """McNemar's exact test on the discordant images: ``{"b": right under a only, "c": right under b only,
    "p": two-sided binomial p of b out of b + c at 1/2}``."""
    from scipy.stats import binomtest
    a, b = _pair(correct_a, correct_b)
    up, down = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if up + down == 0 else float(binomtest(up, up + down, 0.5).pvalue)
    return {"b": up, "c": down, "p": p}


def seed_gaps(gaps: Sequence[float]) -> dict:
    """A gap over a seed group: ``{"n", "mean", "sd" (sample sd; NaN for one seed), "gaps" (each seed's),
    "sign" (+1, -1 or 0: the mean's), "sign_holds" (every seed's gap has the mean's sign, none is 0)}``."""
    g = np.asarray([float(v) for v in gaps], dtype=np.float64)
    if g.size == 0:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "gaps": [], "sign": 0, "sign_holds": False}
    mean = float(g.mean())
    sign = int(np.sign(mean))
    return {"n": int(g.size), "mean": mean, "sd": float(g.std(ddof=1)) if g.size > 1 else math.nan,
            "gaps": g.tolist(), "sign": sign, "sign_holds": bool(sign != 0 and (np.sign(g) == sign).all())}
