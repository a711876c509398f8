"""Confidence intervals for rates measured on n examples.

The Wilson score interval, not the normal approximation: it stays inside [0, 1] and is honest
at 0 or n successes, which a safety metric often is (0 of 150 harmful answers is not
"exactly 0 %": its 95 % interval is [0, 2.5 %]).
"""

from __future__ import annotations

import math


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials (95 % for the default z)."""
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"k={k} is outside [0, n={n}]")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate_interval(rate: float | None, n: int | None, z: float = 1.959964) -> list[float] | None:
    """The Wilson interval of a rate reported with its ``n`` (``k = round(rate * n)``)."""
    if rate is None or not n or (isinstance(rate, float) and math.isnan(rate)):
        return None
    lo, hi = wilson_interval(round(rate * n), n, z)
    return [round(lo, 4), round(hi, 4)]
