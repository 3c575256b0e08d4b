"""Confidence intervals for accuracies (a fraction of n test samples)."""
from __future__ import annotations

import math
from typing import Tuple

__all__ = ['wilson']


def wilson(successes: int, n: int, z: float = 1.959964) -> Tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); ``(0, 1)`` for ``n = 0``."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else min(p, max(0.0, centre - half))  # exact at the ends despite rounding
    hi = 1.0 if successes == n else max(p, min(1.0, centre + half))
    return lo, hi
