"""The one check of every method's strength: a finite number (alpha, tau), at least its minimum.

TDE's alpha may be any finite number (negative alphas add the direction's effect, which the explorer shows);
post-hoc temperatures and exponents are >= 0.
"""
from __future__ import annotations

import math


def check_strength(name: str, value: float, minimum: float = 0.0) -> float:
    """``value`` as a float, or ``ValueError`` when it is not a finite number >= ``minimum``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number, got {value!r}") from None
    if not math.isfinite(v) or v < minimum:
        bound = f" >= {minimum:g}" if math.isfinite(minimum) else ""
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return v


def check_alpha(alpha: float) -> float:
    """TDE's alpha as a float; ``ValueError`` if it is not a finite number (any sign)."""
    return check_strength("alpha", alpha, minimum=-math.inf)
